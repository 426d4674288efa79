#!/usr/bin/env bash
# Builds skiff's guest kernel (vmlinux + bzImage) from Debian's linux-source-6.1 and
# this directory's config fragment. The result is cached outside the repository by a
# hash of (fragment, this script, kernel source package version), so an unchanged
# kernel is reused instantly. Prints the cache directory on stdout.
#
#   guest/kernel/build.sh            # build or reuse, print the output directory
#   SKIFF_CACHE=/some/dir guest/kernel/build.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SKIFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff}"
src_tar=/usr/src/linux-source-6.1.tar.xz

if [[ ! -f "$src_tar" ]]; then
    echo "error: $src_tar is missing; install it with: apt-get install linux-source-6.1 bc flex bison libelf-dev libssl-dev" >&2
    exit 1
fi
src_version="$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || stat -c %s "$src_tar")"
key="$( { cat "$here/config.fragment" "$here/build.sh"; echo "$src_version"; } | sha256sum | cut -c1-16)"
out="$cache/kernel/$key"

if [[ -f "$out/bzImage" && -f "$out/vmlinux" ]]; then
    echo "$out"
    exit 0
fi

# One build at a time per cache: a second caller waits, then finds the result.
mkdir -p "$cache/kernel"
exec 9>"$cache/kernel/.lock"
flock 9
if [[ -f "$out/bzImage" && -f "$out/vmlinux" ]]; then
    echo "$out"
    exit 0
fi

work="$cache/kernel/build-$key"
rm -rf "$work"
mkdir -p "$work"
echo "building guest kernel $key (linux-source $src_version) in $work; this takes ~11 min on 2 cores" >&2
tar -C "$work" -xf "$src_tar"
ksrc="$work/linux-source-6.1"
make -C "$ksrc" -s tinyconfig >&2
"$ksrc/scripts/kconfig/merge_config.sh" -m -O "$ksrc" "$ksrc/.config" "$here/config.fragment" >&2
make -C "$ksrc" -s olddefconfig >&2

# merge_config keeps going when a symbol silently stays off (EROFS_FS without
# MISC_FILESYSTEMS was one); refuse a kernel that lacks what the fragment asks for.
missing=0
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=y) grep -qx "$line" "$ksrc/.config" || { echo "error: $line did not stick in the final .config" >&2; missing=1; } ;;
    esac
done < "$here/config.fragment"
[[ $missing == 0 ]] || exit 1

make -C "$ksrc" -s -j"$(nproc)" vmlinux bzImage >&2
mkdir -p "$out.tmp"
cp "$ksrc/vmlinux" "$out.tmp/vmlinux"
cp "$ksrc/arch/x86/boot/bzImage" "$out.tmp/bzImage"
cp "$ksrc/.config" "$out.tmp/config"
rm -rf "$out"
mv "$out.tmp" "$out"
rm -rf "$work"
echo "$out"
