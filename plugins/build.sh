#!/bin/sh
# Build the plugin SDK, the example plugins and the test plugins as WebAssembly
# components (wasm32-wasip2, release) and copy them into one directory, whose path is
# printed as the last line of output. Needs: rustup target add wasm32-wasip2.
#
# Environment:
#   SKIFF_PLUGINS_TARGET_DIR  cargo target dir (default: plugins/target)
#   SKIFF_PLUGINS_OUT         output directory (default: <target dir>/components)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
target_dir=${SKIFF_PLUGINS_TARGET_DIR:-$here/target}
out=${SKIFF_PLUGINS_OUT:-$target_dir/components}

# A caller's cargo environment (e.g. host tests running this script) must not leak in.
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_MANIFEST_DIR

cargo build --quiet --release --target wasm32-wasip2 \
    --manifest-path "$here/Cargo.toml" --target-dir "$target_dir" >&2

mkdir -p "$out"
for crate in image-allowlist tenant-limits env-injector audit-logger scripted hostile; do
    name=$(echo "$crate" | tr - _)
    cp "$target_dir/wasm32-wasip2/release/$name.wasm" "$out/$crate.wasm.tmp"
    mv "$out/$crate.wasm.tmp" "$out/$crate.wasm"
done
echo "$out"
