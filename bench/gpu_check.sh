#!/usr/bin/env bash
# The GPU checks of one lent machine in one call (under 8 minutes on an H200): the CUDA tests,
# then the figures bench/README.md asks for, printed, each step under its own time limit.
#
#   1. the CUDA tests: runs trained together agree with runs alone (test_fused_cuda.py), the memory
#      estimates cover what jobs reserve (test_packing_cuda.py), the data holder lends device memory
#      that jobs train on as on their own copy (test_resident_cuda.py)
#   2. one run against the plain DataLoader loop: cnn8, CIFAR-10-shaped data (bench_trainer.py)
#   3. time per CIFAR-10 run of the paper's recipe, fp32 and bf16 (paper_run.py)
#   4. a sweep of 8 cnn8 runs three ways: sequential, packed, fused (sweep_modes.py), and the
#      Table 2 sweep (135 runs × 120 epochs) extrapolated from it
#   5. what a job spends to get CIFAR-10 onto the device: its own copy against the holder's (resident_data.py)
#
# Here, once, with network:   bash bench/fetch_wheels.sh .venv/bin/python   (the wheels → .whl/)
# On the GPU machine:          bash bench/gpu_check.sh        (the device tool's run, carry [".whl"])
# Rehearsal on this CPU:       bash bench/gpu_check.sh --cpu  (tiny sizes, only the packages the GPU
#                              machine has: bench/device_imports.py refuses any other import)
# PYTHON names the interpreter (default: python3). Figures also go to $OUT/gpu_check.log if OUT is set.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
cpu=false
[[ "${1:-}" == "--cpu" ]] && cpu=true
log=${OUT:-/tmp}/gpu_check.log
: > "$log"
export PYTHONUNBUFFERED=1 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1

if ! "$python" -c "import pydantic, redis" 2>/dev/null; then
    [[ -d .whl ]] || { echo "no .whl/ here: run bench/fetch_wheels.sh where there is network, and carry .whl" >&2; exit 2; }
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/noisyfit-site \
        .whl/*.whl || exit 2
    export PYTHONPATH=/tmp/noisyfit-site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

failed=0
scale=1  # the limits are the GPU's; the CPU rehearsal gets four times as long
$cpu && scale=4
step() {  # step SECONDS TITLE COMMAND...: one step, its output to the console and the log
    local limit=$(($1 * scale)) title=$2
    shift 2
    echo "== $title" | tee -a "$log"
    local started=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    local code=${PIPESTATUS[0]}
    echo "== $title: exit $code after $((SECONDS - started)) s" | tee -a "$log"
    [[ $code == 0 ]] || failed=1
}

if $cpu; then
    run=("$python" bench/device_imports.py)
    device=cpu
    bench_trainer=(--train-size 256 --rounds 1)
    paper_run=(--epochs 1 --train-size 128 --test-size 64)
    sweep=(--runs 2 --train-size 128 --test-size 32 --epochs 1 --procs 2)
    resident=(--per-batch 200 --test-size 100 --jobs 2)
else
    run=("$python")
    device=cuda
    bench_trainer=(--train-size 20000 --rounds 2 --workers 8)
    paper_run=(--epochs 3)
    sweep=(--runs 8 --train-size 25000 --test-size 5000 --epochs 1 --procs 4)
    resident=(--jobs 5)
    step 30 "device" nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
"$python" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$log"

step 130 "CUDA tests" "${run[@]}" -m pytest tests/engine/test_fused_cuda.py tests/engine/test_packing_cuda.py \
    tests/engine/test_resident_cuda.py -q -rs --noconftest -p no:cacheprovider -p pytest_timeout
step 90 "one run against the DataLoader loop (cnn8, CIFAR-10-shaped)" \
    "${run[@]}" bench/bench_trainer.py --dataset cifar10-synthetic --device $device "${bench_trainer[@]}"
step 70 "time per CIFAR-10 run of the paper's recipe" "${run[@]}" bench/paper_run.py --device $device "${paper_run[@]}"
step 150 "sweep: sequential, packed, fused" \
    "${run[@]}" bench/sweep_modes.py --dataset cifar10-synthetic --device $device "${sweep[@]}" --table2
step 30 "images onto the device: a job's own copy, lent by the data holder" \
    "${run[@]}" bench/resident_data.py --device $device "${resident[@]}"
echo "gpu_check: $([[ $failed == 0 ]] && echo "every step passed" || echo "SOME STEP FAILED") (log: $log)" | tee -a "$log"
exit $failed
