#!/usr/bin/env bash
# The container deployment, tested against the Docker engine (CI runs it):
#
#   docker/test.sh [single|cluster|load|all]      (default: all; run from anywhere)
#
# Builds docker/Dockerfile, then
#   single   one container: its size, ready within 1 s, the page, a WebSocket echo, the non-root
#            user, the HEALTHCHECK, and `docker stop` (close 1001 on every WebSocket, exit 0);
#   cluster  docker/compose.yaml (Redis + three nodes): cross-node broadcast and chat recovery,
#            then a node stopped, a node killed, Redis restarted, a node cut off from the network;
#   load     a short Tsung chat run against the cluster (bench/tsung/run.sh --short).
# The checks are in docker/cluster_check.py (Python, `websockets`, in a venv under target/).
# Everything gets names of its own (image, container, compose project, free loopback ports), and
# the trap removes all of it, passed or failed. SWITCHBOARD_TEST_IMAGE=IMAGE tests an existing
# image instead of building one (and keeps it). The last line is `docker: N passed, M failed`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
what="${1:-all}"
case "$what" in single|cluster|load|all) ;; *) echo "usage: $0 [single|cluster|load|all]" >&2; exit 2;; esac

say() { printf '\n--- docker test: %s\n' "$*"; }
die() { echo "docker test: FAIL: $*" >&2; echo "docker: ${PASSED:-0} passed, 1 failed"; exit 1; }

docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info)"
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
else
  die "neither 'docker compose' nor 'docker-compose' is installed"
fi

ID="sbtest$$r$RANDOM"
IMAGE="${SWITCHBOARD_TEST_IMAGE:-switchboard-test:$ID}"
CONTAINER="$ID-single"
PROJECT="$ID"
COMPOSE_UP=0
PASSED=0
mkdir -p target
LOGS="$ROOT/target/docker-test"
mkdir -p "$LOGS"

cleanup() {
  local status=$?
  set +e
  if [ "$COMPOSE_UP" = 1 ]; then
    "${COMPOSE[@]}" -p "$PROJECT" -f docker/compose.yaml logs --no-color >"$LOGS/compose.log" 2>&1
    if [ "$status" != 0 ]; then
      echo "docker test: the cluster's last log lines (all of them in target/docker-test/compose.log):" >&2
      grep -v ' "GET /readyz ' "$LOGS/compose.log" | tail -n 40 >&2
    fi
    "${COMPOSE[@]}" -p "$PROJECT" -f docker/compose.yaml down -v --remove-orphans -t 5 >/dev/null 2>&1
  fi
  if docker container inspect "$CONTAINER" >/dev/null 2>&1; then
    [ "$status" != 0 ] && docker logs --tail 30 "$CONTAINER" >&2 2>&1
    docker rm -f "$CONTAINER" >/dev/null 2>&1
  fi
  [ -z "${SWITCHBOARD_TEST_IMAGE:-}" ] && docker image rm "$IMAGE" >/dev/null 2>&1
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The Python client and its one package.
VENV="$ROOT/target/docker-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r docker/requirements.txt
check() {
  local status=0 n
  "$VENV/bin/python" docker/cluster_check.py "$@" | tee "$LOGS/check.log" || status=$?
  n="$(sed -n 's/^cluster_check: \([0-9]*\) passed.*/\1/p' "$LOGS/check.log" | tail -n 1)"
  PASSED=$((PASSED + ${n:-0}))
  [ "$status" = 0 ] || die "$1 checks failed (above)"
}

if [ -z "${SWITCHBOARD_TEST_IMAGE:-}" ]; then
  say "build $IMAGE (docker build -f docker/Dockerfile .; log: target/docker-test/build.log)"
  started=$SECONDS
  docker build -f docker/Dockerfile -t "$IMAGE" . >"$LOGS/build.log" 2>&1 \
    || { tail -n 40 "$LOGS/build.log" >&2; die "docker build failed"; }
  echo "built in $((SECONDS - started)) s"
  PASSED=$((PASSED + 1))
fi

if [ "$what" = single ] || [ "$what" = all ]; then
  say "one container"
  check single --image "$IMAGE" --name "$CONTAINER"
  docker rm -f "$CONTAINER" >/dev/null
fi

if [ "$what" = cluster ] || [ "$what" = all ]; then
  say "compose cluster (project $PROJECT, ${COMPOSE[*]})"
  read -r P1 P2 P3 < <("$VENV/bin/python" -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
  export SWITCHBOARD_IMAGE="$IMAGE" SWITCHBOARD_PORT_1="$P1" SWITCHBOARD_PORT_2="$P2" SWITCHBOARD_PORT_3="$P3"
  export SWITCHBOARD_API_TOKEN="token-$ID" SWITCHBOARD_PRESENCE_TTL=6s SWITCHBOARD_BROKER_CHECK_INTERVAL=2s
  # The containers' file limit: 1048576, or this machine's hard limit when that is lower
  # (runc cannot raise it past the engine's own).
  hard="$(ulimit -Hn)"
  if [ "$hard" = unlimited ] || [ "$hard" -gt 1048576 ]; then hard=1048576; fi
  export SWITCHBOARD_NOFILE="${SWITCHBOARD_NOFILE:-$hard}"
  COMPOSE_UP=1
  "${COMPOSE[@]}" -p "$PROJECT" -f docker/compose.yaml up -d --no-build >"$LOGS/compose-up.log" 2>&1 \
    || { cat "$LOGS/compose-up.log" >&2; die "compose up failed"; }
  check cluster --project "$PROJECT" --compose "${COMPOSE[*]} -p $PROJECT -f docker/compose.yaml" \
    --ports "$P1,$P2,$P3" --token "$SWITCHBOARD_API_TOKEN" --presence-ttl 6 --check-interval 2
  "${COMPOSE[@]}" -p "$PROJECT" -f docker/compose.yaml down -v --remove-orphans -t 5 >/dev/null 2>&1
  COMPOSE_UP=0
fi

if [ "$what" = load ] || [ "$what" = all ]; then
  say "external load: Tsung, short run (bench/tsung/run.sh --short)"
  status=0
  SWITCHBOARD_IMAGE="$IMAGE" bench/tsung/run.sh --short | tee "$LOGS/tsung.log" || status=$?
  [ "$status" = 0 ] || die "the Tsung run failed (above)"
  PASSED=$((PASSED + 1))
fi

echo "docker: $PASSED passed, 0 failed"
