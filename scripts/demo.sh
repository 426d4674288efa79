#!/usr/bin/env bash
# The quickstart: set the machine up, make a busybox layer from Debian's
# busybox-static, and run a command in a fresh microVM.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SKIFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
"$repo/scripts/setup.sh"

layer="$cache/demo/busybox.erofs"
if [[ ! -f "$layer" ]]; then
    staging="$(mktemp -d)"
    trap 'rm -rf "$staging"' EXIT
    mkdir -p "$staging"/{bin,etc,tmp,root,proc,sys,dev} "$(dirname "$layer")"
    cp /bin/busybox "$staging/bin/"
    for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -s busybox "$staging/bin/$a"; done
    echo "root:x:0:0:root:/root:/bin/sh" > "$staging/etc/passwd"
    mkfs.erofs --quiet "$layer.tmp" "$staging" && mv "$layer.tmp" "$layer"
fi
exec "$CARGO_TARGET_DIR/release/skiff" vm run --layer "$layer" -- \
    sh -c 'echo "hello from a skiff microVM: kernel $(uname -r), $(nproc) vCPU, rootfs $(awk "\$2==\"/\"{print \$3}" /proc/mounts)"'
