#!/bin/sh
# Builds the test guest and prints the path of its ELF (what skiff-vmm --kernel takes).
# Needs: rustup target add x86_64-unknown-none
set -eu
here=$(cd "$(dirname "$0")" && pwd)
target_dir=${CARGO_TARGET_DIR:-$here/target}
cd "$here"
cargo build --release --quiet --target-dir "$target_dir" >&2
echo "$target_dir/x86_64-unknown-none/release/skiff-testguest"
