#!/usr/bin/env bash
# Infinity for the benchmark, in its own venv (it pins numpy<2 and sentence-transformers<4).
# torch is pinned to the release the project uses, so no multi-GB CUDA build is pulled.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${INFINITY_VENV:-$here/.venv-infinity}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q "infinity-emb[server,torch]==0.0.77" -c "$here/infinity-constraints.txt"
echo "Infinity installed in $venv"
