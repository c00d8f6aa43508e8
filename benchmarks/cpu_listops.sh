#!/usr/bin/env bash
# ListOps training on the CPU, one run per command, resumable across sessions.
#
#   benchmarks/cpu_listops.sh MODEL [SEED]
#       the paper's setting (ponet preset, 5,000 steps, one-cycle schedule with
#       1,000 warm-up steps), seed SEED (default 0), in runs/cpu_listops/
#       MODEL_seedSEED; finished, its results.json, metrics.jsonl and
#       config.json are copied to results/runs/cpu_listops/MODEL_seedSEED/,
#       with evaluations.jsonl: its best parameters tested again on 20,000
#       generated test examples (python -m lra_ponet.evaluate), and that
#       test's predictions (predictions_test_20000_*.npz).
#   STEPS=1000 benchmarks/cpu_listops.sh MODEL [SEED]
#       a shortened run for mixers too slow for 5,000 steps on a CPU: the same
#       schedule over 1,000 steps (warm-up 200, the same 20%), in
#       results/runs/cpu_listops_1000steps/. Its accuracy is not comparable
#       with a full run or with the paper.
#   DTYPE=bfloat16 benchmarks/cpu_listops.sh MODEL [SEED]
#       the same run with the model computing in bfloat16
#       (--config.model.dtype; parameters stay float32, and the PoNet mixer
#       and FNet's Fourier transform compute in float32 anyway), in
#       results/runs/cpu_listops_bfloat16/ (with STEPS,
#       cpu_listops_STEPSsteps_bfloat16/).
#
# Stopped (Ctrl-C, SIGTERM, a session's end) it saves a checkpoint; the same
# command resumes it and gives the same result as an uninterrupted run. A run
# whose results are already under results/ is skipped. Checkpoints every 250
# steps so that little is lost to a kill -9.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
MODEL="${1:?usage: benchmarks/cpu_listops.sh MODEL [SEED]}"
SEED="${2:-0}"
STEPS="${STEPS:-5000}"
DTYPE="${DTYPE:-float32}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [[ "$STEPS" == 5000 ]]; then
  GROUP=cpu_listops
  SCHEDULE=()
else
  GROUP="cpu_listops_${STEPS}steps"
  SCHEDULE=(--config.train_steps="$STEPS"
            --config.warmup_steps="$((STEPS / 5))")
fi
if [[ "$DTYPE" != float32 ]]; then
  GROUP="${GROUP}_$DTYPE"
fi
NAME="${MODEL}_seed${SEED}"
DONE="results/runs/$GROUP/$NAME"
if [[ -f "$DONE/results.json" ]]; then
  echo "$DONE/results.json exists; skipped"
  exit 0
fi
WORKDIR="runs/$GROUP/$NAME"
"$PYTHON" -m lra_ponet.run --task=listops --preset=ponet --model="$MODEL" \
  --config.seed="$SEED" --config.checkpoint_every=250 "${SCHEDULE[@]}" \
  --config.model.dtype="$DTYPE" \
  --workdir="$WORKDIR"
if [[ -f "$WORKDIR/results.json" ]]; then
  # 2,000 test examples leave one run's accuracy a standard error of about
  # 1.1 points; the best parameters are also tested on 20,000 (the first
  # 2,000 of them the official-size split, none seen in training).
  if ! compgen -G "$WORKDIR/predictions_test_20000_*.npz" > /dev/null; then
    "$PYTHON" -m lra_ponet.evaluate --workdir="$WORKDIR" \
      --config.generator.num_test=20000 --predictions
  fi
  mkdir -p "$DONE"
  cp "$WORKDIR"/{results.json,metrics.jsonl,config.json,evaluations.jsonl} \
    "$WORKDIR"/predictions_test_20000_*.npz "$DONE/"
  echo "copied to $DONE"
fi
