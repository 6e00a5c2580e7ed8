#!/usr/bin/env bash
# The CUDA path on one GPU, in a few minutes: the test suite's CUDA tests (bf16 and compiled
# training, resume across devices, CPU/GPU agreement, the CILP stages, torchrun on NCCL), then the GPU benchmark;
# one table at the end. Needs torch with CUDA; FiftyOne is not needed.
#
#     bash benchmarks/gpu_check.sh            # PYTHON=... to choose the interpreter
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
junit=$(mktemp --suffix .xml)
shim=$(mktemp -d)
trap 'rm -rf "$junit" "$shim"' EXIT
if ! "$PYTHON" -c "import cilp_plugin" 2>/dev/null; then  # not installed (a GPU image's python): the checkout's
    ln -s "$PWD/plugin" "$shim/cilp_plugin"
    export PYTHONPATH="$shim:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

"$PYTHON" -m pytest -q -m cuda tests/mm_models/test_mm_cuda.py tests/mm_models/test_mm_streaming.py \
    tests/mm_models/test_mm_distributed.py -p no:cacheprovider --junitxml "$junit"
tests=$?
"$PYTHON" benchmarks/bench_gpu.py --junit "$junit"
bench=$?
exit $(( tests || bench ))
