#!/usr/bin/env bash
# A nightly memory soak for cron (SPEC §11): a 24-hour `arbiter soak`, its artifacts kept under
# a dated folder, and the soak's exit status as the script's, so cron's mail says what happened.
#
#   scripts/soak-cron.sh                       # 24 h on the embedded SQLite scratch store
#   scripts/soak-cron.sh --backend postgres    # extra arguments go to `arbiter soak`
#
# Knobs (deliberately not ARBITER_*: every ARBITER_* variable is read as a setting):
#   SOAK_ARBITER=arbiter        the CLI to run
#   SOAK_ROOT=<data_dir>/soak-runs   where the dated folders go
#   SOAK_DURATION=24h  SOAK_INTERVAL=30s  SOAK_BACKEND=sqlite  SOAK_MAX_RSS=512MiB
#   SOAK_METRICS_FILE=<folder>/soak.prom   e.g. node-exporter's textfile collector directory
#   SOAK_KEEP_DAYS=14           dated folders older than this are deleted (0 keeps all)
#
# Quiet on a pass; on any other exit it prints the verdict and the last log lines, which cron
# mails to MAILTO. Exit codes are arbiter's: 0 pass, 1 leak, 11 RSS over the hard limit; and 75
# (EX_TEMPFAIL) when another soak-cron.sh still runs under the same SOAK_ROOT: a 24-hour soak
# started daily would otherwise overlap the next one. The lock is `flock -n` on
# SOAK_ROOT/.soak-cron.lock, released by the kernel when the script ends, however it ends.
set -uo pipefail

ARBITER=${SOAK_ARBITER:-arbiter}
DATA_DIR=${ARBITER_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/arbiter}
ROOT=${SOAK_ROOT:-$DATA_DIR/soak-runs}
DURATION=${SOAK_DURATION:-24h}
INTERVAL=${SOAK_INTERVAL:-30s}
BACKEND=${SOAK_BACKEND:-sqlite}
MAX_RSS=${SOAK_MAX_RSS:-512MiB}
KEEP_DAYS=${SOAK_KEEP_DAYS:-14}

mkdir -p "$ROOT"
exec 9>>"$ROOT/.soak-cron.lock"
if ! flock -n 9; then
    echo "soak-cron.sh: a soak is still running under $ROOT (lock $ROOT/.soak-cron.lock held); not starting another"
    exit 75
fi

out="$ROOT/$(date -u +%Y-%m-%d)"
[[ -e "$out" ]] && out="$out-$(date -u +%H%M%S)"  # a second run the same day
mkdir -p "$out"
METRICS=${SOAK_METRICS_FILE:-$out/soak.prom}

# No colours or live view: stderr is a file, and these make sure of it.
export NO_COLOR=1 TERM=dumb

"$ARBITER" --metrics-file "$METRICS" soak --duration "$DURATION" --sample-interval "$INTERVAL" \
    --backend "$BACKEND" --max-rss "$MAX_RSS" --output "$out" "$@" \
    >"$out/result.txt" 2>"$out/soak.log" </dev/null
status=$?

if [[ "$KEEP_DAYS" -gt 0 ]]; then
    find "$ROOT" -mindepth 1 -maxdepth 1 -type d -name '20??-??-??*' -mtime +"$KEEP_DAYS" \
        -exec rm -rf {} + 2>/dev/null
fi

if [[ $status -ne 0 ]]; then
    echo "arbiter soak on $(hostname) exited $status; artifacts in $out"
    head -n 3 "$out/result.txt"
    echo "--- last log lines"
    tail -n 5 "$out/soak.log"
fi
exit $status
