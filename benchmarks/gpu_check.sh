#!/usr/bin/env bash
# One command for every GPU question, in at most 8 minutes on one H100/H200: the real loader on ImageNet-sized
# JPEGs feeding ViT-B/16 against a plain timm loop fed the same way, MFU, the warm-up at the recipe's per-GPU
# batch, recompiles and graph breaks, a 10-step profiler trace, the host-sync test, nvidia-smi's facts, EMA
# placement; one Markdown report (benchmarks/gpu_check.py).
#
#   bash benchmarks/gpu_check.sh [--python PY] [--wheels DIR] [--out DIR] [--cpu-smoke] [gpu_check.py flags]
#
# Uses the PyTorch (and torchvision) that PY imports, whatever their version; installs the other
# dependencies, if missing, from the wheel folder DIR with pip (no index; see docs/performance.md for
# building DIR) under OUT/pip; imports vitwarm from this checkout. Writes OUT/gpu_check.json, OUT/gpu_check.md
# and OUT/trace.json (OUT defaults to gpu_check_out). When it cannot proceed it says why in one line.
set -euo pipefail

PY=python3 WHEELS="" OUT=gpu_check_out
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --python) PY=$2; shift 2 ;;
    --wheels) WHEELS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | cut -c3-; exit 0 ;;
    *) PASS+=("$1"); shift ;;
  esac
done
die() { echo "gpu_check: cannot proceed: $*" >&2; exit 2; }

CHECKOUT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
command -v "$PY" >/dev/null || die "no Python '$PY' (pass --python PATH)"
cuda=$("$PY" -c "import torch, torchvision; print(torch.cuda.is_available(), torch.__version__)" 2>/dev/null) \
  || die "$PY cannot import torch and torchvision; this script uses the machine's own PyTorch build (pass --python)"
case " ${PASS[*]} " in
  *" --cpu-smoke "*) ;;
  *) [ "${cuda%% *}" = True ] || die "no CUDA device visible to torch ${cuda#* }; use --cpu-smoke to test the script on a CPU" ;;
esac  # before any install or import of vitwarm: a GPU check without a GPU stops in seconds

missing=$("$PY" "$CHECKOUT/benchmarks/gpu_env.py" missing)
if [ -n "$missing" ]; then
  [ -n "$WHEELS" ] || die "missing $missing; pass --wheels DIR with their wheels (docs/performance.md)"
  [ -d "$WHEELS" ] || die "--wheels $WHEELS is not a folder"
  "$PY" -m pip --version >/dev/null 2>&1 || die "missing $missing and $PY has no pip to install them"
  echo "gpu_check: installing $missing (and what they need) from $WHEELS into $OUT/pip"
  # --prefix, not --target: pip then counts what the machine has (its torch) as installed.
  # shellcheck disable=SC2086
  if ! log=$("$PY" -m pip install -q --isolated --no-index --find-links "$WHEELS" --prefix "$OUT/pip" $missing 2>&1); then
    die "pip could not install $missing from $WHEELS: $(grep -m1 ERROR <<<"$log" || tail -n1 <<<"$log")"
  fi
  for site in $(find "$OUT/pip" -type d \( -name site-packages -o -name dist-packages \)); do
    PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  done
fi
export PYTHONPATH="$CHECKOUT${PYTHONPATH:+:$PYTHONPATH}"
err=$("$PY" -c "import vitwarm.train" 2>&1 | tail -n1) || die "importing vitwarm failed: $err"

cd "$CHECKOUT"
exec "$PY" benchmarks/gpu_check.py --out "$OUT" "${PASS[@]}"
