#!/usr/bin/env bash
# Soak test of Tandem (issue 10): 20 minutes of mixed load against the release server on
# Postgres — typing rooms, joins and leaves, silent peers, malformed frames, and the database cut
# off for a minute in the middle — then checks that no acknowledged update was lost (live, and
# after a restart from storage), that every client converged, and that the server never died.
# Prints the server's RSS over time (the full series is a CSV in $OUT) and a markdown section
# for BENCHMARKS.md. Exits non-zero on a lost update, a divergence or a crash.
#
# `tandem-bench soak` does the work: it creates a fresh schema in $PG_URL (dropped afterwards),
# runs a `testkit` TCP proxy between the server and Postgres (cut for the outage), starts
# target/release/tandem itself (defaults, except a short ping interval/timeout so silent peers
# are closed within the run), and restarts it at the end.
#
# Knobs (environment):
#   DURATION=1200    seconds of load (try 120 first)
#   OUTAGE=60        seconds without the database, centred in the run
#   PG_URL=$TANDEM_TEST_DATABASE_URL or postgres://postgres@127.0.0.1:5432/test
#   THREADS=1        runtime threads of the load generator
#   SKIP_BUILD=1     use the binaries already in target/release
#   QUIET_PCT=15, QUIET_WAIT=900   wait for a quiet machine first (see lib.sh)
#   Anything after the script's arguments goes to `tandem-bench soak` (e.g. --rooms 10
#   --nesting-depth 2000 --server-arg=--max-backlog-bytes=64MiB); see `tandem-bench soak --help`.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-1200}
OUTAGE=${OUTAGE:-60}
PG_URL=${PG_URL:-${TANDEM_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}}
THREADS=${THREADS:-1}
SERVER="$ROOT/target/release/tandem"
BENCH="$ROOT/target/release/tandem-bench"
OUT=$(mktemp -d /tmp/tandem-soak.XXXXXX)

command -v jq >/dev/null || { echo "soak.sh needs jq" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
release_binaries

PORT=$(free_port)
wait_quiet
echo "soak: ${DURATION}s, outage ${OUTAGE}s, port $PORT, output in $OUT" >&2
status=0
"$BENCH" soak --url "ws://127.0.0.1:$PORT" --threads "$THREADS" --server-bin "$SERVER" \
    --database-url "$PG_URL" --duration "$DURATION" --outage "$OUTAGE" \
    --csv "$OUT/rss.csv" "$@" | tee "$OUT/soak.txt" || status=$?

json=$(tail -n 1 "$OUT/soak.txt")
if ! jq -e . >/dev/null 2>&1 <<<"$json"; then
    echo "no result from tandem-bench (exit $status); see $OUT" >&2
    exit "${status:-1}"
fi

# RSS over time: about 12 points spread over the run, from the CSV.
rss_table() {
    local n step
    n=$(($(wc -l <"$OUT/rss.csv") - 1))
    step=$(((n + 11) / 12))
    ((step < 1)) && step=1
    echo "| t (s) | phase | RSS (MiB) | fds | CPU (% of a core) |"
    echo "|---:|---|---:|---:|---:|"
    awk -F, -v step="$step" -v n="$n" 'NR > 1 && ((NR - 2) % step == 0 || NR - 1 == n) {
        printf "| %.0f | %s | %.1f | %s | %.1f |\n", $1, $2, $3 / 1024, $6, $5 }' "$OUT/rss.csv"
}

{
    echo
    echo "### Soak: $(jq -r '.duration_s' <<<"$json") s on Postgres, database cut for $(jq -r '.outage_s' <<<"$json") s"
    echo
    echo "\`DURATION=$DURATION OUTAGE=$OUTAGE bench/soak.sh $*\` ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    jq -r '"| measure | value |\n|---|---|\n" +
        "| load | \(.rooms) rooms × \(.writers) writers at \(.rate)/s + \(.readers) readers; \(.churners) join-type-leave loops |\n" +
        "| server RSS | start \(.rss.start_mib) MiB, peak \(.rss.peak_mib) MiB (t=\(.rss.peak_at_s) s), end \(.rss.end_mib) MiB |\n" +
        "| RSS slope | last half \(.rss.last_half_slope_mib_per_h) MiB/h; from a minute after the database came back \(if .rss.after_recovery_slope_mib_per_h == null then "n/a (run too short)" else "\(.rss.after_recovery_slope_mib_per_h) MiB/h" end) |\n" +
        "| RSS after the checks | \(.rss.after_checks_mib) MiB (every document loaded by fresh clients) |\n" +
        "| server fds | start \(.rss.fds_start), max \(.rss.fds_max), end \(.rss.fds_end) |\n" +
        "| server CPU (mean) | \(.rss.cpu_mean_pct)% of one core |\n" +
        "| updates sent / acknowledged | \(.sent) / \(.acked) (unacknowledged after the drain: \(.unacked_after_drain)) |\n" +
        "| **lost updates** | **\(.lost)** (live \(.lost_live), after restart \(.lost_after_restart)) |\n" +
        "| clients converged | \(.converged) / \(.clients) |\n" +
        "| **crashes** | **\(.crashes)** (panics logged: \(.panics_logged)) |\n" +
        "| churn | \(.churn_joins) joins (\(.churn_refused) refused while the database was away), \(.churn_acked) edits acknowledged |\n" +
        "| silent peers | \(.silent_opened) opened, \(.silent_closed) closed by the server, \(.silent_not_closed) not closed, \(.ghosts) ghosts |\n" +
        "| malformed frames | " + ([.attacks | to_entries[] | "\(.key): \(.value.sent) sent, \(.value.sent - .value.not_closed) closed"] | join("; ")) + " |"' <<<"$json"
    echo
    rss_table
} | tee "$OUT/report.md"
echo "(report in $OUT/report.md, series in $OUT/rss.csv, server logs in $OUT)" >&2
exit "$status"
