#!/usr/bin/env bash
# The GPU check: everything a session lent a GPU machine should run, in under 8 minutes, offline.
#
#   tools/gpu_check.sh            # on the lent machine (its python3 with torch; no apt, no pip index, no venv)
#   tools/gpu_check.sh --dry-run  # CPU rehearsal: tiny presets, the project venv, the same steps and JSON schema
#
# Parts, in order, each with its own time budget (skipped with a message when the overall budget cannot hold it):
#   wheels   install .whl/*.whl (from `make gpu-wheels`) with pip --no-index --target into a temporary folder
#   smoke    a CPU smoke of the engine tests on this machine's torch (catches APIs newer than it)
#   gpu      every gpu-marked test
#   engine   the full-size engine bench: CUDA graph, torch.compile and eager side by side at batch 1, 4, 16, 32
#   motion   the motion stack on CUDA: torch eager vs one CUDA graph per motion token, batch 1 and 32
#   trace    a torch-profiler Chrome trace of 50 decode steps with the engine's NVTX range names
# Writes gpu_check.json (every figure) and gpu_check.log to $OUT when set, else bench/results/gpu_check/, and prints
# one table. Exit status: 0 when no part failed (skipped parts are reported, not failures).
set -uo pipefail

DRY=0
for a in "$@"; do
  case "$a" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
OUTDIR=${OUT:-$ROOT/bench/results/gpu_check}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG=$OUTDIR/gpu_check.log
PARTS=$OUTDIR/parts.jsonl
: >"$LOG"
: >"$PARTS"
START=$(date +%s)

if [ "$DRY" = 1 ]; then
  # the project venv (or what the caller names): the rehearsal runs where `make test` runs
  PY=${GPU_CHECK_PYTHON:-$ROOT/.venv/bin/python}
  [ -x "$PY" ] || PY=python3
  TOTAL=${GPU_CHECK_TOTAL_S:-300}
  DEVICE=cpu
  export CUDA_VISIBLE_DEVICES=""
else
  PY=${GPU_CHECK_PYTHON:-python3}
  TOTAL=${GPU_CHECK_TOTAL_S:-465}   # under 8 minutes of wall time, with room for the report
  DEVICE=${GPU_CHECK_DEVICE:-cuda}
fi
export PYTHONPATH=.
export PYTHONDONTWRITEBYTECODE=1
export TOKENIZERS_PARALLELISM=false

log() { echo "[gpu_check $(($(date +%s) - START))s] $*" | tee -a "$LOG"; }

# record NAME STATUS RC SECONDS BUDGET MESSAGE [RESULT_FILE]
record() {
  "$PY" - "$PARTS" "$@" <<'PYEOF'
import json, sys
path, name, status, rc, secs, budget, msg = sys.argv[1:8]
res = sys.argv[8] if len(sys.argv) > 8 else ""
with open(path, "a") as f:
    f.write(json.dumps({"name": name, "status": status, "rc": int(rc), "seconds": float(secs),
                        "budget_s": float(budget), "message": msg, "result": res or None}) + "\n")
PYEOF
}

# part NAME BUDGET RESULT_FILE -- command...: runs under `timeout BUDGET`, output to the log
part() {
  local name=$1 budget=$2 result=$3
  shift 4
  local now left
  now=$(date +%s)
  left=$((TOTAL - (now - START)))
  if [ "$left" -lt "$budget" ]; then
    log "SKIP $name: needs ${budget}s, ${left}s of the ${TOTAL}s budget left"
    record "$name" skipped 0 0 "$budget" "budget spent: ${left}s of ${TOTAL}s left, part needs ${budget}s" "$result"
    return 0
  fi
  log "RUN  $name (budget ${budget}s): $*"
  local t0 rc status msg
  t0=$(date +%s%N)
  timeout --kill-after=10 "$budget" "$@" >>"$LOG" 2>&1
  rc=$?
  local ms dt
  ms=$((($(date +%s%N) - t0) / 1000000))
  dt="$((ms / 1000)).$(printf %03d $((ms % 1000)))"
  if [ "$rc" = 0 ]; then status=passed; msg="ok";
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status=timeout; msg="stopped at its budget of ${budget}s";
  else status=failed; msg="exit status $rc (see gpu_check.log)"; fi
  log "END  $name: $status ($msg)"
  record "$name" "$status" "$rc" "$dt" "$budget" "$msg" "$result"
}

log "repository $ROOT, output $OUTDIR, python $PY, dry run $DRY, total budget ${TOTAL}s"

# ---- wheels -----------------------------------------------------------------------------------------------------------
WHEELS=$(mktemp -d)
trap 'rm -rf "$WHEELS"' EXIT
shopt -s nullglob
WHL=(.whl/*.whl)
shopt -u nullglob
if [ "$DRY" = 1 ]; then
  # the rehearsal's interpreter is not the lent machine's (cp312): check the wheel set, do not put it on the path
  part wheels 20 "$OUTDIR/wheels.json" -- "$PY" tools/gpu_wheels.py check --wheel-dir .whl --allow-missing \
    --out "$OUTDIR/wheels.json"
elif [ "${#WHL[@]}" -gt 0 ]; then
  part wheels 30 "$OUTDIR/wheels.json" -- bash -c '"$0" -m pip install --no-index --no-deps --quiet --target "$1" "${@:3}" &&
    "$0" tools/gpu_wheels.py check --wheel-dir .whl --installed "$1" --out "$2"' "$PY" "$WHEELS" "$OUTDIR/wheels.json" "${WHL[@]}"
  export PYTHONPATH=.:$WHEELS
else
  log "no wheels in .whl/ (run make gpu-wheels where a package index is reachable): the parts that need pyzmq/nvtx may fail"
  record wheels skipped 0 0 0 "no .whl/*.whl" ""
fi

# ---- the parts ------------------------------------------------------------------------------------------------------
GPU_TESTS=$(grep -rlE "pytest\.mark\.gpu|mark\.gpu" tests --include='test_*.py' | sort | tr '\n' ' ')
log "gpu-marked test files: ${GPU_TESTS:-none found}"
if [ "$DRY" = 1 ]; then
  part smoke 40 "$OUTDIR/smoke.xml" -- "$PY" -m pytest -q -p no:cacheprovider -x -m "not gpu and not slow" \
    tests/engine/test_sampling.py --junitxml="$OUTDIR/smoke.xml"
  # the same selection and marker; one file keeps the rehearsal quick (every gpu test skips on a CPU)
  part gpu 40 "$OUTDIR/gpu_tests.xml" -- "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/engine/test_cuda_path.py \
    --junitxml="$OUTDIR/gpu_tests.xml"
  part engine 60 "$OUTDIR/engine.json" -- "$PY" bench/engine.py --preset tiny --device cpu --modes cuda_graph compile none \
    --batch 1 2 --seconds 0.3 --question-seconds 0.3 --turns 1 --max-len 256 --budget-s 50 --out "$OUTDIR/engine.json"
  part motion 40 "$OUTDIR/motion.json" -- "$PY" -m bench.motion_stack --tiny --compare-graph --device cpu \
    --batches 1 32 --repeats 2 --out "$OUTDIR/motion.json"
  part trace 40 "$OUTDIR/trace_meta.json" -- "$PY" bench/engine.py --preset tiny --device cpu --modes none --batch 2 \
    --seconds 0.3 --question-seconds 0.3 --max-len 256 --trace "$OUTDIR/trace.json" --trace-steps 5 \
    --out "$OUTDIR/trace_meta.json"
else
  # the engine tests but the slowest file and the rehearsal itself, on the CPU: APIs newer than this torch fail here
  part smoke 60 "$OUTDIR/smoke.xml" -- env CUDA_VISIBLE_DEVICES= "$PY" -m pytest -q -p no:cacheprovider \
    -m "not gpu and not slow" tests/engine --ignore=tests/engine/test_gpu_check.py \
    --ignore=tests/engine/test_engine.py --junitxml="$OUTDIR/smoke.xml"
  # shellcheck disable=SC2086
  part gpu 120 "$OUTDIR/gpu_tests.xml" -- "$PY" -m pytest -q -p no:cacheprovider -m gpu $GPU_TESTS \
    --junitxml="$OUTDIR/gpu_tests.xml"
  # compile last: its compilation is the slowest; the bench writes its JSON after every run and stops starting
  # runs after --budget-s, so a budget spent mid-compile keeps the figures already measured
  part engine 170 "$OUTDIR/engine.json" -- "$PY" bench/engine.py --preset full --device "$DEVICE" \
    --modes cuda_graph none compile --batch 1 4 16 32 --seconds 2 --question-seconds 2 --turns 1 --budget-s 140 \
    --out "$OUTDIR/engine.json"
  part motion 35 "$OUTDIR/motion.json" -- "$PY" -m bench.motion_stack --compare-graph --device "$DEVICE" \
    --batches 1 32 --repeats 20 --out "$OUTDIR/motion.json"
  part trace 55 "$OUTDIR/trace_meta.json" -- "$PY" bench/engine.py --preset full --device "$DEVICE" --modes cuda_graph \
    --batch 4 --seconds 4 --question-seconds 2 --trace "$OUTDIR/trace.json" --trace-steps 50 \
    --out "$OUTDIR/trace_meta.json"
fi

# ---- report -----------------------------------------------------------------------------------------------------------
"$PY" tools/gpu_check_report.py --out-dir "$OUTDIR" --dry-run "$DRY" --elapsed "$(($(date +%s) - START))" 2>&1 | tee -a "$LOG"
exit "${PIPESTATUS[0]}"
