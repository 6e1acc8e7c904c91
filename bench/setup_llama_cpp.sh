#!/usr/bin/env bash
# llama.cpp's native server as a benchmark peer, built from the llama.cpp that PyPI's
# llama-cpp-python sdist vendors (the hub and GitHub may be out of reach; PyPI is not), with
# the packaged all-MiniLM-L6-v2 converted to a bf16 GGUF by llama.cpp's own converter.
# Writes bench/.llama-cpp/{llama-server,minilm-bf16.gguf}; bench/run.py uses them when present.
# About 7 minutes on 2 cores; needs cmake, ninja and a C++ compiler.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${LLAMA_CPP_DIR:-$here/.llama-cpp}"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
python="${PYTHON:-$here/../.venv/bin/python}"
mkdir -p "$out"
cd "$out"
if [ ! -x llama-server ]; then
  rm -rf src && mkdir src
  # Only this package from source: `--no-binary :all:` would build every build tool too.
  "$python" -m pip download -q --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$version" -d src
  tar -xzf src/llama_cpp_python-"$version".tar.gz -C src
  tree="src/llama_cpp_python-$version/vendor/llama.cpp"
  # The two UI flags keep the build from downloading a web UI; native: this CPU's own kernels.
  cmake -S "$tree" -B src/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF > build.log
  cmake --build src/build -j"$(nproc)" --target llama-server >> build.log
  cp src/build/bin/llama-server .
fi
if [ ! -f minilm-bf16.gguf ]; then
  tree="$(ls -d src/llama_cpp_python-*/vendor/llama.cpp | head -1)"
  # The converter pins its own stack (transformers 4.x, protobuf < 5): a venv of its own.
  if [ ! -x venv/bin/python ]; then
    "$python" -m venv venv
    venv/bin/pip install -q torch==2.13.0 "transformers>=4.57,<4.58" "numpy>=2.2,<2.3" \
      sentencepiece "protobuf<5" safetensors "$tree/gguf-py"
  fi
  folder="$("$python" -c 'from embedserve.models.source import resolve; print(resolve(None).files)')"
  venv/bin/python "$tree/convert_hf_to_gguf.py" "$folder" --outtype bf16 --outfile minilm-bf16.gguf
fi
echo "llama.cpp's server and the bf16 GGUF are in $out"
