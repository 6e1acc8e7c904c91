#!/usr/bin/env bash
# Qdrant's FastEmbed for bench/embed_job.py, in its own venv (it wants a newer huggingface-hub
# than sentence-transformers here).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${FASTEMBED_VENV:-$here/.venv-fastembed}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q "fastembed==0.9.1"
echo "FastEmbed installed in $venv"
