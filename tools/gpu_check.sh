#!/usr/bin/env bash
# The checks that need a GPU (issue 27), as one prepared run for a session that is
# lent a machine with one (the tool library's `device`): from the repository root,
#
#   run(command="bash tools/gpu_check.sh", timeout_s=570)
#
# The device image holds torch, lightning, tensorboard and pytest; this tree is put on
# the path instead of being installed. Figures and test results go to stdout and to
# $OUT/gpu_check.txt. About 6 minutes on an H100.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/tests/support${PYTHONPATH:+:$PYTHONPATH}"
log="${OUT:-/tmp}/gpu_check.txt"
{
    echo "== device"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
    echo "== CUDA tests (marked cuda)"
    tests=(tests/flows/test_cuda.py tests/test_metrics_on_device.py tests/writing/test_record_on_device.py)
    # pytorch-ood (the head detectors' reference) is not in the device image: carry it,
    # e.g. `cp -r .venv/lib/python3.11/site-packages/pytorch_ood .gpu_extras/` here and
    # run with carry=[".gpu_extras"]; without it that file is left out, and said so.
    export PYTHONPATH="$PWD/.gpu_extras:$PYTHONPATH"
    if python3 -c "import pytorch_ood" 2>/dev/null; then
        tests+=(tests/test_head_detectors.py)
    else
        echo "(pytorch_ood missing: tests/test_head_detectors.py left out)"
    fi
    timeout 240 python3 -m pytest -q -p no:cacheprovider -m cuda -o addopts="" "${tests[@]}"
    echo "== the record's computation on the GPU (target <= 1 s), and on this machine's CPU"
    timeout 150 python3 benchmarks/bench_record.py --device cuda --repeats 3
    timeout 120 python3 benchmarks/bench_record.py --device cpu --repeats 1
    echo "== the loop held by a recorded epoch, on CUDA (target <= 5 % of bare validation)"
    timeout 150 python3 benchmarks/bench_blocked.py --models cnn --device cuda --epochs 5 --repeats 2
} 2>&1 | tee "$log"
