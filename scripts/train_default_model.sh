#!/usr/bin/env bash
# Build the synthetic dataset and train the default model (cpu plans) in the background.
#
#   scripts/train_default_model.sh [WORK]      (WORK defaults to ../work/default_model)
#
# Safe to run again at any time: the dataset resumes where it stopped, and training continues from
# checkpoint_latest.pth (epoch counter, optimizer and learning-rate rule included). The process is
# detached (setsid + nohup), so it outlives the shell that started it; progress goes to
# WORK/train.log and nnU-Net's own log beside the checkpoints. It needs ../shared/data/open_ms_data.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-../work/default_model}"
DATA="${OPEN_MS_DATA:-../shared/data/open_ms_data}"
EPOCHS="${EPOCHS:-40}"
PAIRS="${PAIRS:-24}"   # synthetic training pairs per training scan (the shipped model: 12 up to
                       # epoch 24, then 24; a larger number extends the dataset)
PREPROCESSED_PAIRS="${PREPROCESSED_PAIRS:-0}"  # more pairs per training scan, made as segment
                                              # sees them (registration, HD-BET, N4, slice
                                              # matching: ~30 s each)
ANNEAL="${ANNEAL:-6}"  # the last epochs at the learning rate / 5
LEARNING_RATE="${LEARNING_RATE:-}"  # set: continue at this rate from the next epoch (lower, to
                                    # fine-tune a run whose loss has flattened)
INITIAL_WEIGHTS="${INITIAL_WEIGHTS:-}"  # set (a checkpoint, e.g. the shipped model's): a run
                                        # without checkpoints starts from these weights
mkdir -p "$WORK"
FOLD="$WORK/nnunet/results/Dataset510_MSNewLesions/nnUNetTrainerMSNewLesions__nnUNetPlans_cpu__3d_fullres/fold_0"
OPTIONS=""
if [ -n "$LEARNING_RATE" ]; then OPTIONS="--learning-rate $LEARNING_RATE"; fi
if [ -f "$FOLD/checkpoint_latest.pth" ] || [ -f "$FOLD/checkpoint_final.pth" ]; then
  OPTIONS="$OPTIONS --resume"
elif [ -n "$INITIAL_WEIGHTS" ]; then
  OPTIONS="$OPTIONS --initial-weights $(realpath "$INITIAL_WEIGHTS")"
fi
setsid nohup bash -c "
  .venv/bin/msnewlesions synthesize --open-ms-data '$DATA' --out '$WORK/raw' --cache '$WORK/anatomy' \
    --pairs $PAIRS --preprocessed-pairs $PREPROCESSED_PAIRS &&
  .venv/bin/msnewlesions train --dataset '$WORK/raw/Dataset510_MSNewLesions' --fold 0 \
    --work '$WORK/nnunet' --config cpu --epochs $EPOCHS --iterations 250 \
    --validation-iterations 20 --checkpoint-every 1 --anneal-epochs $ANNEAL $OPTIONS
" >> "$WORK/train.log" 2>&1 < /dev/null &
echo "training in the background (pid $!); log: $WORK/train.log"
