#!/usr/bin/env bash
# Prepare, on the development machine, what bench/gpu.sh needs on a GPU machine that reaches no
# registry: the Python packages its image lacks, as wheels for its Python 3.12, and the five
# music excerpts of bench/vocoder.py (the Debian package is not there). Writes .gpu/ (ignored
# by git, ~47 MB: the device tool carries at most 64 MiB a call). Then, with the device tool:
#   run(command="bash bench/gpu.sh", carry=[".gpu"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu/wheels
# Versions this project is tested with here; the GPU image already has torch, transformers,
# huggingface-hub, safetensors, numpy, scipy, pillow, PyYAML and prometheus-client.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/wheels diffusers==0.42.1 av==18.1.0 pyloudnorm==0.2.0 python-osc==1.10.2 \
  soundfile==0.14.0 sounddevice==0.5.6 cffi==2.0.0 pycparser==3.0
python3 bench/vocoder.py --save-excerpts .gpu/excerpts.npz
du -sh .gpu
