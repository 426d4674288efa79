#!/usr/bin/env bash
# Prepares this machine to build, run and test skiff, and builds the guest.
# Idempotent and cached: a second run with nothing changed takes seconds.
#
#   scripts/setup.sh            # packages, toolchain targets, guest kernel, agent,
#                               # initramfs, vsock backend, skiff itself
#
# Installs the guest into $SKIFF_GUEST_DIR (default ~/.local/share/skiff/guest), where
# skiff looks for it, and skiff into $CARGO_TARGET_DIR/release.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SKIFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
guest_dir="${SKIFF_GUEST_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/skiff/guest}"
say() { echo "setup: $*" >&2; }

sudo_if_needed() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }

# 1. Debian packages: the guest kernel's source and build tools, QEMU, the filesystem
#    tools for layer and writable disks, busybox for the starter image and test layers,
#    and the real clients the end-to-end tests drive.
packages=(
    qemu-system-x86 linux-source-6.1 bc flex bison libelf-dev libssl-dev make gcc
    erofs-utils e2fsprogs busybox-static xz-utils
    $(cat "$repo"/scripts/packages.d/*.txt 2>/dev/null | grep -v '^#' || true)
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Rust targets: a static musl agent, the bare-metal test guest, wasm plugins.
installed_targets="$(rustup target list --installed)"
for t in x86_64-unknown-linux-musl x86_64-unknown-none wasm32-wasip2; do
    grep -qx "$t" <<<"$installed_targets" || { say "adding rust target $t"; rustup target add "$t" >&2; }
done

# 3. The guest kernel (cached by a hash of its config; ~11 min on 2 cores when cold).
kernel_dir="$("$repo/guest/kernel/build.sh")"

# 4. A third-party vsock device daemon, the alternative to skiff's own device models
#    on the QEMU backend (SKIFF_QEMU_DEVICES=qemu), kept to compare and as a fallback.
if [[ ! -x "$cache/tools/bin/vhost-device-vsock" ]]; then
    say "building vhost-device-vsock (~80 s)"
    cargo install --quiet --locked --root "$cache/tools" vhost-device-vsock@0.3.0 >&2
fi

# 4b. virtiofsd, the virtio-fs backend that serves `-v` shares and bundle root
#    filesystems on both backends (needs libcap-ng-dev and libseccomp-dev, above).
if [[ ! -x "$cache/tools/bin/virtiofsd" ]]; then
    say "building virtiofsd (~150 s)"
    cargo install --quiet --locked --root "$cache/tools" virtiofsd@1.14.0 >&2
fi

# 5. The agent (static, size-optimised) and the initramfs around it.
cargo build --quiet --profile guest -p skiff-agent --target x86_64-unknown-linux-musl
cargo build --quiet --release -p skiff-initramfs -p skiff-cli -p skiff-vmm
mkdir -p "$guest_dir"
"$CARGO_TARGET_DIR/release/skiff-mkinitramfs" \
    "$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/guest/skiff-agent" "$guest_dir/initramfs.cpio" >/dev/null
for f in bzImage vmlinux; do
    ln -sf "$kernel_dir/$f" "$guest_dir/$f"
done
say "guest ready in $guest_dir (kernel $(basename "$kernel_dir"))"
say "skiff is $CARGO_TARGET_DIR/release/skiff"
say "skiff-runtime (runc-compatible) is $CARGO_TARGET_DIR/release/skiff-runtime"
