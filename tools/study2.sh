#!/usr/bin/env bash
# The second study of docs/study2.md, one part per call:
#   bash tools/study2.sh S0a|S0b|S0c|S0d|S0|S1|S2|S12|S3|S4|report|archive
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
PART=${1:?usage: study2.sh S0a|S0b|S0c|S0d|S0|S1|S2|S12|S3|S4|report|archive}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-sweeps/study2}
DOCS=${DOCS:-docs/study2}
CAP=22016                         # sequences: 4 epochs of the 5,500-image subset at batch 64 (344 steps)
export OMP_NUM_THREADS=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's vitwarm, whatever the venv points at
export PATH="$(dirname "$PY"):$PATH"   # accelerate from the same environment
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
cheapest() {  # n: "batch seq_len lr k model" of the n cheapest settings that learned, from the cells run so far
  "$PY" benchmarks/transition.py --collect "$OUT/s0" --out "$OUT/s0/.collect" --cheapest "$1" |
    grep -E '^[0-9]+ [0-9]+ [0-9.e-]+ [0-9]+ ' || true
}
only_image_model() { awk '$5 == "-"'; }

# S1-S4: image runs, one sweep directory, every cell over the same grid keys in the same order, so that the
# report tells the cells apart by them. A W is "batch seq_len lr k model" (a line of choice.txt); the
# warm-up keys of cells without a warm-up keep the recipe's values, which such a run never reads.
IMAGES="$OUT/images"
S=(--base recipes/fmnist_compare.yaml --set warmup.stop=plateau --out "$IMAGES"
   --accelerate-config recipes/accelerate/cpu.yaml --launcher print)
NONE="32 0 0.001 32 -"
image_cell() {  # epochs regime init fraction "W" matched_to seeds
  local b l lr k model name=\'\' shared=false grow=stretch
  read -r b l lr k model <<<"$5"
  [ "$model" = - ] || { name=vitwarm_pico_core_patch4_32; shared=true; grow=core; }
  "$PY" tools/sweep.py "${S[@]}" --grid budget.epochs="$1" --grid budget.regime="$2" --grid model.init="$3" \
    --grid warmup.fraction="$4" --grid warmup.batch_size="$b" --grid warmup.seq_len="$l" --grid warmup.lr="$lr" \
    --grid "procedural.params={k: $k}" --grid "warmup.model.name=$name" --grid warmup.model.shared_middle="$shared" \
    --grid transfer.grow_depth="$grow" --grid "budget.matched_to=$6" --grid seed="$7"
}
w() { sed -n "${1}p" "$DOCS/s0/choice.txt"; }  # W1 or W2, as S0 chose them
run_name() {  # the directory name of a cell's run of seed ${seed}, for a control's budget.matched_to
  # --dry-run lists every run of the cell, finished or not (print leaves finished runs out)
  local S=("${S[@]}" --dry-run)
  image_cell "$@" | grep -o 'run.dir=[^ ]*seed=0' | head -n1 | sed "s#run.dir=$(realpath -m "$IMAGES")/##; s#seed=0\$#seed=\${seed}#"
}

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
  S1|S2|S12|S3|S4) [ -s "$DOCS/s0/choice.txt" ] || { echo "study2.sh: error: $PART needs W1 and W2: run part S0 first" >&2; exit 2; }
      [ -e data/fashion_mnist_f0.1/_info.json ] || "$PY" tools/make_shards.py fmnist --out data/fashion_mnist_f0.1 --fraction 0.1
      # The warm-up's cap is 22,016 sequences at every length: fraction 1.0 of 4 epochs, 0.3333 of 12.
      none() { image_cell "$1" additive default 0 "$NONE" null "$2"; }  # epochs seeds
      warm() { image_cell "$2" additive default "$3" "$(w "$1")" null "$4"; }  # W epochs fraction seeds
      control() {  # W epochs fraction seeds: after its warm-up run of the same seed, matched to its used FLOPs
        image_cell "$2" compute_matched default "$3" "$(w "$1")" \
          "\${run.dir}/../$(run_name "$2" additive default "$3" "$(w "$1")" null 0)" "$4"; }
      mimetic() { image_cell "$1" additive mimetic 0 "$NONE" null 0,1,2; }  # epochs
      case "$PART" in
        S1) { none 4 0,1,2,3,4; warm 1 4 1.0 0,1,2,3,4; warm 2 4 1.0 0,1,2,3,4; mimetic 4; none 8 0,1,2; } ;;
        S2) { control 1 4 1.0 0,1,2,3,4; control 2 4 1.0 0,1,2,3,4; } ;;
        # S1 and S2 in the order that answers the key pair (W1 against no warm-up and its control) first
        S12) { none 4 0,1,2,3,4; warm 1 4 1.0 0,1,2,3,4; control 1 4 1.0 0,1,2,3,4; warm 2 4 1.0 0,1,2,3,4
               control 2 4 1.0 0,1,2,3,4; mimetic 4; none 8 0,1,2; } ;;
        S3) { none 12 0,1,2,3,4; warm 1 12 0.3333 0,1,2,3,4; warm 2 12 0.3333 0,1,2; } ;;
        # S4: the key pair (W1 against its control) first, mimetic last
        S4) { control 1 12 0.3333 0,1,2,3,4; control 2 12 0.3333 0,1,2; none 16 0,1,2; mimetic 12; } ;;
      esac | queue "$IMAGES" ;;
  report) # the image cells' tables and plots from the sweep directory, each cell paired by seed to the
      # reference cells of 4 and 12 epochs: no warm-up and each warm-up's compute-matched control
      P=()
      for e in 4 12; do
        P+=(--paired-to "budget.epochs=$e,budget.regime=additive,model.init=default,warmup.fraction=0"
            --paired-to "budget.epochs=$e,budget.regime=compute_matched,warmup.model.shared_middle=true"
            --paired-to "budget.epochs=$e,budget.regime=compute_matched,warmup.model.shared_middle=false")
      done
      "$PY" tools/report.py "$IMAGES" --out "$DOCS/report" "${P[@]}"
      "$PY" tools/report.py "$IMAGES" --out "$DOCS/report/test" --metric test_top1 "${P[@]}" ;;
  archive) # the small, script-readable files of every finished image run, for the docs
      for run in "$IMAGES"/*/; do
        [ -e "$run/summary.json" ] || continue
        dest="$DOCS/runs/$(basename "$run")"
        mkdir -p "$dest"
        for f in config.yaml overrides.json summary.json metrics.jsonl; do sed "s#$PWD/##g" "$run/$f" > "$dest/$f"; done
      done ;;
  *) echo "study2.sh: error: unknown part '$PART' (choose S0a, S0b, S0c, S0d, S0, S1, S2, S12, S3, S4, report or archive)" >&2; exit 2 ;;
esac
echo "part $PART: $(( $(date +%s) - start )) s wall"
