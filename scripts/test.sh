#!/usr/bin/env bash
# The test command: sets the machine up (scripts/setup.sh), then checks formatting and
# lints and runs every test. With SKIFF_REQUIRE_ALL=1 a test whose prerequisites this
# machine can have but lacks fails instead of skipping; only tests that need
# hardware-backed KVM may skip here, and they say so.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
cache="${SKIFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
export SKIFF_REQUIRE_ALL=1
step() { echo "== $* ($(date +%T))" >&2; }

step setup
scripts/setup.sh

# Artifacts other parts of the project build for their tests.
if [[ -x guest/testguest/build.sh ]]; then
    step "test guest"
    SKIFF_TESTGUEST="$(guest/testguest/build.sh)"
    export SKIFF_TESTGUEST
fi
if [[ -x plugins/build.sh ]]; then
    step "example plugins"
    SKIFF_PLUGINS_DIR="$(plugins/build.sh)"
    export SKIFF_PLUGINS_DIR
fi

# skiffd's API is fuzzed against crates/daemon/openapi.yaml by schemathesis (PyPI),
# installed into a venv cached under ~/.cache/skiff; tests/daemon.rs finds it here.
step "schemathesis (for tests/daemon.rs)"
SKIFF_SCHEMATHESIS="$(scripts/schemathesis.sh)"
export SKIFF_SCHEMATHESIS

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "plugins workspace (wasm32-wasip2): fmt and clippy"
(cd plugins && cargo fmt --all --check && cargo clippy --quiet --release --target wasm32-wasip2 --all-targets -- -D warnings)
step "test guest (x86_64-unknown-none): fmt and clippy"
(cd guest/testguest && cargo fmt --all --check && cargo clippy --quiet --release --target x86_64-unknown-none -- -D warnings)
# tests/ run the debug binaries beside the test executables (skiff, skiff-runtime,
# skiffd, skiff-vmm); cargo test does not build other packages' bins, so a fresh machine
# would have none of them.
step "build skiff, skiff-runtime, skiffd and skiff-vmm for the tests"
cargo build --quiet -p skiff-cli -p skiff-daemon -p skiff-vmm --bins
step "cargo test"
cargo test --workspace --no-fail-fast 2>&1 | tee "$cache/last-test.log"
# The QEMU backend runs on skiff's own device models by default; check that the
# built-in alternative still boots the same guests.
step "cargo test: slice on QEMU's built-in devices"
SKIFF_QEMU_DEVICES=qemu cargo test -p skiff-tests --test vm -- exit_codes writable_layer whiteout 2>&1 | tee -a "$cache/last-test.log"
# Tests that need hardware-backed KVM skip on PVM hosts; show their reasons instead of
# letting the harness swallow them.
step "hardware-KVM tests (their skip reasons, if any)"
cargo test -q -p skiff-vmm --test linux_boot -- --nocapture 2>&1 | grep -E "SKIP|test result" || true
step "done"
