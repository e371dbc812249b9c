#!/usr/bin/env bash
# The comparison study of docs/comparisons.md, one part per call:
#   bash tools/compare_study.sh A|B|C|D|E|report|archived
#
# Each part runs its cells' unfinished runs two at a time (finished runs are skipped, interrupted ones
# resume from their checkpoint), then copies every finished run's config.yaml, summary.json and
# metrics.jsonl into docs/comparisons/runs/ so that the part's numbers can be committed on their own.
# `report` rebuilds the tables and plots from the sweep directory (OUT, default sweeps/fmnist_compare; an
# absolute OUT points it at another checkout's sweep, to report those runs with this checkout's code) into
# REPORT (default docs/comparisons). `archived` reports the archived runs alone, in a checkout without the
# study's sweep directory: it copies docs/comparisons/runs (with RERUNS=1, then the re-runs of
# docs/comparisons/reruns in place of the runs they repeat) into OUT, which must not exist yet, and runs
# `report` over them.
# Runs are started with `nice`, so other work on the machine keeps its speed; the accuracies do not depend
# on it (a run is deterministic on one machine; on another CPU they move by tenths of a point, and at the
# study's commit a mimetic run starts from other weights, see docs/comparisons.md, part E).
set -euo pipefail
cd "$(dirname "$0")/.."
PART=${1:?usage: compare_study.sh A|B|C|D|E|report|archived}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-sweeps/fmnist_compare}
REPORT=${REPORT:-docs/comparisons}
export OMP_NUM_THREADS=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's vitwarm, whatever the venv points at
export PATH="$(dirname "$PY"):$PATH"   # accelerate from the same environment

[ "$PART" = report ] || [ "$PART" = archived ] || [ -e data/fashion_mnist_f0.1/_info.json ] || "$PY" tools/make_shards.py fmnist --out data/fashion_mnist_f0.1 --fraction 0.1

S=(--base recipes/fmnist_compare.yaml --out "$OUT" --accelerate-config recipes/accelerate/cpu.yaml --launcher print)
cell() {  # epochs regime init fraction grammar params shuffled sources seeds
  "$PY" tools/sweep.py "${S[@]}" --grid budget.epochs="$1" --grid budget.regime="$2" --grid model.init="$3" \
      --grid warmup.fraction="$4" --grid procedural.grammar="$5" --grid "procedural.params=$6" \
      --grid procedural.shuffled="$7" --grid "transfer.sources=$8" --grid seed="$9"
}
source tools/study_queue.sh
# cell 8's sources: the runs of cells 2 and 7 with the composed run's own seed, beside it in the sweep, by
# their names there: a sweep directory of earlier versions keeps its long names (every key and value in full)
src() {  # grammar, params as in a long name, params as in a short name
  local long="budget.epochs=4__budget.regime=additive__model.init=default__warmup.fraction=1.0__procedural.grammar=$1__procedural.params=$2__procedural.shuffled=false__transfer.sources=--__seed="
  local short="epochs=4__regime=additive__init=default__fraction=1.0__grammar=$1__params=$3__shuffled=false__sources=none__seed="
  compgen -G "$OUT/$long*" > /dev/null || long=$short
  echo "\${run.dir}/../$long\${seed}/warmup"; }
COMPOSED="{attn: \"$(src k_dyck -k--32- k-32)\", mlp: \"$(src eca -rule--110- rule-110)\"}"

archive() {  # the small, script-readable files of every finished run, for the docs
  for run in "$OUT"/*/; do
    [ -e "$run/summary.json" ] || continue
    dest="docs/comparisons/runs/$(basename "$run")"
    mkdir -p "$dest"
    for f in config.yaml summary.json metrics.jsonl; do  # paths relative to the checkout
      sed "s#$PWD/##g" "$run/$f" > "$dest/$f"
    done
  done
}

restore() {  # archived runs ($1) into $OUT, the inverse of archive(): a report resolves cell 8's ${run.dir} to the
  # absolute run directory, so the archive's checkout-relative paths get the sweep directory back in front
  for run in "$1"/*/; do
    dest="$OUT/$(basename "$run")"
    mkdir -p "$dest"
    for f in config.yaml summary.json metrics.jsonl; do
      sed "s#sweeps/fmnist_compare/#$(realpath "$OUT")/#g" "$run/$f" > "$dest/$f"
    done
  done
}

start=$(date +%s)
case "$PART" in
  A) { cell 4 additive default 0 k_dyck '{k: 32}' false '{}' 0,1,2,3,4
       cell 4 additive default 1.0 k_dyck '{k: 32}' false '{}' 0,1,2,3,4; } | queue "$OUT" ;;
  B) { cell 4 compute_matched default 1.0 k_dyck '{k: 32}' false '{}' 0,1,2
       cell 4 additive mimetic 0 k_dyck '{k: 32}' false '{}' 0,1,2
       cell 4 additive default 1.0 k_dyck '{k: 32}' true '{}' 0,1,2; } | queue "$OUT" ;;
  C) { cell 4 additive mimetic 1.0 k_dyck '{k: 32}' false '{}' 0,1,2
       cell 4 additive default 1.0 eca '{rule: 110}' false '{}' 0,1,2; } | queue "$OUT" ;;
  D) # cell 8's sources first: cells 2 and 7, seeds 0-2 (skipped where finished in this sweep directory;
     # run again, deterministically, where the sweep directory is new and only the archive has them)
     { cell 4 additive default 1.0 k_dyck '{k: 32}' false '{}' 0,1,2
       cell 4 additive default 1.0 eca '{rule: 110}' false '{}' 0,1,2; } | queue "$OUT"
     { cell 4 additive default 1.0 k_dyck '{k: 32}' false "$COMPOSED" 0,1,2
       cell 12 additive default 0 k_dyck '{k: 32}' false '{}' 0,1,2
       cell 12 additive mimetic 0 k_dyck '{k: 32}' false '{}' 0; } | queue "$OUT" ;;
  E) { cell 12 additive mimetic 0 k_dyck '{k: 32}' false '{}' 1,2
       cell 12 additive default 0.3333 k_dyck '{k: 32}' false '{}' 0,1,2; } | queue "$OUT" ;;
  archived)
    [ ! -e "$OUT" ] || { echo "compare_study.sh: error: archived: OUT=$OUT exists; name a new directory" >&2; exit 2; }
    mkdir -p "$OUT"
    restore docs/comparisons/runs
    [ -z "${RERUNS:-}" ] || restore docs/comparisons/reruns ;&  # then the report over them
  report)
    # rewrite sweep.json with cell 8's grid (runs nothing), so that its transfer.sources is read as typed
    # (with ${seed}) and its three seeds form one cell
    cell 4 additive default 1.0 k_dyck '{k: 32}' false "$COMPOSED" 0,1,2 > /dev/null
    # the paired-by-seed differences of the plan: every cell minus each reference cell that has finished runs
    P=(); ref() {  # epochs init fraction [keys that tell the k-Dyck cell from cells 5 and 8]: a finished run, by
      # its long name (an archived sweep) or its short one
      compgen -G "$OUT/budget.epochs=$1__budget.regime=additive__model.init=$2__warmup.fraction=$3__procedural.grammar=k_dyck__procedural.params=-k--32-__procedural.shuffled=false__transfer.sources=--__seed=*/summary.json" > /dev/null ||
        compgen -G "$OUT/epochs=$1__regime=additive__init=$2__fraction=$3__grammar=k_dyck__params=k-32__shuffled=false__sources=none__seed=*/summary.json" > /dev/null &&
        P+=(--paired-to "budget.epochs=$1,budget.regime=additive,model.init=$2,warmup.fraction=$3${4:+,$4}") || true; }
    ref 4 default 0; ref 4 mimetic 0; ref 4 default 1.0 "procedural.grammar=k_dyck,procedural.shuffled=false,transfer.sources={}"
    ref 12 default 0; ref 12 mimetic 0
    "$PY" tools/report.py "$OUT" --out "$REPORT" "${P[@]}"
    "$PY" tools/report.py "$OUT" --out "$REPORT/test" --metric test_top1 "${P[@]}" ;;
  *) echo "compare_study.sh: error: unknown part '$PART' (choose A, B, C, D, E, report or archived)" >&2; exit 2 ;;
esac
[ "$PART" = report ] || [ "$PART" = archived ] || archive  # reports run nothing, so there is nothing new to archive
echo "part $PART: $(( $(date +%s) - start )) s wall"
