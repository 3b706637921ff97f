#!/usr/bin/env bash
# The GPU check of issue 20 in one command: the sweep and loop benchmarks and Experiment 1 at size=gpu, summarised.
#
#   bash benchmarks/device_check.sh             # on the machine with the accelerator, from the repository root
#   bash benchmarks/device_check.sh --dry-run   # (or QUICK=1) on a CPU in a minute or two: size=tiny shapes
#
# In order: the device's name (nvidia-smi, and JAX's view of it); `python -m benchmarks.sweep` (ensembles of M runs
# against solo runs, size=gpu shapes); `python -m benchmarks.accelerator` (the training loop against its own step
# program, four_by_four); then `gssm-experiment1 --config=experiment1:size=gpu` (run as `python -m
# gssm_jax.cli.experiment1`: nothing is installed) with its wall time; then a summary: the device, both
# benchmark tables, the report's answer, the wall time of each stage. Everything written goes under $OUT when set
# (else ./device_check_out): summary.md, sweep.md, accelerator.md, report.md, experiment.log, device_check.log.
# The experiment's run directories are in $WORK (default /tmp/device_check_work); rerunning resumes them.
#
# Time: one command of the device tool runs at most 10 minutes, so every stage is capped (`timeout`): the
# benchmarks at SWEEP_S=90 and ACCELERATOR_S=60 seconds (each prints its rows as it goes, so a capped one keeps
# the rows it has: the sweep measures the solo baseline and the sweep's own ensemble sizes first), and the
# experiment gets what is left of BUDGET_S=585. STAGES="sweep accelerator experiment" (the default) picks stages;
# SWEEP_ARGS and ACCELERATOR_ARGS replace the benchmarks' arguments; PYTHON picks the interpreter (default:
# .venv/bin/python if present, else python3).
#
# Packages: the H200 image has jax, flax, optax, orbax-checkpoint, absl-py, numpy, scipy, tqdm and matplotlib,
# but not ml-collections. Wheels in .whl/ at the repository root (ignored by git) are installed first into /tmp/site.
# Fetch them once where pip reaches PyPI, for the device's Python 3.12 on x86-64 (ml-collections is pure Python and
# needs absl-py and PyYAML, both on the image):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl ml-collections==1.1.0
# and name `.whl` in the device call's carry list.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

DRY_RUN=${QUICK:-0}
[[ "${1:-}" == "--dry-run" ]] && DRY_RUN=1
OUT=${OUT:-$REPO/device_check_out}
WORK=${WORK:-/tmp/device_check_work}
BUDGET_S=${BUDGET_S:-585}
SWEEP_S=${SWEEP_S:-90}
ACCELERATOR_S=${ACCELERATOR_S:-60}
STAGES=${STAGES:-sweep accelerator experiment}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
if [[ "$DRY_RUN" == 1 ]]; then
    export JAX_PLATFORMS=cpu
    SWEEP_ARGS=${SWEEP_ARGS:---quick --workers=0}
    ACCELERATOR_ARGS=${ACCELERATOR_ARGS:---quick}
    SIZE=tiny
else
    SWEEP_ARGS=${SWEEP_ARGS:---size=gpu --members=1,4,16 --calls=2 --repeats=2}
    ACCELERATOR_ARGS=${ACCELERATOR_ARGS:---size=gpu --graphs=four_by_four --calls=2 --repeats=2}
    SIZE=gpu
fi
mkdir -p "$OUT" "$WORK"
LOG=$OUT/device_check.log
: > "$LOG"
START=$(date +%s)

say() { echo "$@" | tee -a "$LOG"; }

if compgen -G ".whl/*.whl" > /dev/null; then
    say "installing $(ls .whl/*.whl | wc -l) wheel(s) from .whl/ into /tmp/site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl 2>&1 | tee -a "$LOG" || { say "error: the wheels in .whl/ did not install"; exit 1; }
    export PYTHONPATH=/tmp/site:$REPO${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1

# stage NAME CAP_SECONDS OUTPUT_FILE COMMAND...: runs COMMAND under `timeout`, its output to the log and the file.
declare -A WALL STATUS
stage() {
    local name=$1 cap=$2 file=$3
    shift 3
    say ""
    say "== $name (at most ${cap} s): $*"
    local started
    started=$(date +%s%N)
    timeout --signal=TERM --kill-after=10 "$cap" "$@" 2>&1 | tee "$file" | tee -a "$LOG" > /dev/null
    local status=${PIPESTATUS[0]}
    local milliseconds=$((($(date +%s%N) - started) / 1000000))
    WALL[$name]=$((milliseconds / 1000)).$((milliseconds % 1000 / 100))
    case $status in
        0) STATUS[$name]="ok" ;;
        124|137) STATUS[$name]="cut at ${cap} s" ;;
        *) STATUS[$name]="failed (exit $status)" ;;
    esac
    say "== $name: ${STATUS[$name]}, ${WALL[$name]} s"
}
wants() { [[ " $STAGES " == *" $1 "* ]]; }

# A missing package fails here in one line, not minutes into a stage.
if ! "$PYTHON" -c "import absl, flax, jax, ml_collections, optax, orbax.checkpoint, scipy, tqdm" 2>> "$LOG"; then
    say "error: $PYTHON cannot import the packages gssm_jax needs (see $LOG); carry their wheels in .whl/ (header)"
    exit 1
fi

say "== device"
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG"
fi
DEVICE=$("$PYTHON" -c "from benchmarks import measure; print(measure.device_name())" 2>&1 | tail -1)
say "$DEVICE"

wants sweep && stage sweep "$SWEEP_S" "$OUT/sweep.md" "$PYTHON" -m benchmarks.sweep $SWEEP_ARGS
wants accelerator && stage accelerator "$ACCELERATOR_S" "$OUT/accelerator.md" \
    "$PYTHON" -m benchmarks.accelerator $ACCELERATOR_ARGS
if wants experiment; then
    LEFT=$((BUDGET_S - ($(date +%s) - START) - 25))  # room for the kill and the summary
    ((LEFT < 60)) && LEFT=60
    stage experiment "$LEFT" "$OUT/experiment.log" "$PYTHON" -m gssm_jax.cli.experiment1 \
        --config=experiment1:size=$SIZE --workdir="$WORK/experiment1_$SIZE"
    [[ -f "$WORK/experiment1_$SIZE/report.md" ]] && cp "$WORK/experiment1_$SIZE/report.md" "$OUT/report.md"
fi

# The summary: what a reader of the device call's output needs, without the logs.
table() { grep '^|' "$1" 2>/dev/null || echo "(no rows: see device_check.log)"; }
{
    echo "# device_check.sh summary ($( [[ "$DRY_RUN" == 1 ]] && echo "dry run, size=tiny" || echo "size=gpu"))"
    echo
    echo "$DEVICE"
    for name in sweep accelerator experiment; do
        wants "$name" && echo "- $name: ${STATUS[$name]}, wall ${WALL[$name]} s"
    done
    if wants sweep; then echo; echo "## Ensembles vs solo runs (benchmarks.sweep)"; echo; table "$OUT/sweep.md"; fi
    if wants accelerator; then
        echo; echo "## Loop vs step + sampling (benchmarks.accelerator)"; echo; table "$OUT/accelerator.md"
    fi
    if wants experiment; then
        echo; echo "## Experiment 1 (size=$SIZE): wall time ${WALL[experiment]} s"
        if [[ -f "$OUT/report.md" ]]; then
            awk '/^## Answer/ {keep = 1; next} /^## / {keep = 0} keep' "$OUT/report.md"
        else
            echo; echo "no report.md: see experiment.log"; tail -5 "$OUT/experiment.log" 2>/dev/null
        fi
    fi
    echo
    echo "total $(( $(date +%s) - START )) s; files in $OUT"
} > "$OUT/summary.md"
cat "$OUT/summary.md" | tee -a "$LOG"
for name in sweep accelerator experiment; do
    wants "$name" && [[ "${STATUS[$name]}" == failed* ]] && exit 1
done
exit 0
