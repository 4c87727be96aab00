#!/usr/bin/env bash
# Switchboard vs libwebsockets-test-server, same loads back to back on this machine (loopback).
#
#   bench/compare.sh            full run: 3 repetitions, 10 s per load (about 10 minutes)
#   bench/compare.sh --quick    smoke run: 1 repetition, short loads (about 2 minutes)
#   bench/compare.sh --reps 5   more repetitions
#   bench/compare.sh --only rate100,lag100   only these loads (names as in the table's first column
#                                            of results.tsv: bcast100 lag100 bcast1000 rate100
#                                            rate1000 idle static echo deflate tls)
#
# Prints the machine, then a table of medians with the ratio Switchboard / libwebsockets, and the
# server CPU time per delivered message or request, then broadcast and echo over TLS (wss) against
# plain ws, and a chat-like broadcast with permessage-deflate against the same without it. Every
# run's raw output is kept under target/bench-compare/<time>/. See bench/README.md for what each
# figure means.
set -euo pipefail

cd "$(dirname "$0")/.."

QUICK=0
REPS=3
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --only)
        ONLY=",$2,"
        shift
        ;;
    --reps)
        REPS="$2"
        shift
        ;;
    -h | --help)
        sed -n '2,15p' "$0"
        exit 0
        ;;
    *)
        echo "compare.sh: unknown argument $1" >&2
        exit 2
        ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    [ "$REPS" = 3 ] && REPS=1
    DUR=3 WARM=1 IDLE_N=10000 IDLE_RATE=5000 HOLD=1 WRK_DUR=3 FANOUT_MESSAGES=100
else
    DUR=10 WARM=2 IDLE_N=10000 IDLE_RATE=5000 HOLD=3 WRK_DUR=10 FANOUT_MESSAGES=300
fi

# ---------------------------------------------------------------- machine and tools
echo "== machine"
echo "nproc: $(nproc)"
echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "kernel: $(uname -r)"
echo "client and servers share these cores; all traffic is loopback (127.0.0.1)"

need_apt=()
command -v libwebsockets-test-server >/dev/null || need_apt+=(libwebsockets-test-server)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v openssl >/dev/null || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing ${need_apt[*]}"
    if [ "$(id -u)" = 0 ]; then
        timeout 300 apt-get install -y "${need_apt[@]}" >/dev/null ||
            { timeout 300 apt-get update >/dev/null && timeout 300 apt-get install -y "${need_apt[@]}" >/dev/null; }
    else
        timeout 300 sudo apt-get install -y "${need_apt[@]}" >/dev/null
    fi
fi
LWS_SHARE=/usr/share/libwebsockets-test-server
[ -f "$LWS_SHARE/test.html" ] || { echo "compare.sh: $LWS_SHARE/test.html missing" >&2; exit 1; }

echo "== building (release)"
cargo build --release -p switchboard -p switchboard-bench 2>&1 | tail -1
LOAD=target/release/switchboard-load
SWITCHBOARD=target/release/switchboard
CLK_TCK=$(getconf CLK_TCK)

OUT="target/bench-compare/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/runs"
RESULTS="$OUT/results.tsv"
: >"$RESULTS"
PROBLEMS="$OUT/problems.txt"
: >"$PROBLEMS"
TMP=$(mktemp -d)

# ---------------------------------------------------------------- servers
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

# Servers may hold 10,000+ connections; they inherit this limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

wait_http() { # port
    local i
    for i in $(seq 100); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/" && return 0
        sleep 0.1
    done
    echo "compare.sh: nothing answers on 127.0.0.1:$1" >&2
    return 1
}

# The 7 KiB page: libwebsockets' own test.html (its test server only serves its resource
# directory), served byte for byte by Switchboard from a copy of static/.
PAGE_BYTES=$(stat -c %s "$LWS_SHARE/test.html")
mkdir -p "$TMP/static"
cp -r static/. "$TMP/static/"
cp "$LWS_SHARE/test.html" "$TMP/static/lws-test.html"

start_switchboard() {
    SB_PORT=$($LOAD free-port)
    "$SWITCHBOARD" --bind "127.0.0.1:$SB_PORT" --static-dir "$TMP/static" --log-level warn \
        >>"$OUT/switchboard.log" 2>&1 &
    SB_PID=$!
    PIDS+=("$SB_PID")
    wait_http "$SB_PORT"
}

# Switchboard over TLS (https/wss on its own port), with a certificate authority and a server
# certificate made now; the load client verifies the server against that authority.
TLS_DIR="$TMP/tls"
mkdir -p "$TLS_DIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=switchboard-bench-CA -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
    -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$TLS_DIR/ext.cnf"
openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" \
    -CAcreateserial -days 1 -extfile "$TLS_DIR/ext.cnf" -out "$TLS_DIR/cert.pem" 2>/dev/null

start_switchboard_tls() {
    SB_TLS_PORT=$($LOAD free-port)
    "$SWITCHBOARD" --bind "127.0.0.1:$SB_TLS_PORT" --static-dir "$TMP/static" --log-level warn \
        --tls-cert "$TLS_DIR/cert.pem" --tls-key "$TLS_DIR/key.pem" >>"$OUT/switchboard-tls.log" 2>&1 &
    SB_TLS_PID=$!
    PIDS+=("$SB_TLS_PID")
    local i
    for i in $(seq 100); do
        curl -s -o /dev/null --max-time 1 --cacert "$TLS_DIR/ca.pem" "https://127.0.0.1:$SB_TLS_PORT/" && return 0
        sleep 0.1
    done
    echo "compare.sh: nothing answers on https://127.0.0.1:$SB_TLS_PORT" >&2
    return 1
}

start_lws() {
    LWS_PORT=$($LOAD free-port)
    (cd "$TMP" && exec libwebsockets-test-server --port="$LWS_PORT") >>"$OUT/libwebsockets.log" 2>&1 &
    LWS_PID=$!
    PIDS+=("$LWS_PID")
    wait_http "$LWS_PORT"
}

stop_pid() { # pid: TERM, then KILL after 5 s; forget it
    local pid=$1 i keep=()
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for i in "${PIDS[@]}"; do [ "$i" != "$pid" ] && keep+=("$i"); done
    PIDS=("${keep[@]}")
}

start_switchboard
start_lws

SB_PAGE="http://127.0.0.1:$SB_PORT/lws-test.html"
LWS_PAGE="http://127.0.0.1:$LWS_PORT/test.html"
curl -s "$SB_PAGE" | cmp -s - "$LWS_SHARE/test.html" || { echo "compare.sh: Switchboard does not serve the page" >&2; exit 1; }
curl -s "$LWS_PAGE" | cmp -s - "$LWS_SHARE/test.html" || { echo "compare.sh: libwebsockets does not serve the page" >&2; exit 1; }

echo "== servers"
echo "switchboard: pid $SB_PID on 127.0.0.1:$SB_PORT ($SWITCHBOARD --log-level warn, default workers)"
echo "libwebsockets: pid $LWS_PID on 127.0.0.1:$LWS_PORT ($(command -v libwebsockets-test-server)," \
    "$(dpkg-query -W -f '${Version}' libwebsockets-test-server 2>/dev/null || echo '?'))"
echo "static page: $PAGE_BYTES bytes, libwebsockets' test.html (the same bytes from both servers)"
echo "raw output: $OUT"

# ---------------------------------------------------------------- measuring
cpu_ticks() { # pid -> utime + stime in clock ticks (fields 14 and 15 of /proc/PID/stat)
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

json_get() { # json key -> value, empty when absent or null
    sed -n "s/.*\"$2\":\([-0-9.eE+]*\)[,}].*/\1/p" <<<"$1" | head -1
}

record() { # load server metric value
    [ -n "$4" ] && printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"
    return 0
}

per_unit_us() { # ticks count -> microseconds of server CPU per unit
    awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.3f", t / hz * 1e6 / n }'
}

server_pid() { case "$1" in switchboard | switchboard-deflate) echo "$SB_PID" ;; switchboard-tls) echo "$SB_TLS_PID" ;; *) echo "$LWS_PID" ;; esac; }
server_port() { case "$1" in switchboard) echo "$SB_PORT" ;; switchboard-tls) echo "$SB_TLS_PORT" ;; *) echo "$LWS_PORT" ;; esac; }

# run_client LOAD SERVER REP -- client arguments: runs the load client, records its figures.
run_client() {
    local load=$1 server=$2 rep=$3
    shift 4
    local pid log t0 t1 json ticks
    pid=$(server_pid "$server")
    log="$OUT/runs/$load.$server.$rep.txt"
    kill -0 "$pid" 2>/dev/null || { echo "compare.sh: $server (pid $pid) is not running" >&2; exit 1; }
    t0=$(cpu_ticks "$pid")
    timeout 180 "$LOAD" "$@" >"$log" 2>&1 || echo "exit status $? of: $LOAD $*" >>"$log"
    t1=$(cpu_ticks "$pid")
    ticks=$((t1 - t0))
    json=$(grep '^{' "$log" | tail -1 || true)
    if [ -z "$json" ]; then
        echo "$load $server rep $rep: no result ($(tail -1 "$log"))" >>"$PROBLEMS"
        return 0
    fi
    case "$load" in
    bcast* | lag* | rate*)
        local rt po all
        rt=$(json_get "$json" received_total)
        po=$(json_get "$json" publisher_own_copies)
        all=$((${rt:-0} + ${po:-0}))
        record "$load" "$server" deliveries_per_s "$(json_get "$json" deliveries_per_s)"
        record "$load" "$server" published_per_s "$(json_get "$json" published_per_s)"
        for k in p50_ms p99_ms p999_ms loss order_violations client_cpu_s; do
            record "$load" "$server" "$k" "$(json_get "$json" "$k")"
        done
        record "$load" "$server" cpu_us "$(per_unit_us "$ticks" "$all")"
        local v
        for k in loss order_violations gaps malformed wrong_size failed_subscribers; do
            v=$(json_get "$json" "$k")
            [ "${v:-0}" != 0 ] && echo "$load $server rep $rep: $k = $v" >>"$PROBLEMS"
        done
        ;;
    idle)
        for k in established failed open_after_hold bytes_per_connection rss_before_kib rss_held_kib; do
            record "$load" "$server" "$k" "$(json_get "$json" "$k")"
        done
        [ "$(json_get "$json" failed)" != 0 ] && echo "$load $server rep $rep: failed = $(json_get "$json" failed)" >>"$PROBLEMS"
        [ "$(json_get "$json" open_after_hold)" != "$(json_get "$json" established)" ] &&
            echo "$load $server rep $rep: only $(json_get "$json" open_after_hold) of $(json_get "$json" established) still open after the hold" >>"$PROBLEMS"
        ;;
    fanout)
        for k in negotiated deliveries bytes_per_delivery; do
            record "$load" "$server" "$k" "$(json_get "$json" "$k")"
        done
        record "$load" "$server" cpu_us "$(json_get "$json" server_cpu_us_per_delivery)"
        ;;
    echo*)
        for k in messages_per_s p50_ms p99_ms p999_ms; do
            record "$load" "$server" "$k" "$(json_get "$json" "$k")"
        done
        record "$load" "$server" cpu_us "$(per_unit_us "$ticks" "$(json_get "$json" received)")"
        for k in wrong_payload failed_connections; do
            v=$(json_get "$json" "$k")
            [ "${v:-0}" != 0 ] && echo "$load $server rep $rep: $k = $v" >>"$PROBLEMS"
        done
        ;;
    esac
    if grep -q '"first_error":"' <<<"$json"; then
        echo "$load $server rep $rep: $(sed -n 's/.*"first_error":\("[^"]*"\).*/\1/p' <<<"$json")" >>"$PROBLEMS"
    fi
    return 0
}

to_ms() { # wrk duration (12.3us, 4.5ms, 1.2s) -> milliseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    }'
}

run_wrk() { # server rep
    local server=$1 rep=$2 url pid log t0 t1 requests non2xx
    if [ "$server" = switchboard ]; then
        url="http://127.0.0.1:$SB_PORT/lws-test.html"
    else
        url="http://127.0.0.1:$LWS_PORT/test.html"
    fi
    pid=$(server_pid "$server")
    log="$OUT/runs/static.$server.$rep.txt"
    t0=$(cpu_ticks "$pid")
    timeout $((WRK_DUR + 30)) wrk -t2 -c50 -d"${WRK_DUR}s" --timeout 5s --latency "$url" >"$log" 2>&1 || true
    t1=$(cpu_ticks "$pid")
    requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$log")
    record static "$server" requests_per_s "$(sed -n 's/^Requests\/sec: *//p' "$log")"
    record static "$server" p50_ms "$(to_ms "$(awk '$1 == "50%" {print $2}' "$log")")"
    record static "$server" p99_ms "$(to_ms "$(awk '$1 == "99%" {print $2}' "$log")")"
    record static "$server" cpu_us "$(per_unit_us $((t1 - t0)) "${requests:-0}")"
    non2xx=$(sed -n 's/^ *Non-2xx or 3xx responses: *//p' "$log")
    record static "$server" non_2xx "${non2xx:-0}"
    [ -n "$non2xx" ] && echo "static $server rep $rep: $non2xx non-2xx/3xx responses" >>"$PROBLEMS"
    grep -q 'Socket errors' "$log" && echo "static $server rep $rep: $(grep 'Socket errors' "$log" | sed 's/^ *//')" >>"$PROBLEMS"
    return 0
}

COMMON=(--duration "$DUR" --warmup "$WARM")
SERVERS=(switchboard libwebsockets)

# wanted LOAD: whether --only (if given) names the load.
wanted() { [ -z "$ONLY" ] || [[ "$ONLY" == *",$1,"* ]]; }

run_both() { # load -- client arguments (URL and pid are added per server)
    local load=$1 rep server port
    shift 2
    wanted "$load" || return 0
    for rep in $(seq "$REPS"); do
        for server in "${SERVERS[@]}"; do
            port=$(server_port "$server")
            printf '  %s %s rep %s\n' "$load" "$server" "$rep"
            run_client "$load" "$server" "$rep" -- "$1" --url "ws://127.0.0.1:$port/" "${@:2}"
            sleep 1
        done
    done
}

echo "== runs ($REPS repetition(s); ${DUR} s measured after ${WARM} s warm-up per load)"
run_both bcast100 -- broadcast "${COMMON[@]}" --drain 2 --drain-max 30 -k 100 -p 1 --size 64 --max-lag 1000
# A publisher that waits for its slowest subscriber (at most 100 messages ahead): the load where
# a fixed write window would throttle it to one round per window.
run_both lag100 -- broadcast "${COMMON[@]}" --drain 2 --drain-max 30 -k 100 -p 1 --size 64 --max-lag 100
run_both bcast1000 -- broadcast "${COMMON[@]}" --drain 2 --drain-max 30 -k 1000 -p 1 --size 64 --max-lag 1000
# Light load, for latency: a message every millisecond to 100 subscribers.
run_both rate100 -- broadcast "${COMMON[@]}" --drain 2 --drain-max 30 -k 100 -p 1 --size 64 --rate 1000 --max-lag 1000
run_both rate1000 -- broadcast "${COMMON[@]}" --drain 2 --drain-max 30 -k 1000 -p 1 --size 64 --rate 1000 --max-lag 1000
# Memory per connection is measured on freshly started servers: a process that held many
# connections before keeps (and reuses) that memory, which would hide the cost.
wanted idle && for rep in $(seq "$REPS"); do
    stop_pid "$SB_PID"
    stop_pid "$LWS_PID"
    start_switchboard
    start_lws
    sleep 1
    for server in "${SERVERS[@]}"; do
        printf '  idle %s rep %s (fresh server)\n' "$server" "$rep"
        run_client idle "$server" "$rep" -- connect --url "ws://127.0.0.1:$(server_port "$server")/" \
            -n "$IDLE_N" -r "$IDLE_RATE" --hold "$HOLD" --server-pid "$(server_pid "$server")"
        sleep 2
    done
done
wanted static && for rep in $(seq "$REPS"); do
    for server in "${SERVERS[@]}"; do
        printf '  static %s rep %s\n' "$server" "$rep"
        run_wrk "$server" "$rep"
        sleep 1
    done
done
wanted echo && for rep in $(seq "$REPS"); do
    for w in 1 16; do
        printf '  echo W=%s switchboard rep %s\n' "$w" "$rep"
        run_client "echo$w" switchboard "$rep" -- echo --url "ws://127.0.0.1:$SB_PORT/" \
            "${COMMON[@]}" -c 50 -w "$w" --size 64 --protocol echo
        sleep 1
    done
done
# permessage-deflate: one publisher sends 1 KiB chat-like JSON messages at 100/s to a mirror
# room of 1,000 members that all offer compression, or none of them, on the same Switchboard.
# The server's CPU per delivery is read by the client around the messages only (not the
# connecting); members count bytes on the wire without inflating.
wanted deflate && for rep in $(seq "$REPS"); do
    for server in switchboard switchboard-deflate; do
        offer=()
        [ "$server" = switchboard-deflate ] && offer=(--deflate)
        printf '  fanout 1 KiB JSON to 1000 members, %s, rep %s\n' "$server" "$rep"
        run_client fanout "$server" "$rep" -- fanout --url "ws://127.0.0.1:$SB_PORT/" \
            -n 1000 -m "$FANOUT_MESSAGES" --rate 100 --server-pid "$SB_PID" "${offer[@]}"
        sleep 1
    done
done
# The same broadcast and echo loads over TLS (wss), against a Switchboard started with
# --tls-cert/--tls-key, to compare with the plain figures above.
stop_pid "$LWS_PID"
wanted tls && start_switchboard_tls
wanted tls && for rep in $(seq "$REPS"); do
    printf '  broadcast K=1000 over wss, switchboard rep %s\n' "$rep"
    run_client bcast1000 switchboard-tls "$rep" -- broadcast --url "wss://127.0.0.1:$SB_TLS_PORT/" \
        --ca-cert "$TLS_DIR/ca.pem" "${COMMON[@]}" --drain 2 --drain-max 30 -k 1000 -p 1 --size 64 --max-lag 1000
    sleep 1
    printf '  echo W=16 over wss, switchboard rep %s\n' "$rep"
    run_client echo16 switchboard-tls "$rep" -- echo --url "wss://127.0.0.1:$SB_TLS_PORT/" \
        --ca-cert "$TLS_DIR/ca.pem" "${COMMON[@]}" -c 50 -w 16 --size 64 --protocol echo
    sleep 1
done

# ---------------------------------------------------------------- table
median() { # load server metric -> median over the repetitions, or -
    awk -F'\t' -v l="$1" -v s="$2" -v m="$3" '$1 == l && $2 == s && $3 == m { print $4 }' "$RESULTS" |
        sort -g | awk '{ v[NR] = $1 } END {
            if (NR == 0) { print "-"; exit }
            if (NR % 2) x = v[(NR + 1) / 2]; else x = (v[NR / 2] + v[NR / 2 + 1]) / 2
            if (x == int(x) && (x > 100 || x < -100 || x == 0)) printf "%d\n", x
            else if (x >= 100 || x <= -100) printf "%.0f\n", x
            else printf "%.3g\n", x
        }'
}

row_vs() { # load server-a server-b metric label: medians of a and b, and a / b
    local a b ratio
    a=$(median "$1" "$2" "$4")
    b=$(median "$1" "$3" "$4")
    ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }')
    printf '%-36s %-30s %14s %14s %8s\n' "$5" "$4" "$a" "$b" "$ratio"
}

row() { # load metric label: Switchboard against libwebsockets
    row_vs "$1" switchboard libwebsockets "$2" "$3"
}

echo
echo "== results: medians of $REPS run(s) (ratio = Switchboard / libwebsockets)"
printf '%-36s %-30s %14s %14s %8s\n' load figure switchboard libwebsockets ratio
L="broadcast K=100, 64 B, max speed"
for m in deliveries_per_s published_per_s p50_ms p99_ms p999_ms loss order_violations cpu_us client_cpu_s; do row bcast100 "$m" "$L"; done
L="broadcast K=100, 64 B, max lag 100"
for m in deliveries_per_s published_per_s p50_ms p99_ms p999_ms loss order_violations cpu_us client_cpu_s; do row lag100 "$m" "$L"; done
L="broadcast K=1000, 64 B, max speed"
for m in deliveries_per_s published_per_s p50_ms p99_ms p999_ms loss order_violations cpu_us client_cpu_s; do row bcast1000 "$m" "$L"; done
L="broadcast K=100, 64 B, 1000 msg/s"
for m in deliveries_per_s published_per_s p50_ms p99_ms p999_ms loss order_violations cpu_us client_cpu_s; do row rate100 "$m" "$L"; done
L="broadcast K=1000, 64 B, 1000 msg/s"
for m in deliveries_per_s published_per_s p50_ms p99_ms p999_ms loss order_violations cpu_us client_cpu_s; do row rate1000 "$m" "$L"; done
L="idle connections N=$IDLE_N"
for m in established failed open_after_hold bytes_per_connection rss_before_kib rss_held_kib; do row idle "$m" "$L"; done
L="static GET ${PAGE_BYTES} B (wrk -c50)"
for m in requests_per_s p50_ms p99_ms non_2xx cpu_us; do row static "$m" "$L"; done
L="echo C=50 W=1, 64 B"
for m in messages_per_s p50_ms p99_ms p999_ms cpu_us; do row echo1 "$m" "$L"; done
L="echo C=50 W=16, 64 B"
for m in messages_per_s p50_ms p99_ms p999_ms cpu_us; do row echo16 "$m" "$L"; done
echo
echo "== TLS: Switchboard over wss vs plain ws (ratio = wss / ws)"
printf '%-36s %-30s %14s %14s %8s\n' load figure wss ws ratio
L="broadcast K=1000, 64 B, max speed"
for m in deliveries_per_s p50_ms p99_ms loss order_violations cpu_us client_cpu_s; do row_vs bcast1000 switchboard-tls switchboard "$m" "$L"; done
L="echo C=50 W=16, 64 B"
for m in messages_per_s p50_ms p99_ms cpu_us; do row_vs echo16 switchboard-tls switchboard "$m" "$L"; done
echo
echo "== permessage-deflate: 1 KiB chat-like JSON to 1,000 members (ratio = deflate / plain)"
printf '%-36s %-30s %14s %14s %8s\n' load figure deflate plain ratio
L="fanout K=1000, 1 KiB JSON, 100 msg/s"
for m in negotiated deliveries bytes_per_delivery cpu_us; do row_vs fanout switchboard-deflate switchboard "$m" "$L"; done
echo
echo "cpu_us: server CPU time (utime+stime from /proc/PID/stat, CLK_TCK=$CLK_TCK) over the whole run"
echo "        divided by the messages the client received (subscribers + publishers' own copies),"
echo "        the requests wrk completed, or the echoes received."
echo "client_cpu_s: CPU seconds the load client itself used in that run (it shares the cores)."
echo "loss: messages sent after the warm-up that a subscriber had not received when the drain ended"
echo "      (2 s without any message, at most 30 s), summed over subscribers."
echo "Latencies are in ms. The echo loads run on Switchboard only."
if [ -s "$PROBLEMS" ]; then
    echo
    echo "== anomalies seen (per run)"
    cat "$PROBLEMS"
else
    echo "no anomalies: no loss, order violations, malformed records, failed connections or errors"
fi
echo
echo "raw output of every run: $OUT"
