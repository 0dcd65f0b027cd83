#!/usr/bin/env bash
# Optional peer for bench/gateway_overhead.py: LiteLLM's proxy in its own environment (its pins
# clash with ours). The benchmark picks it up from var/litellm-venv when present.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv var/litellm-venv
var/litellm-venv/bin/pip install -q 'litellm[proxy]'
