#!/usr/bin/env bash
# Start the release server in the background on a free loopback port and print its PID and
# address ("PID ADDR") once it is listening. Extra arguments are passed to the server.
#
#   read -r PID ADDR < <(scripts/start-server.sh LOGFILE [flags...])
#
# Stop it with `kill PID`.
set -euo pipefail
log="$1"
shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/target/release/switchboard" --bind 127.0.0.1:0 --static-dir "$root/static" "$@" >"$log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  addr="$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$log" | head -n 1)"
  if [ -n "$addr" ]; then
    echo "$pid $addr"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
kill "$pid" 2>/dev/null || true
echo "server did not start; log:" >&2
cat "$log" >&2
exit 1
