#!/usr/bin/env bash
# Local stand-ins for the base images that docker/Dockerfile and docker/compose.yaml name
# (`debian:bookworm-slim`, `rust:1-bookworm`, `redis:7`), for a Docker engine that cannot pull
# from a registry, as on CI. A normal machine does not need this: the engine pulls the real ones.
#
#   docker/ci-images.sh          (as root; does nothing when the three images exist)
#
# It calls shared/docker/base-images.sh (beside the checkout), which debootstraps a minimal
# Debian 12 and imports it under those names. The rust stand-in holds this machine's toolchain
# and a crate cache made from ./Cargo.lock: when the lock has gained crates since, it is made
# again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"

have() { docker image inspect "$1" >/dev/null 2>&1; }
# Whether the rust stand-in's crate cache holds every crate of ./Cargo.lock (no network).
crates_cached() {
  docker run --rm --network none -v "$ROOT:/src:ro" -w /src rust:1-bookworm \
    cargo fetch --locked --offline >/dev/null 2>&1
}
if have rust:1-bookworm && ! docker image inspect -f '{{.Config.Env}}' rust:1-bookworm | grep -q CARGO_NET_OFFLINE; then
  echo "ci-images: rust:1-bookworm is a real image, kept as it is"
elif have rust:1-bookworm && ! crates_cached; then
  echo "ci-images: the crate cache of rust:1-bookworm misses crates of Cargo.lock; making it again"
  docker image rm rust:1-bookworm >/dev/null
fi
if have debian:bookworm-slim && have rust:1-bookworm && have redis:7; then
  echo "ci-images: debian:bookworm-slim, rust:1-bookworm and redis:7 present"
  exit 0
fi

SHARED=""
for candidate in "${SWITCHBOARD_SHARED:-}" "$ROOT/../shared" /work/shared; do
  if [ -n "$candidate" ] && [ -x "$candidate/docker/base-images.sh" ]; then
    SHARED="$(cd "$candidate" && pwd)"
    break
  fi
done
[ -n "$SHARED" ] || { echo "ci-images: cannot find shared/docker/base-images.sh beside the checkout" >&2; exit 2; }

"$SHARED/docker/base-images.sh" --rust --redis
for image in debian:bookworm-slim rust:1-bookworm redis:7; do
  have "$image" || { echo "ci-images: $image is missing after base-images.sh" >&2; exit 1; }
done
echo "ci-images: done"
