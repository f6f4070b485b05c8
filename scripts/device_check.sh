#!/usr/bin/env bash
# All of issue 18's device work in one call, in order of value, each step under its own `timeout`:
#
#   env           GPU (nvidia-smi), torch/CUDA versions; installs the carried wheels       -> env.txt
#   smoke         a short `trainer.run` on real MNIST, then SQL over its logs              -> smoke.log
#   train_step    `bench.train_step --tools`: reference vs fosc-lab per model and batch    -> train_step.log
#   dynamic_cost  `bench.dynamic_cost`: Dynamic's epoch cost at 3/5/10 steps               -> dynamic_cost.log
#   mnist         `trainer.reproduce --table mnist --parallel 4`, resumable                -> mnist.log
#   pack          the table's runs (no per-example logs) and table, for the next call      -> mnist-runs.tgz.NN
#                 (parts of 15 MiB; `cat mnist-runs.tgz.* | tar xzf - -C runs/device` unpacks them)
#
# Every result lands under $OUT as the step runs, so a step that runs out of time loses only itself,
# and a failed step does not stop the later ones. $OUT/summary.tsv gets one line per step (exit code,
# seconds, limit) as soon as it ends; 124 means the step ran out of time, 125 that no time was left.
# Everything stays within what a device call brings back: at most 8 files, 16 MiB each, in $OUT.
#
#   OUT=/tmp/out scripts/device_check.sh              # on the device (see docs/BENCHMARKS.md)
#   OUT=/tmp/out scripts/device_check.sh --dry-run    # here: the same steps on the CPU, tiny sizes
#
# Options: --budget SECONDS (whole script; default 480, dry run 600), --steps a,b,... (a subset, in
# the order above), --limit STEP=SECONDS (one step's timeout; repeatable), --carry DIR (what
# scripts/prepare_device.sh made; default .carry), --runs-root DIR (where the table's runs live;
# default runs/device, dry run a temporary folder). Exit code: 0 when every step that ran exited 0, else 1;
# 2 for bad usage.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SELF="$ROOT/scripts/device_check.sh"
ALL_STEPS=(env smoke train_step dynamic_cost mnist pack)

die() { echo "error: $*" >&2; exit 2; }

# ---- the steps (each runs as `device_check.sh --step NAME` under timeout, with the DC_* settings) --
step_env() {
  exec >"$OUT/env.txt" 2>&1
  local rc=0
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "commit: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo 'unknown (no .git in this copy)')"
  echo "host: $(uname -srm), $(nproc) cpus, $(awk '/MemTotal/ {print int($2 / 1048576) " GiB"}' /proc/meminfo)"
  if command -v nvidia-smi >/dev/null; then
    # Informative only: torch's view of the GPU below is what decides.
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw,utilization.gpu --format=csv
    nvidia-smi
  else
    echo "nvidia-smi: not found"
    [ "$DC_DEVICE" = cuda ] && rc=1
  fi
  install_wheels || rc=1
  "$DC_PY" - <<'PY' || rc=1
import importlib, os, platform, sys
import torch
print(f"python {platform.python_version()} ({sys.executable})")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
print(f"cuda available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"gpu: {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}, "
          f"{p.multi_processor_count} SMs")
    print(f"tf32: matmul {torch.backends.cuda.matmul.allow_tf32}, cudnn {torch.backends.cudnn.allow_tf32}")
bad = []
for mod in ("numpy", "pyarrow", "pandas", "duckdb", "torchattacks"):
    try:
        m = importlib.import_module(mod)
        print(f"{mod} {getattr(m, '__version__', '?')} ({os.path.dirname(m.__file__)})")
    except Exception as e:  # any import failure is the finding
        print(f"{mod}: cannot import ({type(e).__name__}: {e})")
        bad.append(mod)
# duckdb serves only the smoke step's SQL; torchattacks the table's AutoAttack column.
if "torchattacks" in bad or os.environ["DC_DEVICE"] == "cuda" and not torch.cuda.is_available():
    sys.exit(1)
PY
  return $rc
}

install_wheels() {
  # On the device: into DC_SITE (already on PYTHONPATH for every step). Here (--dry-run) the wheels are
  # for the device's Python, so pip only checks that they would install there.
  local whl=("$DC_CARRY"/whl/*.whl)
  if [ ! -e "${whl[0]}" ]; then
    echo "wheels: none in $DC_CARRY/whl (nothing to install)"
    return 0
  fi
  local pip=("$DC_PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade)
  if [ "$DC_DRY" = 1 ]; then
    echo "wheels (dry run: would they install on Python $DC_DEVICE_PY, x86-64?): ${whl[*]##*/}"
    "${pip[@]}" --dry-run --ignore-installed --only-binary=:all: --python-version "$DC_DEVICE_PY" \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --target "$DC_WORK/site-check" "${whl[@]}"
  else
    echo "wheels: installing ${whl[*]##*/} into $DC_SITE"
    "${pip[@]}" --target "$DC_SITE" "${whl[@]}"
  fi
}

step_smoke() {
  exec >"$OUT/smoke.log" 2>&1
  local rc=0 runs="$DC_WORK/smoke-runs"
  # Dynamic exercises the most device code: compaction (a host sync per step), the stop rule, the
  # held-out PGD per epoch, best/last checkpoints and the white-box evaluation at the end.
  # shellcheck disable=SC2086
  "$DC_PY" -m trainer.run --preset paper-mnist --strategy dynamic --name smoke --runs-dir "$runs" \
    --data-root "$DC_DATA" --device "$DC_DEVICE" --quiet $DC_SMOKE_ARGS || rc=1
  echo "--- the smoke run's logs, read back through the store (DuckDB):"
  "$DC_PY" -m store.sql --runs-dir "$runs" "SELECT state FROM runs;
    SELECT epoch, n, steps_mean, fosc_mean, train_adv_acc, heldout_pgd_acc, wall_s, examples_per_s FROM epochs ORDER BY epoch;
    SELECT count(*) AS rows, count(*) FILTER (WHERE isnan(fosc)) AS nan_fosc, avg(steps) AS mean_steps FROM examples;
    SELECT * FROM evals" || rc=1
  return $rc
}

step_train_step() {
  exec >"$OUT/train_step.log" 2>&1
  # shellcheck disable=SC2086
  bench_with_doc "Training step" bench.train_step --device "$DC_DEVICE" --tools $DC_TRAIN_STEP_ARGS
}

step_dynamic_cost() {
  exec >"$OUT/dynamic_cost.log" 2>&1
  # shellcheck disable=SC2086
  bench_with_doc "Dynamic cost" bench.dynamic_cost --device "$DC_DEVICE" $DC_DYNAMIC_ARGS
}

bench_with_doc() {
  # --write-doc goes to a copy of docs/BENCHMARKS.md (FOSC_BENCH_DOC); the subsection it wrote is
  # printed at the end of the log, ready to paste into the real doc.
  local section=$1 rc=0; shift
  local doc="$DC_WORK/BENCHMARKS.${1#bench.}.md"
  cp "$ROOT/docs/BENCHMARKS.md" "$doc"
  FOSC_BENCH_DOC="$doc" "$DC_PY" -m "$@" --write-doc || rc=$?
  echo "--- docs/BENCHMARKS.md, ## $section, as --write-doc wrote it:"
  "$DC_PY" - "$doc" "$section" "Figures: $DC_DEVICE" <<'PY' || rc=1
import re, sys
text, section, sub = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3]
sec = re.search(rf"^## {re.escape(section)}[ \t]*\n", text, re.M)
part = text[sec.end():] if sec else ""
part = part[:m.start()] if (m := re.search(r"^## ", part, re.M)) else part
s = re.search(rf"^### {re.escape(sub)}[ \t]*\n", part, re.M)
if s is None:
    sys.exit(f"no '### {sub}' in '## {section}'")
body = part[s.end():]
nxt = re.search(r"^##", body, re.M)
print(f"### {sub}\n\n" + (body[:nxt.start()] if nxt else body).strip())
PY
  return $rc
}

step_mnist() {
  exec >"$OUT/mnist.log" 2>&1
  # Re-running the same command resumes: finished runs are skipped, stopped ones continue from their
  # last checkpoint, evaluations already done are not redone.
  "$DC_PY" -m trainer.reproduce --table "$DC_TABLE" --parallel "$DC_PARALLEL" --device "$DC_DEVICE" \
    --runs-dir "$DC_RUNS_ROOT/$DC_TABLE" --out "$DC_RUNS_ROOT/$DC_TABLE-table" --data-root "$DC_DATA" --no-figures
  local rc=$?
  [ -f "$DC_RUNS_ROOT/$DC_TABLE-table/table.md" ] && cat "$DC_RUNS_ROOT/$DC_TABLE-table/table.md"
  return $rc
}

step_pack() {
  exec >>"$OUT/mnist.log" 2>&1   # no file of its own: a call brings back 8 files at most
  echo "--- pack: $DC_RUNS_ROOT/{$DC_TABLE,$DC_TABLE-table} without per-example logs"
  # The mnist step's processes are gone by now (run_step waits for them): each run's state says
  # where the next call resumes (stopped/failed: from its last checkpoint; finished: skipped).
  "$DC_PY" - "$DC_RUNS_ROOT/$DC_TABLE" <<'PY' || return 1
import sys
from pathlib import Path
from store import runs
live = []
for d in sorted(Path(sys.argv[1]).glob("*")):
    if (d / runs.STATUS).is_file():
        state, status = runs.effective_state(d), runs.read_status(d)
        print(f"{d.name}: {state}, epoch {status.get('epoch')}")
        live += [d.name] if state == "running" else []
if live:
    sys.exit(f"still running: {', '.join(live)}")
PY
  local parts=() dirs=()
  [ -d "$DC_RUNS_ROOT/$DC_TABLE" ] && dirs+=("$DC_TABLE")
  [ -d "$DC_RUNS_ROOT/$DC_TABLE-table" ] && dirs+=("$DC_TABLE-table")
  [ ${#dirs[@]} -gt 0 ] || { echo "nothing to pack: no $DC_RUNS_ROOT/$DC_TABLE"; return 1; }
  rm -f "$OUT/$DC_TABLE-runs.tgz."*
  # Per-example logs (examples, steps) and the aggregates built from them (insight) are hundreds of MB
  # for the MNIST table: they stay behind. Resuming needs only config, status and checkpoints.
  tar -C "$DC_RUNS_ROOT" --exclude=examples --exclude=steps --exclude=insight --exclude='*.tmp' -czf - "${dirs[@]}" |
    split -b 15M -d -a 2 - "$OUT/$DC_TABLE-runs.tgz." || return 1
  parts=("$OUT/$DC_TABLE-runs.tgz."*)
  cat "${parts[@]}" | tar -tzf - >/dev/null || { echo "the archive does not read back"; return 1; }
  ls -l "${parts[@]}"
  local files; files=$(find "$OUT" -type f | wc -l)
  # summary.tsv is still to come if this is its first line; count it.
  [ -f "$OUT/summary.tsv" ] || files=$((files + 1))
  [ "$files" -le 8 ] || { echo "$files files in \$OUT: a call brings back only 8"; return 1; }
}

# ---- one step, in its own process (what `timeout` runs) ---------------------------------------
if [ "${1:-}" = "--step" ]; then
  cd "$ROOT" || exit 1
  "step_$2"
  exit $?
fi

# ---- the whole check ---------------------------------------------------------------------------
run_step() {
  # timeout puts the step in a process group of its own (its pid) and, when time is up, sends SIGTERM
  # to the whole group: the trainers that trainer.reproduce started finish their batch and stop
  # resumably. Nothing of a step may outlive it (a straggler would skew the next step's timings), so
  # what is left of the group gets 30 s, then SIGKILL.
  timeout -k 15 "$2" bash "$SELF" --step "$1" </dev/null &
  local pid=$! rc i
  wait "$pid"; rc=$?
  for i in $(seq 30); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 1; done
  kill -KILL -- "-$pid" 2>/dev/null && echo "[$1] killed what was left of it after 30 s"
  return "$rc"
}

DRY=0 BUDGET="" STEPS="" CARRY=".carry" RUNS_ROOT=""
declare -A LIMIT=()
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --budget) BUDGET=${2:-}; shift ;;
    --steps) STEPS=${2:-}; shift ;;
    --limit) [[ ${2:-} =~ ^([a-z_]+)=([0-9]+)$ ]] || die "--limit takes STEP=SECONDS, got '${2:-}'"
             LIMIT[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}; shift ;;
    --carry) CARRY=${2:-}; shift ;;
    --runs-root) RUNS_ROOT=${2:-}; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$SELF"; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
[ -n "${OUT:-}" ] || die "OUT is not set: the folder for the results (the device tool sets it)"
cd "$ROOT" || exit 2
IFS=, read -r -a SELECTED <<<"${STEPS:-$(IFS=,; echo "${ALL_STEPS[*]}")}"
for s in "${SELECTED[@]}" "${!LIMIT[@]}"; do
  [[ " ${ALL_STEPS[*]} " == *" $s "* ]] || die "unknown step '$s'; steps are: ${ALL_STEPS[*]}"
done

if [ "$DRY" = 1 ]; then  # the same steps, CPU-sized
  export DC_DEVICE=cpu DC_TABLE=mnist-tiny DC_PARALLEL=2 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
  export DC_SMOKE_ARGS="--epochs 2 --n-train 128 --heldout 32 --eval-n 32 --batch-size 64 --t-prime 1 --trajectory-examples 4"
  export DC_TRAIN_STEP_ARGS="--models cnn4:8,cnn4:16 --steps 2 --batches 1 --reps 1"
  export DC_DYNAMIC_ARGS="--batch 16 --batches 1 --warm-batches 1 --reps 1"
  BUDGET=${BUDGET:-600}
  declare -A DEFAULT=([env]=60 [smoke]=120 [train_step]=120 [dynamic_cost]=120 [mnist]=300 [pack]=60)
else     # sized for one device call: 480 s of 540 (timeout_s), a 10-minute command at most
  export DC_DEVICE=cuda DC_TABLE=mnist DC_PARALLEL=4
  export DC_SMOKE_ARGS="--epochs 2 --n-train 8192 --heldout 1000 --eval-n 1000 --t-prime 1"
  export DC_TRAIN_STEP_ARGS="--models cnn4:128,cnn8:128,cnn8:512,wrn34_10:128"
  export DC_DYNAMIC_ARGS="--batches 20 --warm-batches 50 --reps 5"
  BUDGET=${BUDGET:-480}
  declare -A DEFAULT=([env]=60 [smoke]=90 [train_step]=240 [dynamic_cost]=120 [mnist]=600 [pack]=60)
fi
[[ $BUDGET =~ ^[0-9]+$ ]] || die "--budget takes seconds, got '$BUDGET'"

export DC_DRY=$DRY DC_PY=${PYTHON:-python3} DC_DEVICE_PY=3.12 PYTHONUNBUFFERED=1
DC_WORK=$(mktemp -d "${TMPDIR:-/tmp}/device-check.XXXXXX") || die "cannot make a temporary folder"
trap 'rm -rf "$DC_WORK"' EXIT
export DC_WORK DC_SITE="$DC_WORK/site"
export PYTHONPATH="$DC_SITE${PYTHONPATH:+:$PYTHONPATH}"   # where step env installs the wheels
export DC_CARRY=$CARRY DC_RUNS_ROOT=${RUNS_ROOT:-$([ "$DRY" = 1 ] && echo "$DC_WORK/runs" || echo runs/device)}
if [ -f "$CARRY/data/mnist.npz" ]; then DC_DATA="$CARRY/data/mnist.npz"
elif [ -f "${FOSC_DATA_ROOT:-}/mnist.npz" ]; then DC_DATA="$FOSC_DATA_ROOT/mnist.npz"
else die "no $CARRY/data/mnist.npz (run scripts/prepare_device.sh) and no \$FOSC_DATA_ROOT/mnist.npz"
fi
# A run keeps its data path in its saved config and a resume cannot change it, while the next call
# may run in another checkout on another machine: the data gets the same absolute path every call.
DATA_DIR=$([ "$DRY" = 1 ] && echo "$DC_WORK/data" || echo /tmp/fosc-device-data)
mkdir -p "$DATA_DIR" && cp -f "$DC_DATA" "$DATA_DIR/mnist.npz" || die "cannot copy $DC_DATA to $DATA_DIR"
export DC_DATA="$DATA_DIR/mnist.npz" FOSC_DATA_ROOT=$DATA_DIR   # bench.dynamic_cost reads it from there
mkdir -p "$OUT" || die "cannot make \$OUT ($OUT)"

declare -A RESULT=([env]=env.txt [smoke]=smoke.log [train_step]=train_step.log
                   [dynamic_cost]=dynamic_cost.log [mnist]=mnist.log [pack]="$DC_TABLE-runs.tgz.*")
SUMMARY="$OUT/summary.tsv"
printf 'step\trc\tseconds\tlimit_s\tresult\n' >"$SUMMARY"
echo "device check ($([ "$DRY" = 1 ] && echo 'dry run, cpu' || echo cuda)), budget $BUDGET s, steps: ${SELECTED[*]}"
START=$SECONDS FAILED=()
for step in "${ALL_STEPS[@]}"; do
  [[ " ${SELECTED[*]} " == *" $step "* ]] || continue
  limit=${LIMIT[$step]:-${DEFAULT[$step]}}
  left=$((BUDGET - (SECONDS - START)))
  # Keep the pack step's time (and the 30 s run_step may wait after a timeout): it brings the
  # table's runs back, so the next call can resume them.
  if [ "$step" != pack ] && [[ " ${SELECTED[*]} " == *" pack "* ]]; then
    left=$((left - ${LIMIT[pack]:-${DEFAULT[pack]}} - 30))
  fi
  t0=$SECONDS
  if [ "$limit" -gt "$left" ] && [ "$left" -lt 5 ]; then
    rc=125; echo "[$step] skipped: no time left in the $BUDGET s budget"
  else
    [ "$limit" -gt "$left" ] && limit=$left
    echo "[$step] started, limit $limit s -> \$OUT/${RESULT[$step]}"
    run_step "$step" "$limit"
    rc=$?
  fi
  secs=$((SECONDS - t0))
  printf '%s\t%s\t%s\t%s\t%s\n' "$step" "$rc" "$secs" "$limit" "${RESULT[$step]}" >>"$SUMMARY"
  echo "[$step] exit $rc in $secs s$([ "$rc" = 124 ] && echo ' (ran out of time)')"
  [ "$rc" = 0 ] || FAILED+=("$step")
done
total=$((SECONDS - START))
printf 'total\t%s\t%s\t%s\t%s\n' "$([ ${#FAILED[@]} = 0 ] && echo 0 || echo 1)" "$total" "$BUDGET" \
  "$([ ${#FAILED[@]} = 0 ] && echo ok || echo "failed: ${FAILED[*]}")" >>"$SUMMARY"

echo "--- summary ($SUMMARY)"; column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
echo "--- key lines"
grep -h -E 'ratio vs reference|ratio dynamic/standard|faster: ' "$OUT"/train_step.log "$OUT"/dynamic_cost.log 2>/dev/null | head -60
grep -h -E "^$DC_TABLE-[a-z]+: [a-z]+, epoch " "$OUT/mnist.log" 2>/dev/null   # where each run of the table stands
[ ${#FAILED[@]} = 0 ]
