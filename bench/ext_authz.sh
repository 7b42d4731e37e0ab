#!/usr/bin/env bash
# Envoy-through ext_authz benchmark (see bench/ext_authz.py). Installs wrk and the compliance
# venv (with Envoy) if missing, builds release binaries, prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ESM_TEST_VENV:-target/compliance-venv}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/compliance/requirements.txt
fi
cargo build --release --locked --bin esm
cargo build --release --locked -p esm-authz --example noop_authz
exec "$VENV/bin/python" bench/ext_authz.py
