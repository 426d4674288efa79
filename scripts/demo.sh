#!/usr/bin/env bash
# The quickstart: set the machine up (packages, guest kernel, agent, skiff), then run a
# container in its own microVM. With no registry reachable, `busybox` is built from
# Debian's busybox-static (`skiff image build-busybox`).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SKIFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
"$repo/scripts/setup.sh"
exec "$CARGO_TARGET_DIR/release/skiff" run --rm busybox echo hello
