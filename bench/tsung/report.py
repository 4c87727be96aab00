#!/usr/bin/env python3
"""Helpers of bench/tsung/run.sh (standard library only).

    report.py ready URL...                      wait (up to 60 s) until every URL/readyz is 200
    report.py snapshot URL... > FILE            the summed /status counters of the nodes, as JSON
    report.py report TSUNG_LOG BEFORE AFTER     print the figures; exit 1 if Tsung saw errors
"""

import json
import sys
import time
import urllib.request


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except OSError:
        return 0, b""


def ready(urls):
    deadline = time.monotonic() + 60
    for url in urls:
        while get(url + "/readyz")[0] != 200:
            if time.monotonic() > deadline:
                sys.exit(f"tsung run: {url} is not ready after 60 s")
            time.sleep(0.1)


def snapshot(urls):
    total = {"time": time.time(), "sent": 0, "received": 0, "opened": 0, "nodes": {}}
    for url in urls:
        status, body = get(url + "/status")
        if status != 200:
            sys.exit(f"tsung run: {url}/status answered {status}")
        state = json.loads(body)
        total["sent"] += state["messages"]["sent"]
        total["received"] += state["messages"]["received"]
        total["opened"] += state["connections"]["opened"]
        total["nodes"][url] = state.get("node_id")
    json.dump(total, sys.stdout)


def parse_tsung_log(path):
    """The last value of each statistic in tsung.log: name -> list of numbers.

    Counters are `stats: NAME COUNT TOTAL` (TOTAL includes this interval's COUNT); samples are
    `stats: NAME COUNT MEAN STDDEV MAX MIN GLOBAL_MEAN GLOBAL_COUNT` (MEAN and COUNT of this
    interval, GLOBAL_* of all the intervals before it, MAX and MIN of the whole run, times in
    ms); `users` is `stats: users CURRENT MAX`.
    """
    last = {}
    with open(path) as log:
        for line in log:
            if not line.startswith("stats: "):
                continue
            fields = line.split()[1:]
            name, values = fields[0], fields[1:]
            try:
                last[name] = [float(v) for v in values]
            except ValueError:
                continue
    return last


def report(log_path, before_path, after_path):
    stats = parse_tsung_log(log_path)
    with open(before_path) as f:
        before = json.load(f)
    with open(after_path) as f:
        after = json.load(f)
    seconds = after["time"] - before["time"]
    sent = after["sent"] - before["sent"]
    received = after["received"] - before["received"]

    def sample(name):
        values = stats.get(name)
        if not values or len(values) < 7:
            return None
        count, mean, _, high, _, global_mean, global_count = values[:7]
        total = count + global_count
        if not total:
            return {"count": 0, "mean": 0.0, "max": 0.0}
        return {
            "count": int(total),
            "mean": (mean * count + global_mean * global_count) / total,
            "max": high,
        }

    def counter(name):
        values = stats.get(name)
        return int(values[-1]) if values else 0

    errors = {name: counter(name) for name in stats if name.startswith("error")}
    errors = {name: n for name, n in errors.items() if n}
    connect, request, session = sample("connect"), sample("request"), sample("session")
    print(f"tsung: {counter('websocket_succ')} WebSocket handshakes "
          f"({counter('websocket_fail')} failed), at most {int(stats.get('users', [0, 0])[-1])} "
          f"users at once, {session['count'] if session else 0} sessions finished "
          f"(mean {session['mean'] / 1000 if session else 0:.1f} s)")
    if connect:
        print(f"tsung: connect {connect['count']}, mean {connect['mean']:.2f} ms, "
              f"max {connect['max']:.2f} ms")
    if request:
        print(f"tsung: requests (connect, join, say, leave) {request['count']}, "
              f"{request['count'] / seconds:.0f}/s, response mean {request['mean']:.2f} ms, "
              f"max {request['max']:.2f} ms")
    print(f"tsung: bytes received {counter('size_rcv')}, sent {counter('size_sent')}")
    print(f"servers: {received} messages received, {sent} sent in {seconds:.1f} s: "
          f"{received / seconds:.0f} in/s, {sent / seconds:.0f} out/s "
          f"(nodes {', '.join(str(n) for n in after['nodes'].values())})")
    problems = []
    if errors:
        problems.append(f"Tsung reported errors: {errors}")
    if counter("websocket_fail"):
        problems.append(f"{counter('websocket_fail')} WebSocket handshakes failed")
    if not counter("websocket_succ"):
        problems.append("no WebSocket handshake succeeded")
    if not request or request["count"] == 0:
        problems.append("no request was answered")
    for problem in problems:
        print(f"tsung: FAIL: {problem}")
    print(f"tsung: {0 if problems else 1} passed, {1 if problems else 0} failed")
    return 1 if problems else 0


def main():
    what, args = sys.argv[1], sys.argv[2:]
    if what == "ready":
        ready(args)
    elif what == "snapshot":
        snapshot(args)
    elif what == "report":
        sys.exit(report(*args))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
