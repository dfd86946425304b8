#!/usr/bin/env bash
# Rerun the memory figures of docs/memory.md and print one JSON line per figure.
#
#   scripts/memory-figures.sh                      # from the repository root, venv at .venv
#
# 1. baseline RSS: a soak's first sample (after setup) with 1 agent, memory and sqlite stores;
# 2. RSS per 1 000 agents: the same with 1 000, 5 000 and 9 000 agents (least-squares slope);
# 3. memray peak of `arbiter bench --workload registry-v1 --agents 10000` (memory store), run
#    under `python -m memray run --trace-python-allocators --aggregate`.
# Knobs are deliberately not ARBITER_* (every ARBITER_* variable is read as a setting).
# Everything runs in a throwaway data and config directory, removed on exit.
set -euo pipefail

PYTHON=${FIGURES_PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export ARBITER_DATA_DIR="$work/data" ARBITER_CONFIG_DIR="$work/config" NO_COLOR=1
mkdir -p "$work/config"

for backend in memory sqlite; do
    for agents in 1 1000 5000 9000; do
        "$PYTHON" -m arbiter_cli soak --backend "$backend" --agents "$agents" --duration 3s \
            --sample-interval 1s --no-memray --output "$work/soak-$backend-$agents" --json \
            2>/dev/null \
            | "$PYTHON" -c 'import json, sys; d = json.load(sys.stdin); print(json.dumps({
                "figure": "baseline_rss", "backend": sys.argv[1], "agents": int(sys.argv[2]),
                "rss_bytes": d["baseline_rss_bytes"],
                "rss_mib": round(d["baseline_rss_bytes"] / 2**20, 1)}))' "$backend" "$agents"
    done
done

"$PYTHON" -m memray run --trace-python-allocators --aggregate -q -o "$work/registry.bin" \
    -m arbiter_cli bench --workload registry-v1 --agents 10000 --json >/dev/null 2>&1
"$PYTHON" - "$work/registry.bin" <<'PY'
import json, sys
import memray
with memray.FileReader(sys.argv[1]) as reader:
    peak = reader.metadata.peak_memory
    top = sorted(reader.get_high_watermark_allocation_records(merge_threads=True),
                 key=lambda r: r.size, reverse=True)[:3]
    sites = [{"bytes": r.size, "at": " ".join(map(str, r.stack_trace(max_stacks=1)[0]))}
             for r in top if r.stack_trace(max_stacks=1)]
print(json.dumps({"figure": "memray_peak", "bench": "registry-v1", "agents": 10000,
                  "store": "memory", "peak_bytes": peak, "peak_mib": round(peak / 2**20, 1),
                  "top_sites_at_peak": sites}))
PY
