#!/usr/bin/env bash
# Model v2, leave one real pair out (issue 19, item 4): model v2's realistic synthetic pairs plus
# ONE of the two complete real pairs (its new/enlarging lesions, named COPIES times in the
# split), trained in the background, resumable. The model is then scored on the other pair:
#
#   LEFT_OUT=patient01 scripts/train_model_v2_leave_one_out.sh [WORK]   # trains with patient03
#   LEFT_OUT=patient03 scripts/train_model_v2_leave_one_out.sh [WORK]   # trains with patient01
#   .venv/bin/python benchmarks/accuracy.py --skip-synthetic --patient patient01 \
#       --model WORK/nnunet/results/Dataset521_MSNewLesions/nnUNetTrainerMSNewLesions__nnUNetPlans_cpu__3d_fullres
#
# It needs model v2's dataset and concatenation run (scripts/train_model_v2.sh, same WORK): the
# synthetic pairs are not drawn again (the raw and preprocessed cases are hard links to
# Dataset520's, with the same plans), and the run starts from that run's final weights.
# Dataset 521 leaves patient01 out, 523 patient03. Safe to run again at any time.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$(realpath -m "${1:-../runs/model-v2}")"
LEFT_OUT="${LEFT_OUT:?LEFT_OUT=patient01 or patient03}"
DATA="${OPEN_MS_DATA:-../shared/data/open_ms_data}"
EPOCHS="${EPOCHS:-6}"
ANNEAL="${ANNEAL:-2}"
COPIES="${COPIES:-30}"  # 30 of 210 names: about one training sample in seven is the real pair
LEARNING_RATE="${LEARNING_RATE:-0.002}"
THREADS="${THREADS:-1}"
case "$LEFT_OUT" in
  patient01) JOINED=patient03; ID=521 ;;
  patient03) JOINED=patient01; ID=523 ;;
  *) echo "LEFT_OUT must be patient01 or patient03" >&2; exit 1 ;;
esac
TRAINER=nnUNetTrainerMSNewLesions
SOURCE_RAW="$WORK/raw/Dataset520_MSNewLesions"
SOURCE_PRE="$WORK/nnunet/preprocessed/Dataset520_MSNewLesions"
SOURCE_WEIGHTS="$WORK/nnunet/results/Dataset520_MSNewLesions/${TRAINER}__nnUNetPlans_cpu__3d_fullres/fold_0/checkpoint_final.pth"
RAW="$WORK/raw/Dataset${ID}_MSNewLesions"
PRE="$WORK/nnunet/preprocessed/Dataset${ID}_MSNewLesions"
for needed in "$SOURCE_RAW/splits_final.json" "$SOURCE_PRE/nnUNetPlans_cpu.json" "$SOURCE_WEIGHTS"; do
  [ -e "$needed" ] || { echo "$needed is missing: run scripts/train_model_v2.sh first" >&2; exit 1; }
done
if [ ! -d "$RAW" ]; then
  cp -al "$SOURCE_RAW" "$RAW.partial" && mv "$RAW.partial" "$RAW"
fi
if [ ! -d "$PRE" ]; then
  rm -rf "$PRE.partial"
  cp -al "$SOURCE_PRE" "$PRE.partial"
  # Files written again later are unlinked first, so that nothing writes through a hard link into
  # Dataset520; the plans name their dataset (nnU-Net finds the preprocessed folder by it).
  rm "$PRE.partial/splits_final.json" "$PRE.partial/dataset.json"
  for plans in nnUNetPlans nnUNetPlans_cpu; do
    sed "s/Dataset520_MSNewLesions/Dataset${ID}_MSNewLesions/" "$SOURCE_PRE/$plans.json" > "$PRE.partial/$plans.json.new"
    rm "$PRE.partial/$plans.json" && mv "$PRE.partial/$plans.json.new" "$PRE.partial/$plans.json"
  done
  mv "$PRE.partial" "$PRE"
fi
FOLD="$WORK/nnunet/results/Dataset${ID}_MSNewLesions/${TRAINER}__nnUNetPlans_cpu__3d_fullres/fold_0"
if [ -f "$FOLD/checkpoint_latest.pth" ] || [ -f "$FOLD/checkpoint_final.pth" ]; then
  OPTIONS="--resume"
else
  OPTIONS="--initial-weights $SOURCE_WEIGHTS --learning-rate $LEARNING_RATE"
fi
LOG="$WORK/train-leave-out-$LEFT_OUT.log"
# The synthetic cases are all there already: synthesize only adds the real pair and the split.
setsid nohup env OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" bash -c "
  .venv/bin/msnewlesions synthesize --open-ms-data '$DATA' --out '$WORK/raw' --cache '$WORK/anatomy' \
    --id $ID --pairs 24 --holdout-pairs 4 --preprocessed-pairs 6 --realistic \
    --real-pair $JOINED --real-pair-copies $COPIES &&
  .venv/bin/msnewlesions train --dataset '$RAW' --fold 0 \
    --work '$WORK/nnunet' --config cpu --network concatenation --epochs $EPOCHS --iterations 250 \
    --validation-iterations 20 --checkpoint-every 1 --anneal-epochs $ANNEAL $OPTIONS
" >> "$LOG" 2>&1 < /dev/null &
echo "training without $LEFT_OUT (with $JOINED's real pair) in the background (pid $!); log: $LOG"
