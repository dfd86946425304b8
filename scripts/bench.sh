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
#   BENCH_DATABASE_URL=  a PostgreSQL server: also run pgbench (the reference), e2e, registry-v1
#                        at 1 000 and 10 000 agents and the api workload there (1 and 2 serve
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

# --- the real path of SPEC §13.1: SQLite always, PostgreSQL with BENCH_DATABASE_URL ----------
for _ in $(seq "$REPEAT"); do
    "$ARBITER" --json bench --workload e2e --agents 100 --backend sqlite --processes 4 --seconds 10
    "$ARBITER" --json bench --workload registry-v1 --agents 1000 --backend sqlite \
        --queries 300 --seconds 3
done
if [[ -n ${BENCH_DATABASE_URL:-} ]]; then
    # The physical reference, in the same session: pgbench TPC-B with 4 clients on a scratch
    # database of the same server (created and dropped here; needs pgbench and psql).
    if command -v pgbench >/dev/null 2>&1 && command -v psql >/dev/null 2>&1; then
        libpq=${BENCH_DATABASE_URL/postgresql+psycopg2:/postgresql:}
        reference="arbiter_bench_pgbench_$$"
        psql -q "$libpq" -c "CREATE DATABASE $reference" >/dev/null
        pgurl="${libpq%/*}/$reference"
        pgbench -q -i -s 10 "$pgurl" >/dev/null 2>&1
        for _ in $(seq "$REPEAT"); do
            tps=$(pgbench -c 4 -j 2 -T 20 "$pgurl" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
            echo "{\"reference\": \"pgbench TPC-B\", \"clients\": 4, \"seconds\": 20, \"tps\": ${tps:-null}}"
        done
        psql -q "$libpq" -c "DROP DATABASE $reference" >/dev/null
    fi
    for _ in $(seq "$REPEAT"); do
        "$ARBITER" --json bench --workload e2e --agents 100 --backend postgres \
            --database-url "$BENCH_DATABASE_URL" --processes 4 --seconds 10
        for agents in 1000 10000; do
            "$ARBITER" --json bench --workload registry-v1 --agents "$agents" --backend postgres \
                --database-url "$BENCH_DATABASE_URL" --queries 300 --seconds 3
        done
    done
fi

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

# --- CLI wall time on SQLite with 5 agents of capacity 100 (route task never runs out) ---
"$ARBITER" init >/dev/null
for i in 1 2 3 4 5; do
    "$ARBITER" agents register --id "coder-$i" --name "Coder $i" --model-family claude-3.5 \
        --task-type code-editing --language Python --capacity 100 >/dev/null
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
time_command "arbiter route task" "$ARBITER" route task --task-type code-editing
# The floor every data command stands on (SPEC §13.1): the interpreter of the arbiter script
# importing SQLAlchemy, typer and rich; report each command as a multiple of it.
python=$(head -n 1 "$(command -v "$ARBITER")" | sed -n 's/^#! *//p')
echo "import sqlalchemy, typer, rich" > "$scratch/floor.py"
if [[ -x ${python%% *} ]]; then
    time_command "floor: python -c 'import sqlalchemy, typer, rich'" "$python" "$scratch/floor.py"
fi
