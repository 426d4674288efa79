#!/usr/bin/env bash
# Installs schemathesis (PyPI) into a venv cached under ~/.cache/skiff and prints the
# path of its executable. tests/daemon.rs runs it against crates/daemon/openapi.yaml
# and a live skiffd (found through $SKIFF_SCHEMATHESIS, which scripts/test.sh sets).
set -euo pipefail
version=4.32.5
cache="${SKIFF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff}"
venv="$cache/schemathesis-$version"
if [[ ! -x "$venv/bin/schemathesis" ]]; then
    rm -rf "$venv.partial"
    python3 -m venv "$venv.partial" >&2
    "$venv.partial/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version" >&2
    # The venv's scripts name their interpreter by absolute path: fix it up on rename.
    sed -i "1s|$venv.partial|$venv|" "$venv.partial"/bin/schemathesis "$venv.partial"/bin/st 2>/dev/null || true
    sed -i "s|$venv.partial|$venv|g" "$venv.partial"/bin/activate "$venv.partial"/pyvenv.cfg 2>/dev/null || true
    mv "$venv.partial" "$venv"
fi
echo "$venv/bin/schemathesis"
