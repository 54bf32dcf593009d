#!/usr/bin/env bash
# Every GPU measurement the docs wait for, in one short run (about 8 minutes on one H100): the GPU tests,
# Wan's memory under budgets, and the DiT forward against diffusers with each attention kernel, eager and
# compiled. Run from the repository root on a machine with CUDA; results go to $OUT (or ./gpu-results).
# The packages the pack needs beyond PyTorch (av, kornia, diffusers, sageattention) are installed from
# wheels in .whl when there is no network: docs/development.md says how to fetch them.
set -uo pipefail
out="${OUT:-gpu-results}"
mkdir -p "$out"
scratch="$(mktemp -d)"
if [ -d .whl ]; then  # wheels carried for a machine without network
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$scratch/site" .whl/*.whl
fi
ln -s "$PWD" "$scratch/spacetime"  # the repository root is the package
export PYTHONPATH="$scratch:$scratch/site:${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
timeout 120 python3 -m pytest tests/test_attention.py tests/test_streaming.py -q -p no:cacheprovider 2>&1 | tail -15 | tee "$out/tests.txt"
timeout 240 python3 benchmarks/gpu_memory.py --models 14B 5B --budgets 12 16 24 0 --dtypes fp8 bf16 2>&1 | tee "$out/gpu_memory.md"
for attention in sdpa auto; do
    timeout 150 python3 benchmarks/dit_forward.py --device cuda --layers 30 --frames 81 --dtype bf16 --rounds 1 \
        --repeats 3 --attention "$attention" --compile 2>&1 | tee "$out/dit_forward_$attention.md"
done
