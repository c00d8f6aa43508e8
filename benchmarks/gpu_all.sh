#!/usr/bin/env bash
# Every GPU measurement the suite publishes, in parts ordered by value.
#
#   benchmarks/gpu_all.sh first     # what fits in one lending of a GPU: the
#       parts below in order, each command given the time left of
#       FIRST_BUDGET_S (default 480 s; a device command may run 600 s), then
#       the report. A command cut off by the budget is stopped with SIGTERM
#       (a sweep keeps the rows it wrote, a training run saves a checkpoint)
#       and the same command resumes it.
#   benchmarks/gpu_all.sh PART      # one part; PART is one of
#       table2-float32   the PoNet paper's Table 2 rows (PoNet, FNet and the
#                        XLA Transformer), Text setting, batch 32, L = 512 ..
#                        16,384, float32: by estimate 18 cells of 10 to 20 s
#                        each (a fresh process, compiling, 13 steps), about
#                        5 minutes of an H100 or H200
#       table2-bfloat16  the same in bfloat16, with both the XLA and the
#                        cuDNN flash-attention Transformer rows
#       listops-ponet, listops-fnet, listops-transformer
#                        full-length ListOps training (ponet preset, 5,000
#                        steps, evaluation every 50), one model each, its
#                        best parameters then tested on 20,000 generated
#                        test examples as well (python -m lra_ponet.evaluate);
#                        listops-MODEL works for any --model name
#       others-float32   the table2-float32 sweep for the other mixers of the
#                        PoNet paper's Tables 1 and 2 (Performer,
#                        Nystromformer, Linformer, Linear Transformer,
#                        Longformer, BigBird, Reformer) and S4D, so that one
#                        table holds all
#       family-float32   the same for the pooling and sparse-attention family
#                        (LSRA, DeepPyramidion, Poolingformer, BPT,
#                        Cluster-Former, DMAN, LSTR) and every other mixer
#                        of the registry (models.MIXERS)
#       report           tables and plots from what is there
#   benchmarks/gpu_all.sh           # every part, in order, with no budget
#                                   # (more than one lending; rerun to resume)
#   DRY_RUN=1 benchmarks/gpu_all.sh [PART]   # the same pipeline on the CPU in
#       seconds: tiny lengths, batch 2, a 4-step ListOps run on a few
#       generated examples; everything goes to a temporary folder.
#
# Every part is safe to rerun: a sweep is one --sweep_id per dtype (SWEEP_TAG,
# default today's UTC date), run one length per command, and a length whose
# rows are already in the CSV for that sweep is skipped; a training run whose
# results.json exists is skipped, and an interrupted one resumes from the
# checkpoints in RUNS_DIR/MODEL (default runs/gpu_listops). The CSV
# (RESULTS_DIR/bench_<gpu>.csv, default results/) and RESULTS_DIR/runs/ are
# the state: on a machine that keeps no files between lendings, point
# RESULTS_DIR (and RUNS_DIR, for the checkpoints) at what comes back, and
# bring it back with the next lending, with the same SWEEP_TAG.
#
# A machine without ml-collections (a bare jax CUDA image; no part needs
# tensorflow-datasets) gets it from wheels in .whl/ (pip download them
# elsewhere): they are installed with pip --no-index into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TAG="${SWEEP_TAG:-$(date -u +%Y%m%d)}"
PARTS=(table2-float32 table2-bfloat16 listops-ponet listops-fnet
       listops-transformer others-float32 family-float32 report)
TABLE2_MODELS=ponet,fnet,transformer
OTHER_MODELS=performer,nystromformer,linformer,linear_transformer,longformer
OTHER_MODELS+=,bigbird,reformer,s4d

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c 'import ml_collections' 2>/dev/null; then
  if compgen -G '.whl/*.whl' >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
  else
    echo "error: ml_collections is missing and .whl/ has no wheels; pip" \
      "install the project's requirements or put wheels in .whl/" >&2
    exit 2
  fi
fi

# Every registered mixer that neither table part runs, a newly added one too.
FAMILY_MODELS=$("$PYTHON" -c 'import sys; from lra_ponet import models
print(",".join(m for m in models.MIXERS if m not in sys.argv[1].split(",")))' \
  "$TABLE2_MODELS,$OTHER_MODELS")

if [[ -n "${DRY_RUN:-}" ]]; then
  export JAX_PLATFORMS=cpu
  RESULTS="${RESULTS_DIR:-$(mktemp -d)}"
  RUNS="$RESULTS/workdirs"
  export LRA_PONET_CACHE="$RESULTS/cache"
  LENGTHS=(64)
  BENCH=(--batch_size=2 --steps=2 --warmup=2 --cell_timeout=120)
  CUDNN=""
  TRAIN=(--config.max_len=128 --config.padded_len=128
         --config.batch_size=4 --config.eval_batch_size=8
         --config.train_steps=4 --config.warmup_steps=2
         --config.eval_every=2 --config.model.num_layers=1
         --config.model.dim=16 --config.model.mlp_dim=32
         --config.data_dir="$RESULTS/lra_release")
  PONET_TRAIN=(--config.model.ponet.segment_num=8)
  RETEST=()
  if [[ ! -d "$RESULTS/lra_release" ]]; then
    "$PYTHON" -c "import sys; from lra_ponet.tasks import listops_generator as g
g.generate_listops(sys.argv[1], seed=0, num_train=32, num_val=8,
                   num_test=8, workers=1, progress=False)" \
      "$RESULTS/lra_release/listops-1000"
  fi
else
  RESULTS="${RESULTS_DIR:-results}"
  RUNS="${RUNS_DIR:-runs/gpu_listops}"
  LENGTHS=(512 1024 2048 4096 8192 16384)
  BENCH=(--batch_size=32 --steps=10 --warmup=3 --cell_timeout=240)
  CUDNN=",cudnn"
  TRAIN=()
  PONET_TRAIN=()
  # The best parameters tested again on 20,000 generated test examples.
  RETEST=(--config.generator.num_test=20000)
fi
echo "Results in $RESULTS"

DEADLINE=""
budgeted() {  # budgeted COMMAND...: within what is left of `first`'s budget
  if [[ -z "$DEADLINE" ]]; then
    "$@"
    return
  fi
  local left=$(( DEADLINE - $(date +%s) )) status=0
  if (( left < 15 )); then
    echo "first: the budget is spent; rerun 'first' to go on from here"
    exit_after_report
  fi
  timeout --signal=TERM --kill-after=60 "$left" "$@" || status=$?
  if (( status == 124 )); then
    echo "first: the budget ran out during '$*'; rerun 'first' to resume"
    exit_after_report
  fi
  return "$status"
}

recorded() {  # recorded SWEEP_ID LENGTH MODEL: is its row in the CSV already?
  "$PYTHON" - "$RESULTS" "$1" "$2" "$3" <<'EOF'
import csv, pathlib, sys
results, sweep, length, model = sys.argv[1:]
for path in pathlib.Path(results).glob('bench_*.csv'):
  with open(path, newline='', encoding='utf-8') as stream:
    if any(row['sweep_id'] == sweep and row['length'] == length
           and row['model'] == model for row in csv.DictReader(stream)):
      sys.exit(0)
sys.exit(1)
EOF
}

sweep() {  # sweep DTYPE ATTENTION MODELS: one command per length
  local id="table2-$1-$TAG"
  for length in "${LENGTHS[@]}"; do
    # The last model's row is written last: with it, the length is done.
    if recorded "$id" "$length" "${3##*,}"; then
      echo "sweep $id: length $length of $3 already recorded, skipped"
      continue
    fi
    budgeted "$PYTHON" -m lra_ponet.bench --task=text --preset=ponet \
      --models="$3" --dtype="$1" --attention="$2" \
      --lengths="$length" --sweep_id="$id" --results_dir="$RESULTS" \
      "${BENCH[@]}"
  done
}

train() {  # train MODEL
  local done_dir="$RESULTS/runs/gpu_listops/$1"
  if [[ -f "$done_dir/results.json" ]]; then
    echo "listops $1: $done_dir/results.json exists, skipped"
    return
  fi
  local own=()
  if [[ "$1" == ponet ]]; then own=("${PONET_TRAIN[@]}"); fi
  budgeted "$PYTHON" -m lra_ponet.run --task=listops --preset=ponet \
    --model="$1" \
    --workdir="$RUNS/$1" "${TRAIN[@]}" "${own[@]}"
  # Once per run: a rerun after an interrupted copy adds no second record.
  if [[ ! -f "$RUNS/$1/evaluations.jsonl" ]]; then
    budgeted "$PYTHON" -m lra_ponet.evaluate --workdir="$RUNS/$1" \
      "${RETEST[@]}"
  fi
  mkdir -p "$done_dir"
  cp "$RUNS/$1"/{results.json,metrics.jsonl,config.json,evaluations.jsonl} \
    "$done_dir/"
}

report() {
  "$PYTHON" -m lra_ponet.report --results_dir="$RESULTS" \
    --runs_dir="$RESULTS/runs"
  if compgen -G "$RESULTS/bench_*.csv" >/dev/null; then
    "$PYTHON" -m lra_ponet.plot --results_dir="$RESULTS"
  fi
}

exit_after_report() {
  DEADLINE=""
  report
  exit 0
}

run_part() {
  case "$1" in
    table2-float32) sweep float32 xla "$TABLE2_MODELS" ;;
    table2-bfloat16) sweep bfloat16 "xla$CUDNN" "$TABLE2_MODELS" ;;
    others-float32) sweep float32 xla "$OTHER_MODELS" ;;
    family-float32) sweep float32 xla "$FAMILY_MODELS" ;;
    listops-*) train "${1#listops-}" ;;
    report) report ;;
    *) echo "error: unknown part '$1'; use first or one of ${PARTS[*]}" >&2
       exit 2 ;;
  esac
}

if [[ $# -eq 0 || "$1" == first ]]; then
  if [[ "${1:-}" == first ]]; then
    DEADLINE=$(( $(date +%s) + ${FIRST_BUDGET_S:-480} ))
  fi
  for part in "${PARTS[@]}"; do
    run_part "$part"
  done
else
  run_part "$1"
fi
