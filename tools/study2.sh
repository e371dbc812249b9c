#!/usr/bin/env bash
# The second study of docs/study2.md, one part per call:
#   bash tools/study2.sh S0a|S0b|S0c|S0d|S0
#
# S0 is the cost frontier: warm-ups only (benchmarks/transition.py), one process per cell, two at a time,
# each cell capped at CAP sequences (4 image epochs of the subset) and stopped at its plateau. A finished
# cell (its transition.json) is skipped, so a part that was stopped picks up where it was. S0b-S0d choose
# their settings from the cells before them (the cheapest to the plateau, every seed learning), as the page
# fixes; `S0` (no runs) gathers every cell into docs/study2/s0/ and writes the choice of W1 and W2 to
# docs/study2/s0/choice.txt.
# Cells run with `nice`, so other work on the machine keeps its speed; steps and FLOPs do not depend on it
# (the wall seconds do).
set -euo pipefail
cd "$(dirname "$0")/.."
PART=${1:?usage: study2.sh S0a|S0b|S0c|S0d|S0}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-sweeps/study2}
DOCS=${DOCS:-docs/study2}
CAP=22016                         # sequences: 4 epochs of the 5,500-image subset at batch 64 (344 steps)
export OMP_NUM_THREADS=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's vitwarm, whatever the venv points at
source tools/study_queue.sh

cells() {  # group config model-tag lr k seeds, then "batch seq_len" pairs on stdin: one command per unfinished cell
  local group=$1 config=$2 tag=$3 lr=$4 k=$5 seeds=$6 batch len seed dir
  while read -r batch len; do
    for seed in $seeds; do
      dir="$OUT/s0/$group/${tag}b${batch}_L${len}_lr${lr}_k${k}_s${seed}"
      [ -e "$dir/transition.json" ] || echo "$PY benchmarks/transition.py --config $config --batch $batch" \
        "--seq-len $len --lr $lr --k $k --seeds $seed --max-steps $((CAP / batch)) --out $dir"
    done
  done
}
cheapest() {  # n folder...: "batch seq_len lr k model" of the n cheapest settings that learned, from the cells run
  local n=$1; shift
  "$PY" benchmarks/transition.py --collect "$OUT/s0" --out "$OUT/s0/.collect" --cheapest "$n" "$@" |
    grep -E '^[0-9]+ [0-9]+ [0-9.e-]+ [0-9]+ ' || true
}
only_image_model() { awk '$5 == "-"'; }

REPRO=recipes/fmnist_repro.yaml CORE=recipes/fmnist_core.yaml
start=$(date +%s)
case "$PART" in
  S0a) for b in 8 16 32; do for l in 16 32 64; do echo "$b $l"; done; done |
         cells a $REPRO "" 0.001 32 "0 1" | queue "$OUT" ;;
  S0b) cheapest 3 | only_image_model | while read -r b l lr k _; do
         for new in 0.002 0.004; do echo "$b $l" | cells b $REPRO "" $new "$k" "0 1"; done
       done | queue "$OUT" ;;
  S0c) cheapest 2 | only_image_model | while read -r b l lr k _; do
         for new in 16 64; do echo "$b $l" | cells c $REPRO "" "$lr" $new "0 1"; done
       done | queue "$OUT" ;;
  S0d) { echo "32 64" | cells d $CORE core_ 0.001 32 "0 1"
         cheapest 1 | only_image_model | while read -r b l lr k _; do
           echo "$b $l" | cells d $CORE core_ "$lr" "$k" "0 1"; done; } | queue "$OUT" ;;
  S0) mkdir -p "$DOCS/s0"
      "$PY" benchmarks/transition.py --collect "$OUT/s0" --out "$DOCS/s0" --cheapest 2 |
        tee "$DOCS/s0/collect.txt" | grep -E '^[0-9]+ [0-9]+ [0-9.e-]+ [0-9]+ ' > "$DOCS/s0/choice.txt"
      echo "W1, W2 (batch seq_len lr k model):"; cat "$DOCS/s0/choice.txt" ;;
  *) echo "study2.sh: error: unknown part '$PART' (choose S0a, S0b, S0c, S0d or S0)" >&2; exit 2 ;;
esac
echo "part $PART: $(( $(date +%s) - start )) s wall"
