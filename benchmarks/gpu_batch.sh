#!/usr/bin/env bash
# Every GPU measurement the open issues still need, in one device call with a time cap per part
# (device time is scarce: machine starts often fail, so one full call beats several small ones).
# Usage on the GPU machine, from the repository root:
#
#     PYTHONPATH=$PWD bash benchmarks/gpu_batch.sh "$OUT" [parts...]
#
# parts (default: all, in this order):
#   layers   issue #15: Operator 1 per layer, fused/unfused vs cuDNN      (benchmarks/triton_layers.py)
#   oplat    issue #15: stacked conv and sampled operators, fwd and fwd+bwd (benchmarks/operator_latency.py)
#   e2e      issue #15: ResNet-18 end to end with Operator 1, Triton, bf16  (benchmarks/end_to_end.py)
#   gputest  issue #15: the 200-operator fp32/bf16 GPU correctness test    (pytest -m gpu)
#   space    issues #16/#21: the resnet18 space's speed distribution        (benchmarks/space_speed.py, resumable)
#   before   issue #21: the same with the min-MAC planner of before, first operators
#   objective issue #16: --objective speed vs accuracy                      (benchmarks/objective_speed.py)
#   ncu      issue #15: Nsight Compute per-kernel time/bytes, conv vs ours   (benchmarks/profile_layer.py)
#   notune   issue #18: no tuning inside forward on CUDA                     (pytest -m gpu)
# Knobs (environment): SPACE_COUNT, SPACE_WALL, SPACE_COMPILED, OBJ_BUDGET (seconds, both searches).
# Each part writes under $OUT/<part>/ and its log to $OUT/<part>.log; a part that fails or runs out
# of time does not stop the others.
#
# The device image has torch/Triton but not pydantic (and its three helpers): carry them as wheels.
# Once, here:  echo /.whl/ >> .git/info/exclude; python3 -m pip download --no-deps --only-binary=:all: \
#   --python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64 -d .whl \
#   pydantic==2.13.4 pydantic_core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 typing_extensions==4.15.0
# and name .whl in the call's carry; this script installs them into /tmp/site.
# Measured on an H100 (2026-12-07): space (cost planner, 200 operators, N=1 and 128, 4 compiled)
# ~400 s; the "before" planner ~4 s per operator (out-of-memory plans included).
set -u
OUT=${1:?usage: gpu_batch.sh OUT [parts...]}
shift
PARTS=${*:-layers oplat e2e gputest space objective}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=${PYTHONPATH:-$PWD}:/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt"

part() {  # part NAME SECONDS COMMAND...
    local name=$1 secs=$2
    shift 2
    mkdir -p "$OUT/$name"
    echo "== $name (cap ${secs}s): $*" | tee -a "$OUT/summary.txt"
    local t0=$SECONDS
    timeout "$secs" "$@" >"$OUT/$name.log" 2>&1
    echo "== $name: exit $? after $((SECONDS - t0))s" | tee -a "$OUT/summary.txt"
    tail -n 25 "$OUT/$name.log"
}

for p in $PARTS; do
    case $p in
    layers)
        for L in 64@56 128@28 256@14 512@7; do
            part "layers-$L" 125 python benchmarks/triton_layers.py --layer "$L" --batches 128,1 --tune-budget 30
        done ;;
    oplat)
        part oplat 420 python benchmarks/operator_latency.py --triton only --ops operator1 stacked_conv \
            --sampled 2 --tune-budget 10 --out "$OUT/oplat/oplat.json" ;;
    e2e)
        part e2e 540 python benchmarks/end_to_end.py --device cuda --models resnet18 --batches 1,128 \
            --backends inductor --operators operator1 --impls codegen --codegen-implementation triton:min \
            --dtype bf16 --channels-last --pretune 8 --time-budget 480 --out "$OUT/e2e" ;;
    gputest)
        part gputest 420 python -m pytest -m gpu -x -q tests/codegen/test_triton_gpu.py ;;
    space)  # the shipped sample (sampling 200 on the device's CPU would cost minutes of device time)
        mkdir -p "$OUT/space" && cp benchmarks/data/operators-resnet18-0.jsonl "$OUT/space/"
        part space $((${SPACE_WALL:-400} + 60)) python benchmarks/space_speed.py --out "$OUT/space" --planner cost \
            --count "${SPACE_COUNT:-200}" --implementation fast:min --compiled-count "${SPACE_COMPILED:-4}" \
            --wall "${SPACE_WALL:-400}" ;;
    before)  # the min-MAC planner of before #21 on the first operators of the same sample
        mkdir -p "$OUT/before" && cp benchmarks/data/operators-resnet18-0.jsonl "$OUT/before/"
        part before 130 python benchmarks/space_speed.py --out "$OUT/before" --planner macs --count 200 \
            --implementation fast:min --compiled-count 0 --modes eager --wall 100 ;;
    objective)
        part objective $((${OBJ_BUDGET:-350} + 50)) python benchmarks/objective_speed.py --gpu --evals 30 \
            --implementation fast:min --budget-s "${OBJ_BUDGET:-350}" --out "$OUT/objective/objective_speed.json" ;;
    ncu)
        for L in 64@56 512@7; do
            part "ncu-$L" 100 ncu --profile-from-start off --clock-control none --csv \
                --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed \
                python benchmarks/profile_layer.py --layer "$L" --batch 128 --tune-budget 15
            python benchmarks/profile_layer.py --summarize "$OUT/ncu-$L.log" --layer "$L" --batch 128 | tee "$OUT/ncu-$L.md"
        done ;;
    notune)
        part notune 120 python -m pytest -m gpu -x -q tests/codegen/test_no_tuning_in_forward.py tests/codegen/test_gpu.py ;;
    *)
        echo "unknown part $p" >&2 ;;
    esac
done
