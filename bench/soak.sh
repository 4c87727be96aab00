#!/usr/bin/env bash
# Soak: mixed load against a release build for SOAK_SECONDS (default 600), sampling the server
# every SOAK_SAMPLE_SECONDS (default 10) into a CSV: its RSS, open file descriptors, WebSocket
# sessions, the load client's operations and errors, and the server's 5xx responses and
# slow-consumer closes. Draws the CSV with gnuplot.
#
# Fails (exit 1) if the RSS or the open fds at the end (the mean of the last 3 samples) are more
# than 10% above their value after the first minute (the mean of the 3 samples from 60 s on), or
# if any request failed that should not have (the load client's errors, a 5xx).
#
#   bench/soak.sh                                  # 10 minutes
#   SOAK_SECONDS=120 bench/soak.sh                 # a shorter run
#   SOAK_PNG=bench/soak.png bench/soak.sh          # where the plot goes (default: the run's dir)
#
# The load (switchboard-load soak, see bench/README.md): 4 chat rooms of 5 members each saying
# something every second; 50 subscribers of one lws-mirror-protocol instance with one publisher
# at 100 broadcasts/s of 512 B, checked for order; 3 members of it that never read, with a 4 KiB
# receive buffer (the server closes them as slow consumers; each is replaced every 120 s); 2
# kept-alive HTTP clients at 100 requests/s each, byte ranges of test.html (and the whole file
# every tenth); a 256 KiB upload every second; 20 echo connections opened and closed per second.
#
# Everything it starts is stopped by PID on exit. Output: target/soak/<time>/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

SOAK_SECONDS="${SOAK_SECONDS:-600}"
SAMPLE="${SOAK_SAMPLE_SECONDS:-10}"
BASELINE_AT="${SOAK_BASELINE_SECONDS:-60}"
MAX_GROWTH_PERCENT="${SOAK_MAX_GROWTH_PERCENT:-10}"
OUT="$ROOT/target/soak/$(date +%Y%m%d-%H%M%S)"
PNG="${SOAK_PNG:-$OUT/soak.png}"
mkdir -p "$OUT"
command -v gnuplot >/dev/null || { echo "soak: gnuplot is needed (Debian: gnuplot-nox)" >&2; exit 2; }

echo "soak: building (release)"
cargo build --release -q -p switchboard -p switchboard-bench
SERVER="$ROOT/target/release/switchboard"
LOAD="$ROOT/target/release/switchboard-load"

UPLOADS="$(mktemp -d /tmp/switchboard-soak-uploads.XXXXXX)"
SERVER_PID=""
LOAD_PID=""
cleanup() {
  [ -n "$LOAD_PID" ] && kill "$LOAD_PID" 2>/dev/null || true
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  [ -n "$SERVER_PID" ] && wait "$SERVER_PID" 2>/dev/null || true
  rm -rf "$UPLOADS"
}
trap cleanup EXIT

PORT="$("$LOAD" free-port)"
# A small --max-backlog: the slow consumers' bounded backlog (3 x 128 KiB at most) stays small
# beside the server's few MiB, so it cannot pass for growth.
"$SERVER" --bind "127.0.0.1:$PORT" --static-dir "$ROOT/static" --upload-dir "$UPLOADS" \
  --max-backlog 128KiB --log-level warn 2>"$OUT/server.log" &
SERVER_PID=$!
ready=""
for _ in $(seq 1 100); do
  if "$SERVER" probe "http://127.0.0.1:$PORT/readyz" --timeout 1s >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.1
done
[ -n "$ready" ] || { echo "soak: the server did not become ready" >&2; exit 1; }
echo "soak: server $SERVER_PID on 127.0.0.1:$PORT; $SOAK_SECONDS s of load, a sample every $SAMPLE s; output in $OUT"

"$LOAD" soak --url "ws://127.0.0.1:$PORT/" -d "$SOAK_SECONDS" --report-every 1 \
  >"$OUT/load.jsonl" 2>"$OUT/load.err" &
LOAD_PID=$!

CSV="$OUT/soak.csv"
echo "seconds,rss_kib,fds,sessions,client_ops,client_errors,http_5xx,slow_consumer_closes" >"$CSV"
metric() { # metric NAME-REGEX: the sum of the samples of that family in the scrape in $METRICS
  awk -v re="$1" '$1 ~ re { sum += $NF } END { print sum + 0 }' <<<"$METRICS"
}
started=$(date +%s)
next=$((started + SAMPLE))
# Samples while the load runs (the last one before its end).
while kill -0 "$LOAD_PID" 2>/dev/null && [ "$(($(date +%s) - started))" -lt "$SOAK_SECONDS" ]; do
  now=$(date +%s)
  if [ "$now" -lt "$next" ]; then
    sleep 1
    continue
  fi
  next=$((next + SAMPLE))
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "soak: the server died" >&2; exit 1; }
  rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status")
  fds=$(find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  METRICS="$(curl -s --max-time 5 "http://127.0.0.1:$PORT/metrics" || true)"
  sessions=$(metric '^switchboard_websocket_connections$|^switchboard_websocket_connections[{]')
  http5xx=$(metric '^switchboard_http_responses_total[{]status="5')
  slow=$(metric '^switchboard_slow_consumer_actions_total[{]action="close"')
  progress="$(grep '"progress":true' "$OUT/load.jsonl" | tail -n 1 || true)"
  ops=0
  errors=0
  if [ -n "$progress" ]; then
    ops=$(jq '[.ops[]] | add // 0' <<<"$progress")
    errors=$(jq '.error_total' <<<"$progress")
  fi
  echo "$((now - started)),$rss,$fds,$sessions,$ops,$errors,$http5xx,$slow" >>"$CSV"
  printf 'soak: %4ss  RSS %s KiB  fds %s  sessions %s  client ops %s errors %s  5xx %s\n' \
    "$((now - started))" "$rss" "$fds" "$sessions" "$ops" "$errors" "$http5xx"
  # Stored uploads are not what is measured; keep the disk from filling.
  find "$UPLOADS" -type f -delete
done
load_status=0
wait "$LOAD_PID" || load_status=$?
LOAD_PID=""
tail -n 3 "$OUT/load.err" | sed 's/^/load: /'

# The verdict.
verdict=0
# A point sample moves with what is in flight (a slow consumer's backlog, an upload), so both
# ends are means of WINDOW samples: the first ones from the first minute on, and the last ones.
WINDOW="${SOAK_WINDOW_SAMPLES:-3}"
read -r base_t base_rss base_fds < <(awk -F, -v at="$BASELINE_AT" -v n="$WINDOW" '
  NR > 1 && $1 >= at && taken < n { if (!taken) t = $1; taken++; rss += $2; fds += $3 }
  END { if (taken) printf "%s %.0f %.1f\n", t, rss / taken, fds / taken }' "$CSV")
read -r end_t end_rss end_fds < <(tail -n "$WINDOW" "$CSV" | awk -F, '
  { t = $1; n++; rss += $2; fds += $3 } END { printf "%s %.0f %.1f\n", t, rss / n, fds / n }')
read -r end_errors end_5xx < <(tail -n 1 "$CSV" | awk -F, '{ print $6, $7 }')
if [ -z "${base_t:-}" ] || [ "$(($(wc -l <"$CSV") - 1))" -lt "$((2 * WINDOW))" ]; then
  echo "soak: FAIL: too few samples after ${BASELINE_AT} s (run longer)" >&2
  verdict=1
else
  for what in rss fds; do
    if [ "$what" = rss ]; then base=$base_rss; end=$end_rss; else base=$base_fds; end=$end_fds; fi
    growth=$(awk -v b="$base" -v e="$end" 'BEGIN { printf "%.1f", (e - b) * 100 / b }')
    echo "soak: $what from ${base_t} s (mean of $WINDOW samples): $base, to ${end_t} s: $end (${growth}%)"
    if awk -v b="$base" -v e="$end" -v max="$MAX_GROWTH_PERCENT" 'BEGIN { exit !(e > b * (1 + max / 100)) }'; then
      echo "soak: FAIL: $what grew by more than ${MAX_GROWTH_PERCENT}% after the first minute" >&2
      verdict=1
    fi
  done
fi
if [ "$load_status" -ne 0 ] || [ "${end_errors:-1}" -ne 0 ]; then
  echo "soak: FAIL: the load client counted errors (exit $load_status); see $OUT/load.err" >&2
  verdict=1
fi
if [ "${end_5xx:-1}" -ne 0 ]; then
  echo "soak: FAIL: the server answered $end_5xx requests with a 5xx status" >&2
  verdict=1
fi
final="$(grep '"progress":false' "$OUT/load.jsonl" | tail -n 1 || true)"
[ -n "$final" ] && echo "soak: operations $(jq -c .ops <<<"$final")"

gnuplot <<EOF
set terminal pngcairo size 1000,620 font ",10"
set output "$PNG"
set datafile separator ","
set key top left
set xlabel "seconds"
set multiplot layout 2,1 title "Switchboard soak: ${SOAK_SECONDS} s of mixed load (bench/soak.sh)"
set ylabel "server RSS (MiB)"
set y2label "open fds / sessions"
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set arrow from $BASELINE_AT, graph 0 to $BASELINE_AT, graph 1 nohead dt 2
plot "$CSV" every ::1 using 1:(\$2/1024) with lines lw 2 title "RSS (MiB)", \
     "" every ::1 using 1:3 axes x1y2 with lines title "open fds", \
     "" every ::1 using 1:4 axes x1y2 with lines title "WebSocket sessions"
unset arrow
set ylabel "client operations (cumulative)"
set y2label "errors (cumulative)"
set y2range [0:*]
plot "$CSV" every ::1 using 1:5 with lines lw 2 title "client operations", \
     "" every ::1 using 1:6 axes x1y2 with lines title "client errors", \
     "" every ::1 using 1:7 axes x1y2 with lines title "HTTP 5xx", \
     "" every ::1 using 1:8 axes x1y2 with lines title "slow-consumer closes"
unset multiplot
EOF
echo "soak: CSV $CSV, plot $PNG"
if [ "$verdict" -eq 0 ]; then
  echo "soak: PASS"
else
  echo "soak: FAIL"
fi
exit "$verdict"
