#!/usr/bin/env bash
# Switchboard as a three-node cluster through one Redis, next to a single node, same loads in the
# same run (loopback).
#
#   bench/cluster.sh            3 repetitions, 10 s measured per load (about 4 minutes)
#   bench/cluster.sh --quick    1 repetition, 3 s per load (about 1 minute)
#   bench/cluster.sh --reps 5   more repetitions
#
# Prints the machine, then a table of medians: deliveries/s, latency, loss, order, the Redis
# messages per broadcast (from INFO), and the CPU time per delivery of the nodes and of Redis.
# Every run's raw output is kept under target/bench-cluster/<time>/. See bench/README.md.
set -euo pipefail

cd "$(dirname "$0")/.."

QUICK=0
REPS=3
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --reps)
        REPS="$2"
        shift
        ;;
    -h | --help)
        sed -n '2,11p' "$0"
        exit 0
        ;;
    *)
        echo "cluster.sh: unknown argument $1" >&2
        exit 2
        ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    [ "$REPS" = 3 ] && REPS=1
    DUR=3 WARM=1
else
    DUR=10 WARM=2
fi
K=1000
SIZE=64

# ---------------------------------------------------------------- machine and tools
echo "== machine"
echo "nproc: $(nproc)"
echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "kernel: $(uname -r)"
echo "client, nodes and Redis share these cores; all traffic is loopback (127.0.0.1)"

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "installing redis-server"
    if [ "$(id -u)" = 0 ]; then
        timeout 300 apt-get install -y redis-server >/dev/null ||
            { timeout 300 apt-get update >/dev/null && timeout 300 apt-get install -y redis-server >/dev/null; }
    else
        timeout 300 sudo apt-get install -y redis-server >/dev/null
    fi
fi

echo "== building (release)"
cargo build --release -p switchboard -p switchboard-bench 2>&1 | tail -1
LOAD=target/release/switchboard-load
SWITCHBOARD=target/release/switchboard
CLK_TCK=$(getconf CLK_TCK)

OUT="target/bench-cluster/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/runs"
RESULTS="$OUT/results.tsv"
: >"$RESULTS"
PROBLEMS="$OUT/problems.txt"
: >"$PROBLEMS"
TMP=$(mktemp -d)

# ---------------------------------------------------------------- processes
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1,000 subscribers on one node need more than the default 1,024 descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

rcli() { timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

REDIS_PORT=$($LOAD free-port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" \
    --daemonize no >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
for _ in $(seq 100); do
    [ "$(rcli ping 2>/dev/null)" = PONG ] && break
    sleep 0.1
done
[ "$(rcli ping 2>/dev/null)" = PONG ] || { echo "cluster.sh: redis-server does not answer" >&2; exit 1; }

wait_ready() { # port: until /readyz answers 200 (a node with a broker: once it has connected)
    local i
    for i in $(seq 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1/readyz")" = 200 ] && return 0
        sleep 0.1
    done
    echo "cluster.sh: 127.0.0.1:$1 is not ready" >&2
    return 1
}

start_node() { # name [switchboard options...] -> NODE_PORT, NODE_PID
    local name=$1
    shift
    NODE_PORT=$($LOAD free-port)
    "$SWITCHBOARD" --bind "127.0.0.1:$NODE_PORT" --static-dir static --log-level warn "$@" \
        >>"$OUT/$name.log" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    wait_ready "$NODE_PORT"
}

NODE_PORTS=()
NODE_PIDS=()
for i in 1 2 3; do
    start_node "node$i" --broker "redis://127.0.0.1:$REDIS_PORT" --node-id "node$i"
    NODE_PORTS+=("$NODE_PORT")
    NODE_PIDS+=("$NODE_PID")
done
start_node single
SINGLE_PORT=$NODE_PORT
SINGLE_PID=$NODE_PID

echo "== processes"
echo "redis: pid $REDIS_PID on 127.0.0.1:$REDIS_PORT ($(redis-server --version | awk '{print $3}'), --save \"\" --appendonly no)"
for i in 0 1 2; do
    echo "node$((i + 1)): pid ${NODE_PIDS[$i]} on 127.0.0.1:${NODE_PORTS[$i]} (--broker redis://127.0.0.1:$REDIS_PORT --node-id node$((i + 1)) --log-level warn)"
done
echo "single: pid $SINGLE_PID on 127.0.0.1:$SINGLE_PORT (no broker, --log-level warn)"
echo "every server: release build, default workers (one per core)"
echo "raw output: $OUT"

# ---------------------------------------------------------------- measuring
cpu_ticks() { # pid -> utime + stime in clock ticks (fields 14 and 15 of /proc/PID/stat)
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

json_get() { # json key -> value, empty when absent or null
    sed -n "s/.*\"$2\":\([-0-9.eE+]*\)[,}].*/\1/p" <<<"$1" | head -1
}

json_array() { # json key -> the array's items, one per line
    sed -n "s/.*\"$2\":\[\([^]]*\)\].*/\1/p" <<<"$1" | tr ',' '\n'
}

record() { # load metric value
    [ -n "$3" ] && printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"
    return 0
}

per_unit_us() { # ticks count -> microseconds of CPU per unit
    awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.3f", t / hz * 1e6 / n }'
}

redis_info() { # section field -> value (from INFO SECTION; "calls=N" for command stats)
    rcli info "$1" | tr -d '\r' | awk -F: -v f="$2" '$1 == f { print $2 }' |
        sed 's/^calls=\([0-9]*\).*/\1/'
}

node_ticks() { # utime + stime of node1, node2, node3 (one line)
    local pid
    for pid in "${NODE_PIDS[@]}"; do printf '%s ' "$(cpu_ticks "$pid")"; done
    echo
}

ticks_s() { # ticks -> seconds
    awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }'
}

# run_load LOAD TARGET REP -- client arguments. TARGET is cluster or single.
run_load() {
    local load=$1 target=$2 rep=$3
    shift 4
    local log="$OUT/runs/$load.$rep.txt" mirror="cb-$load-$rep-$$" urls channel
    local pid t0 t1 r0 r1 pub0 pub1 out0 out1 numsub=0 n json client
    if [ "$target" = cluster ]; then
        urls="ws://127.0.0.1:${NODE_PORTS[0]}/,ws://127.0.0.1:${NODE_PORTS[1]}/,ws://127.0.0.1:${NODE_PORTS[2]}/"
        set -- "$@" --url "ws://127.0.0.1:${NODE_PORTS[0]}/" --subscriber-urls "$urls"
        for pid in "${NODE_PIDS[@]}" "$REDIS_PID"; do
            kill -0 "$pid" 2>/dev/null || { echo "cluster.sh: pid $pid is not running" >&2; exit 1; }
        done
        t0=$(node_ticks)
        r0=$(cpu_ticks "$REDIS_PID")
        pub0=$(redis_info commandstats cmdstat_publish)
        out0=$(redis_info stats total_net_output_bytes)
    else
        set -- "$@" --url "ws://127.0.0.1:$SINGLE_PORT/"
        kill -0 "$SINGLE_PID" 2>/dev/null || { echo "cluster.sh: single (pid $SINGLE_PID) is not running" >&2; exit 1; }
        t0=$(cpu_ticks "$SINGLE_PID")
    fi
    timeout 180 "$LOAD" "$@" --mirror "$mirror" >"$log" 2>&1 &
    client=$!
    # While the client runs: how many Redis subscriptions the instance's channel has (the nodes
    # with members), and each node's broker.channels in /status.
    channel="sb:g:lws-mirror-protocol:$mirror"
    while kill -0 "$client" 2>/dev/null; do
        if [ "$target" = cluster ]; then
            n=$(rcli pubsub numsub "$channel" 2>/dev/null | tail -1)
            [ "${n:-0}" -gt "$numsub" ] 2>/dev/null && {
                numsub=$n
                for i in 0 1 2; do
                    curl -s --max-time 1 "http://127.0.0.1:${NODE_PORTS[$i]}/status" >"$OUT/runs/$load.$rep.status.node$((i + 1)).json" || true
                done
            }
        fi
        sleep 0.5
    done
    wait "$client" || echo "exit status $? of: $LOAD $*" >>"$log"
    json=$(grep '^{' "$log" | tail -1 || true)
    if [ -z "$json" ]; then
        echo "$load rep $rep: no result ($(tail -1 "$log"))" >>"$PROBLEMS"
        return 0
    fi
    local rt po all
    rt=$(json_get "$json" received_total)
    po=$(json_get "$json" publisher_own_copies)
    all=$((${rt:-0} + ${po:-0}))
    for k in deliveries_per_s published_per_s p50_ms p99_ms p999_ms loss order_violations gaps \
        ready_ms client_cpu_s; do
        record "$load" "$k" "$(json_get "$json" "$k")"
    done
    if [ "$target" = cluster ]; then
        t1=$(node_ticks)
        r1=$(cpu_ticks "$REDIS_PID")
        local a b i=0 nodes=0
        read -r -a a <<<"$t0"
        read -r -a b <<<"$t1"
        for i in 0 1 2; do
            nodes=$((nodes + b[i] - a[i]))
            record "$load" "cpu_s_node$((i + 1))" "$(ticks_s $((b[i] - a[i])))"
        done
        record "$load" cpu_s_redis "$(ticks_s $((r1 - r0)))"
        pub1=$(redis_info commandstats cmdstat_publish)
        out1=$(redis_info stats total_net_output_bytes)
        # Broadcasts the client made: data records (warm-up included) and readiness records.
        local bcasts publishes msg_bytes
        bcasts=$(($(json_get "$json" published_total) + $(json_get "$json" ready_records_sent)))
        publishes=$((${pub1:-0} - ${pub0:-0}))
        # One message pushed to a subscribed node: *3 $7 message $<channel> $<payload>, where the
        # payload is the origin (length byte + "node1"), a kind byte and the record.
        msg_bytes=$(awk -v c="${#channel}" -v p=$((1 + 5 + 1 + SIZE)) 'BEGIN {
            printf "%d", 4 + 4 + 9 + (1 + length(c "") + 2) + c + 2 + (1 + length(p "") + 2) + p + 2 }')
        record "$load" publish_per_bcast "$(awk -v a="$publishes" -v b="$bcasts" 'BEGIN { if (b > 0) printf "%.4f", a / b }')"
        # Redis INFO counts no pub/sub deliveries; computed from its output bytes, less the
        # 4-byte reply (":3\r\n") to each PUBLISH. Other replies (INFO, probes) add a little.
        record "$load" redis_msgs_per_bcast "$(awk -v o=$((out1 - out0)) -v p="$publishes" -v m="$msg_bytes" -v b="$bcasts" \
            'BEGIN { if (b > 0) printf "%.3f", (o - 4 * p) / m / b }')"
        record "$load" redis_out_bytes_per_bcast "$(awk -v o=$((out1 - out0)) -v b="$bcasts" 'BEGIN { if (b > 0) printf "%.1f", o / b }')"
        record "$load" channel_subscribers "$numsub"
        record "$load" cpu_us_nodes "$(per_unit_us "$nodes" "$all")"
        record "$load" cpu_us_redis "$(per_unit_us $((r1 - r0)) "$all")"
        record "$load" redis_cpu_us_per_bcast "$(per_unit_us $((r1 - r0)) "$bcasts")"
        local v
        i=0
        while read -r v; do
            i=$((i + 1))
            record "$load" "p50_ms_node$i" "$v"
        done < <(json_array "$json" server_p50_ms)
        i=0
        while read -r v; do
            i=$((i + 1))
            record "$load" "p99_ms_node$i" "$v"
        done < <(json_array "$json" server_p99_ms)
        i=0
        while read -r v; do
            i=$((i + 1))
            record "$load" "loss_node$i" "$v"
        done < <(json_array "$json" server_loss)
    else
        t1=$(cpu_ticks "$SINGLE_PID")
        record "$load" cpu_us_nodes "$(per_unit_us $((t1 - t0)) "$all")"
        record "$load" cpu_s_node1 "$(ticks_s $((t1 - t0)))"
    fi
    local v
    for k in loss order_violations gaps malformed wrong_size failed_subscribers; do
        v=$(json_get "$json" "$k")
        [ "${v:-0}" != 0 ] && echo "$load rep $rep: $k = $v" >>"$PROBLEMS"
    done
    if grep -q '"first_error":"' <<<"$json"; then
        echo "$load rep $rep: $(sed -n 's/.*"first_error":\("[^"]*"\).*/\1/p' <<<"$json")" >>"$PROBLEMS"
    fi
    return 0
}

COMMON=(--duration "$DUR" --warmup "$WARM" --drain 2 --drain-max 30 -k "$K" -p 1 --size "$SIZE" --max-lag 1000)
echo "== runs ($REPS repetition(s); ${DUR} s measured after ${WARM} s warm-up per load)"
for rep in $(seq "$REPS"); do
    for load in cl-rate single-rate cl-max single-max; do
        printf '  %s rep %s\n' "$load" "$rep"
        case "$load" in
        cl-rate) run_load "$load" cluster "$rep" -- broadcast "${COMMON[@]}" --rate 1000 ;;
        single-rate) run_load "$load" single "$rep" -- broadcast "${COMMON[@]}" --rate 1000 ;;
        cl-max) run_load "$load" cluster "$rep" -- broadcast "${COMMON[@]}" ;;
        single-max) run_load "$load" single "$rep" -- broadcast "${COMMON[@]}" ;;
        esac
        sleep 1
    done
done
for i in 1 2 3; do
    curl -s --max-time 1 "http://127.0.0.1:${NODE_PORTS[$((i - 1))]}/status" >"$OUT/status.node$i.json" || true
done

# ---------------------------------------------------------------- table
median() { # load metric -> median over the repetitions, or -
    awk -F'\t' -v l="$1" -v m="$2" '$1 == l && $2 == m { print $3 }' "$RESULTS" |
        sort -g | awk '{ v[NR] = $1 } END {
            if (NR == 0) { print "-"; exit }
            if (NR % 2) x = v[(NR + 1) / 2]; else x = (v[NR / 2] + v[NR / 2 + 1]) / 2
            if (x == int(x) && (x > 100 || x < -100 || x == 0)) printf "%d\n", x
            else if (x >= 100 || x <= -100) printf "%.0f\n", x
            else printf "%.4g\n", x
        }'
}

row() { # metric label
    printf '%-44s %12s %12s %12s %12s\n' "$2" "$(median cl-rate "$1")" "$(median single-rate "$1")" \
        "$(median cl-max "$1")" "$(median single-max "$1")"
}

echo
echo "== results: medians of $REPS run(s); $K subscribers, 1 publisher, $SIZE B"
echo "   cluster: subscribers round-robin over node1..3, the publisher on node1"
printf '%-44s %12s %12s %12s %12s\n' figure "cluster" "single" "cluster" "single"
printf '%-44s %12s %12s %12s %12s\n' "" "1000 msg/s" "1000 msg/s" "max speed" "max speed"
row deliveries_per_s "deliveries/s (to subscribers)"
row published_per_s "published/s"
row p50_ms "latency p50 (ms)"
row p99_ms "latency p99 (ms)"
row p999_ms "latency p99.9 (ms)"
row p50_ms_node1 "  p50, subscribers on node1 (publisher's)"
row p50_ms_node2 "  p50, subscribers on node2"
row p50_ms_node3 "  p50, subscribers on node3"
row p99_ms_node1 "  p99, subscribers on node1 (publisher's)"
row p99_ms_node2 "  p99, subscribers on node2"
row p99_ms_node3 "  p99, subscribers on node3"
row loss "loss (messages)"
row loss_node1 "  loss, subscribers on node1"
row loss_node2 "  loss, subscribers on node2"
row loss_node3 "  loss, subscribers on node3"
row order_violations "order violations"
row gaps "sequence gaps"
row ready_ms "ready after (ms)"
row publish_per_bcast "Redis PUBLISH per broadcast"
row redis_msgs_per_bcast "messages Redis delivered per broadcast"
row redis_out_bytes_per_bcast "Redis output bytes per broadcast"
row channel_subscribers "nodes subscribed to the channel (NUMSUB)"
row cpu_us_nodes "server CPU per delivery (us; nodes summed)"
row cpu_us_redis "redis-server CPU per delivery (us)"
row redis_cpu_us_per_bcast "redis-server CPU per broadcast (us)"
row cpu_s_node1 "CPU s, node1 (single: the node)"
row cpu_s_node2 "CPU s, node2"
row cpu_s_node3 "CPU s, node3"
row cpu_s_redis "CPU s, redis-server"
row client_cpu_s "CPU s, load client"
echo
echo "loss: messages sent after the warm-up that a subscriber had not received when the drain ended"
echo "      (2 s without any message, at most 30 s), summed over subscribers. It should be 0."
echo "Measuring starts only once every subscriber has received a readiness record (\"ready after\"),"
echo "so every node's subscription is active before the warm-up begins."
echo "Redis PUBLISH per broadcast: cmdstat_publish calls (INFO commandstats) during the run, divided"
echo "      by the broadcasts the client made (warm-up and readiness records included); each node's"
echo "      subscription probe adds one PUBLISH per --broker-check-interval (5 s)."
echo "messages Redis delivered per broadcast: INFO has no pub/sub delivery counter, so this is"
echo "      (total_net_output_bytes - 4 B per PUBLISH reply) / bytes of one pushed message / broadcasts."
echo "      The publishing node is subscribed too (its publisher is a member) and gets its own back."
echo "server CPU per delivery: utime+stime (/proc/PID/stat, CLK_TCK=$CLK_TCK) over the whole run, divided"
echo "      by every message the client received (subscribers + the publisher's own copies)."
echo "The machine is shared: client, nodes and Redis compete for the same cores."
echo
if [ -s "$PROBLEMS" ]; then
    echo "== anomalies seen (per run)"
    cat "$PROBLEMS"
else
    echo "no anomalies: loss 0, no order violations, gaps, malformed records, failed subscribers or errors"
fi
echo
echo "raw output of every run: $OUT"
