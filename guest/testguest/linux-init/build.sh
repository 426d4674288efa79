#!/bin/sh
# Builds the Linux test init (static, musl) and prints the path of the binary.
# Needs: rustup target add x86_64-unknown-linux-musl
set -eu
here=$(cd "$(dirname "$0")" && pwd)
target_dir=${CARGO_TARGET_DIR:-$here/target}
cd "$here"
cargo build --release --quiet --target x86_64-unknown-linux-musl --target-dir "$target_dir" >&2
echo "$target_dir/x86_64-unknown-linux-musl/release/skiff-linux-testinit"
