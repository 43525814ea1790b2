#!/usr/bin/env bash
# The GPU check-and-benchmark run, in one call on a fresh GPU machine without network:
#   1. makes what tron needs importable, installing missing packages only from carried wheels (.whl/);
#   2. runs the CUDA tests (pytest -m cuda: CUDA equals CPU, bf16, row-sparse optimisers, --compile, no sync
#      inside a step, evaluate/recommend ranks, ONNX parity);
#   3. runs the benchmarks (benchmarks/gpu.py) on synthetic data made there, at OTTO's 1.8M items;
# prints one table and writes gpu.json, gpu.md and tests.log to $OUT (default: ./gpu-out). Under 8 minutes.
#
#   benchmarks/gpu.sh              # on a CUDA machine
#   benchmarks/gpu.sh --dry-run    # anywhere: CUDA steps skipped, tiny sizes on the CPU (CI runs this)
#
# The image it was written for has torch, numpy, pyarrow, safetensors, click, rich, filelock, pytest,
# hypothesis and onnxruntime, and that is all it needs: nothing has to be carried. A package that is missing
# elsewhere can travel as a wheel in .whl/ (pip download --no-deps --only-binary=:all: -d .whl NAME==VERSION).
set -euo pipefail
started=$(date +%s)
cd "$(dirname "$0")/.."
dry=()
if [[ "${1:-}" == "--dry-run" ]]; then
    dry=(--dry-run)
elif [[ $# -gt 0 ]]; then
    echo "usage: benchmarks/gpu.sh [--dry-run]" >&2
    exit 2
fi
out=${OUT:-$PWD/gpu-out}
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

needed=(torch numpy pyarrow safetensors click rich filelock pytest onnxruntime)
missing=$("$python" -c 'import importlib.util, sys; print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))' "${needed[@]}")
if [[ -n "$missing" ]]; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        echo "installing from .whl/ (offline) for: $missing"
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/tron-site .whl/*.whl
        export PYTHONPATH="/tmp/tron-site:$PYTHONPATH"
    else
        echo "missing: $missing; carry their wheels in .whl/ (see the head of this script)" >&2
        exit 1
    fi
fi

tests=()
if [[ ${#dry[@]} -eq 0 ]]; then
    "$python" -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/tests.log" || true
    tests=(--tests "$out/tests.log")
fi
"$python" benchmarks/gpu.py "${dry[@]}" "${tests[@]}" --out "$out" --started "$started"
if [[ ${#dry[@]} -eq 0 ]] && grep -Eq "[0-9]+ (failed|error)" "$out/tests.log"; then
    echo "CUDA tests failed: see $out/tests.log" >&2
    exit 1
fi
