#!/usr/bin/env bash
# Rerun the benchmarks of docs/performance.md and print one JSON line per result.
#
#   scripts/bench.sh                          # from the repository root, venv at .venv
#   ARBITER=path/to/arbiter scripts/bench.sh  # another build of the CLI
#
# Knobs (deliberately not ARBITER_*: every ARBITER_* variable is read as a setting):
#   BENCH_REPEAT=3   runs of each registry-v1 memory benchmark
#   BENCH_RUNS=20    timed runs of each CLI command (after BENCH_WARMUP=3 warm-up runs)
#   BENCH_TIMER=auto hyperfine, loop, or auto (hyperfine when installed)
#   BENCH_DATABASE_URL=  a PostgreSQL server: also run the api workload there (1 and 2 serve
#                        workers, interleaved, BENCH_REPEAT times; scratch databases only)
#
# Everything runs in a throwaway data and config directory, removed on exit; the real store
# and settings are never touched. Timings use hyperfine when it is installed
# (apt-get install -y hyperfine; its JSON is read with python3), otherwise a plain loop
# around date +%s%N. Run it on a quiet machine: other load shows up directly in the figures.
set -euo pipefail

ARBITER=${ARBITER:-.venv/bin/arbiter}
REPEAT=${BENCH_REPEAT:-3}
RUNS=${BENCH_RUNS:-20}
WARMUP=${BENCH_WARMUP:-3}
TIMER=${BENCH_TIMER:-auto}
if [[ $TIMER == auto ]]; then
    if command -v hyperfine >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1; then
        TIMER=hyperfine
    else
        TIMER=loop
    fi
fi

if [[ ! -x $ARBITER ]] && ! command -v "$ARBITER" >/dev/null 2>&1; then
    echo "bench.sh: $ARBITER not found; run from the repository root or set ARBITER=" >&2
    exit 2
fi
if [[ $ARBITER == */* ]]; then
    ARBITER=$(cd "$(dirname "$ARBITER")" && pwd)/$(basename "$ARBITER")
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/arbiter-bench.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
# Nothing from the caller's arbiter environment (a database URL, a token, a profile) may
# reach the runs: drop every ARBITER_* variable, then point data and config at the scratch
# directory (init saves its admin token there, and agents list reads it back).
while read -r name; do unset "$name"; done < <(compgen -e | grep '^ARBITER_' || true)
export ARBITER_DATA_DIR=$scratch/data ARBITER_CONFIG_DIR=$scratch/config
mkdir -p "$ARBITER_DATA_DIR" "$ARBITER_CONFIG_DIR"

# --- registry-v1 on the in-memory store (SPEC §13) ------------------------------------------
for agents in 1000 10000; do
    for _ in $(seq "$REPEAT"); do
        "$ARBITER" --json bench --workload registry-v1 --agents "$agents" --backend memory
    done
done

# --- route decisions on the in-memory store (SPEC §13) ---------------------------------------
for agents in 100 1000; do
    "$ARBITER" --json bench --workload route --agents "$agents" --queries 1000
done

# --- route + outcome over HTTP through arbiter serve on PostgreSQL (SPEC §13.1) -----------
if [[ -n ${BENCH_DATABASE_URL:-} ]]; then
    for _ in $(seq "$REPEAT"); do
        for workers in 1 2; do
            "$ARBITER" --json bench --workload api --agents 100 --backend postgres \
                --database-url "$BENCH_DATABASE_URL" --processes 4 --server-workers "$workers" \
                --seconds 10
        done
    done
fi

# --- CLI wall time on SQLite with 5 agents ------------------------------------------------
"$ARBITER" init >/dev/null
for i in 1 2 3 4 5; do
    "$ARBITER" agents register --id "coder-$i" --name "Coder $i" --model-family claude-3.5 \
        --task-type code-editing --language Python --capacity 4 >/dev/null
done

# Print {"command", "runs", "mean_s", "median_s", "min_s", "max_s"} from seconds on stdin.
summarize() {
    sort -g | awk -v cmd="$1" '
        { t[NR] = $1; sum += $1 }
        END {
            n = NR; med = (n % 2) ? t[(n + 1) / 2] : (t[n / 2] + t[n / 2 + 1]) / 2
            printf "{\"command\": \"%s\", \"runs\": %d, \"mean_s\": %.4f, \"median_s\": %.4f, ", cmd, n, sum / n, med
            printf "\"min_s\": %.4f, \"max_s\": %.4f}\n", t[1], t[n]
        }'
}

time_command() {
    local label=$1; shift
    if [[ $TIMER == hyperfine ]]; then
        hyperfine --style none --warmup "$WARMUP" --runs "$RUNS" -N \
            --export-json "$scratch/hyperfine.json" "$*" >/dev/null
        python3 -c 'import json, sys
for t in json.load(open(sys.argv[1]))["results"][0]["times"]:
    print(t)' "$scratch/hyperfine.json" | summarize "$label"
    else
        for _ in $(seq "$WARMUP"); do "$@" >/dev/null 2>&1; done
        for _ in $(seq "$RUNS"); do
            local start end
            start=$(date +%s%N)
            "$@" >/dev/null 2>&1
            end=$(date +%s%N)
            echo "$(( end - start ))e-9"
        done | summarize "$label"
    fi
}

time_command "arbiter --version" "$ARBITER" --version
time_command "arbiter --help" "$ARBITER" --help
time_command "arbiter agents list" "$ARBITER" agents list
