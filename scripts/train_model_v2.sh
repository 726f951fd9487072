#!/usr/bin/env bash
# Model v2 (issue 19): the realistic synthetic dataset and one network trained on it, in the
# background, resumable.
#
#   NETWORK=concatenation|difference-weighting scripts/train_model_v2.sh [WORK]
#
# WORK defaults to ../runs/model-v2. The dataset (Dataset520, `synthesize --realistic`) is shared
# by both networks; each network has its own results folder under WORK/nnunet/results, so the two
# can train at once (start the second after the first has planned and preprocessed the dataset:
# WORK/nnunet/preprocessed/Dataset520_MSNewLesions/nnUNetPlans_cpu_3d_fullres exists). Neither
# pair of patients 01 and 03 is trained on (their scans are the hold-out anatomy): the real-pair
# figures of these models are leave-out figures. A new run starts from the shipped weights
# (the difference-weighting network from their adaptation, see model/networks), or from
# INITIAL_WEIGHTS (a checkpoint of the same network: the shipped fold_1, say); a run with a
# checkpoint resumes from it. ANATOMY_CACHE: another run's prepared anatomy, copied into WORK
# (HD-BET and the template registration of each scan, the same for every run). Safe to run again
# at any time.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-../runs/model-v2}"
NETWORK="${NETWORK:-concatenation}"
DATA="${OPEN_MS_DATA:-../shared/data/open_ms_data}"
EPOCHS="${EPOCHS:-12}"
PAIRS="${PAIRS:-24}"
PREPROCESSED_PAIRS="${PREPROCESSED_PAIRS:-6}"  # pairs per training scan made natively through segment (~40 s each)
ANNEAL="${ANNEAL:-3}"
LEARNING_RATE="${LEARNING_RATE:-0.002}"
THREADS="${THREADS:-1}"  # torch threads of this run (two runs share the 2 cores)
INITIAL_WEIGHTS="${INITIAL_WEIGHTS:-src/msnewlesions/model/weights/fold_0/checkpoint_final.pth}"
case "$NETWORK" in
  concatenation) TRAINER=nnUNetTrainerMSNewLesions ;;
  difference-weighting) TRAINER=nnUNetTrainerMSNewLesionsDifferenceWeighting ;;
  *) echo "NETWORK must be concatenation or difference-weighting" >&2; exit 1 ;;
esac
mkdir -p "$WORK"
if [ -n "${ANATOMY_CACHE:-}" ] && [ ! -d "$WORK/anatomy" ]; then
  cp -r "$ANATOMY_CACHE" "$WORK/anatomy.partial" && mv "$WORK/anatomy.partial" "$WORK/anatomy"
fi
FOLD="$WORK/nnunet/results/Dataset520_MSNewLesions/${TRAINER}__nnUNetPlans_cpu__3d_fullres/fold_0"
if [ -f "$FOLD/checkpoint_latest.pth" ] || [ -f "$FOLD/checkpoint_final.pth" ]; then
  OPTIONS="--resume"
else
  OPTIONS="--initial-weights $(realpath "$INITIAL_WEIGHTS") --learning-rate $LEARNING_RATE"
fi
LOG="$WORK/train-$NETWORK.log"
setsid nohup env OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" bash -c "
  .venv/bin/msnewlesions synthesize --open-ms-data '$DATA' --out '$WORK/raw' --cache '$WORK/anatomy' \
    --id 520 --pairs $PAIRS --holdout-pairs 4 --preprocessed-pairs $PREPROCESSED_PAIRS --realistic &&
  .venv/bin/msnewlesions train --dataset '$WORK/raw/Dataset520_MSNewLesions' --fold 0 \
    --work '$WORK/nnunet' --config cpu --network $NETWORK --epochs $EPOCHS --iterations 250 \
    --validation-iterations 20 --checkpoint-every 1 --anneal-epochs $ANNEAL $OPTIONS
" >> "$LOG" 2>&1 < /dev/null &
echo "training $NETWORK in the background (pid $!); log: $LOG"
