#!/usr/bin/env bash
# Rebuilds vendor/actix-http from the published crate and the patch series in
# vendor/patches/actix-http (applied in order), so that an upgrade is mechanical:
#
#   vendor/rebuild.sh           rebuild vendor/actix-http in place
#   vendor/rebuild.sh --check   rebuild into a temporary directory and fail (exit 1) if it
#                               differs from vendor/actix-http (run by CI)
#
# The published crate is downloaded from crates.io (its .crate archive), unless cargo's
# registry cache already holds it. To upgrade: set VERSION, run without --check, fix the
# patches that no longer apply (each is one concern, see vendor/README.md), run the tests.
set -euo pipefail

VERSION=3.20.0
NAME=actix-http
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

crate="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$NAME-$VERSION.crate" 2>/dev/null | head -1 || true)"
if [[ -z "$crate" ]]; then
  crate="$work/$NAME-$VERSION.crate"
  curl -sSfL --retry 3 "https://static.crates.io/crates/$NAME/$NAME-$VERSION.crate" -o "$crate"
fi
tar -xzf "$crate" -C "$work"
src="$work/$NAME-$VERSION"
# Not shipped: the crate's own examples, tests and benches, its lock file and original manifest.
rm -rf "$src"/{examples,tests,benches} "$src"/Cargo.lock "$src"/Cargo.toml.orig
for patch in "$here/patches/$NAME"/*.patch; do
  patch --quiet --forward --no-backup-if-mismatch -p1 -d "$src" < "$patch" || {
    echo "vendor: $(basename "$patch") does not apply to $NAME $VERSION" >&2
    exit 1
  }
done

if [[ "${1:-}" == "--check" ]]; then
  if diff -r "$src" "$here/$NAME" > "$work/diff"; then
    echo "vendor: $NAME is the published $VERSION plus $(ls "$here/patches/$NAME" | wc -l) patches"
  else
    echo "vendor: $here/$NAME differs from the published $VERSION plus the patches:" >&2
    head -50 "$work/diff" >&2
    exit 1
  fi
else
  rm -rf "${here:?}/$NAME"
  cp -r "$src" "$here/$NAME"
  echo "vendor: rebuilt $NAME $VERSION with $(ls "$here/patches/$NAME" | wc -l) patches"
fi
