#!/usr/bin/env bash
# External load with Tsung (Debian's `tsung`) on the compose cluster of docker/compose.yaml:
#
#   bench/tsung/run.sh            # about 2 minutes: 600 chat users over three nodes
#   bench/tsung/run.sh --short    # about 30 s: 50 users (CI)
#
# Brings the cluster up under a compose project of its own on free loopback ports (building
# switchboard:latest with docker/Dockerfile, unless SWITCHBOARD_IMAGE names an image to use),
# runs bench/tsung/chat.xml against the three nodes, prints Tsung's figures and the servers'
# message counts, and removes the cluster. Exits 1 when Tsung reports any error (connection
# errors, timeouts, failed handshakes). Tsung's logs stay in target/tsung/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT="$PWD"
short=0
for a in "$@"; do case "$a" in --short) short=1;; *) echo "usage: $0 [--short]" >&2; exit 2;; esac; done

command -v tsung >/dev/null || { echo "tsung run: tsung is not installed (apt-get install tsung)" >&2; exit 2; }
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
else
  echo "tsung run: neither 'docker compose' nor 'docker-compose' is installed" >&2; exit 2
fi

if [ "$short" = 1 ]; then
  ARRIVAL_SECONDS=10 ARRIVAL_RATE=5 ROOMS=5 SAYS=8 PAUSE_MIN=1 PAUSE_MAX=2
else
  ARRIVAL_SECONDS=60 ARRIVAL_RATE=10 ROOMS=10 SAYS=30 PAUSE_MIN=1 PAUSE_MAX=3
fi
MAXUSERS=$((ARRIVAL_SECONDS * ARRIVAL_RATE + 100))

PROJECT="sbload$$r$RANDOM"
OUT="$ROOT/target/tsung/$(date +%Y%m%d-%H%M%S)-$PROJECT"
mkdir -p "$OUT"
read -r P1 P2 P3 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
NODES=("http://127.0.0.1:$P1" "http://127.0.0.1:$P2" "http://127.0.0.1:$P3")
build=(--build)
if [ -n "${SWITCHBOARD_IMAGE:-}" ]; then build=(--no-build); fi
export SWITCHBOARD_IMAGE="${SWITCHBOARD_IMAGE:-switchboard:latest}"
export SWITCHBOARD_PORT_1="$P1" SWITCHBOARD_PORT_2="$P2" SWITCHBOARD_PORT_3="$P3"
export SWITCHBOARD_API_TOKEN="token-$PROJECT"
# The containers' file limit: 1048576, or this machine's hard limit when that is lower
# (runc cannot raise it past the engine's own).
hard="$(ulimit -Hn)"
if [ "$hard" = unlimited ] || [ "$hard" -gt 1048576 ]; then hard=1048576; fi
export SWITCHBOARD_NOFILE="${SWITCHBOARD_NOFILE:-$hard}"
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f docker/compose.yaml "$@"; }

cleanup() {
  local status=$?
  set +e
  compose logs --no-color >"$OUT/compose.log" 2>&1
  [ "$status" != 0 ] && tail -n 20 "$OUT/compose.log" >&2
  compose down -v --remove-orphans -t 5 >/dev/null 2>&1
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "tsung run: cluster $PROJECT on 127.0.0.1:$P1, :$P2, :$P3 (image $SWITCHBOARD_IMAGE)"
compose up -d "${build[@]}" >"$OUT/compose-up.log" 2>&1 || { cat "$OUT/compose-up.log" >&2; exit 1; }
python3 bench/tsung/report.py ready "${NODES[@]}"

sed -e "s/@PORT1@/$P1/; s/@PORT2@/$P2/; s/@PORT3@/$P3/" \
    -e "s/@ARRIVAL_SECONDS@/$ARRIVAL_SECONDS/; s/@ARRIVAL_RATE@/$ARRIVAL_RATE/" \
    -e "s/@ROOMS@/$ROOMS/g; s/@SAYS@/$SAYS/g; s/@PAUSE_MIN@/$PAUSE_MIN/g; s/@PAUSE_MAX@/$PAUSE_MAX/g" \
    -e "s/@MAXUSERS@/$MAXUSERS/" bench/tsung/chat.xml >"$OUT/chat.xml"
echo "tsung run: $((ARRIVAL_SECONDS * ARRIVAL_RATE)) users over ${ARRIVAL_SECONDS} s, $ROOMS rooms," \
  "$SAYS messages each, ${PAUSE_MIN}-${PAUSE_MAX} s apart (log: ${OUT#"$ROOT"/})"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
python3 bench/tsung/report.py snapshot "${NODES[@]}" >"$OUT/before.json"
# Tsung's controller needs a home for its state; -n: no web interface.
HOME="$OUT" tsung -n -f "$OUT/chat.xml" -l "$OUT" start >"$OUT/tsung.out" 2>&1 \
  || { cat "$OUT/tsung.out" >&2; echo "tsung run: tsung failed" >&2; exit 1; }
python3 bench/tsung/report.py snapshot "${NODES[@]}" >"$OUT/after.json"
LOG="$(find "$OUT" -name tsung.log | head -n 1)"
[ -n "$LOG" ] || { cat "$OUT/tsung.out" >&2; echo "tsung run: no tsung.log" >&2; exit 1; }
python3 bench/tsung/report.py report "$LOG" "$OUT/before.json" "$OUT/after.json"
