#!/usr/bin/env bash
# History API benchmark (issue 5, point 8), printed as a markdown section for BENCHMARKS.md.
#
# Targets: a timeline page of a document with one million log rows in ≤ 50 ms; the state at an
# arbitrary point of the automerge-paper trace document in ≤ 200 ms.
#
# Per backend (sqlite, postgres) and per snapshot setting (SNAPSHOT_EVERY; 1000 = the server's
# default), on a fresh database, with a release server started with --admin-token:
#   load     trace-load writes the trace through the WebSocket protocol, one update per trace
#            transaction: once into document "$TRACE" (state and diff requests), and PASSES times
#            into document "$TRACE-xPASSES" (each pass into its own Y.Text: PASSES × the trace's
#            transactions = log rows; 4 × 259,778 = 1,039,112 for automerge-paper), for timeline
#            pages. Server `--max-messages-per-sec 0` (the default rate limit would throttle
#            the loader), `--snapshot-every-updates N`.
#   size     the server is stopped (final snapshots written); database size on disk
#   history  the server is restarted; `tandem-bench history` times timeline pages (asc from a
#            random `after`, desc from a random `before`, the newest page, group=session), state
#            reads (json and binary) at random points, diffs ~DIFF_SPAN changes apart and the
#            documents list, SAMPLES requests each, and checks every answer against the trace
#
# Editing traces: the public "editing-traces" collection by Joseph Gentle, CC BY 4.0
# (https://creativecommons.org/licenses/by/4.0/), in $TRACE_DIR.
#
# Knobs (environment):
#   BACKENDS="sqlite postgres"
#   SNAPSHOT_EVERY="1000 10000"   server --snapshot-every-updates, one full run each
#   TRACE=automerge-paper  TRACE_DIR=/work/shared/data/editing-traces
#   PASSES=4  SAMPLES=50  DIFF_SPAN=1000  SEED=1
#   LOAD_RATE=10000   trace-load --rate (updates/s): paced so the server's snapshots keep up
#                     (a snapshot is not started while the previous one is being written, so
#                     an unpaced load gets fewer, farther apart snapshots than typing would);
#                     0 = unpaced
#   PG_URL=postgres://postgres@127.0.0.1:5432  PG_ADMIN_DB=test (where create/drop database
#   run)  PG_DB=tandem_history_bench (dropped and recreated per case, dropped at exit)
#   REPLAY_CACHE=/tmp/tandem-bench-replays   where trace-load and history cache the trace's
#                     replay (replaying automerge-paper through yrs costs minutes per pass)
#   PERF=1            afterwards, per request group (timeline, long-state, state, diff), record
#                     the server with `perf record` during PERF_SAMPLES more requests and report
#                     where its CPU time goes (yrs, the server's history code, SQLite, JSON,
#                     memcpy/malloc, kernel) and the hottest symbols
#   PERF_SAMPLES=20
#   KEEP_DATA=1       keep the SQLite directory / Postgres database of the last case
#   CARGO_TARGET_DIR  where the release binaries are (default: target/ of the workspace)
#   SKIP_BUILD=1, QUIET_PCT=15, QUIET_WAIT=900, SERVER_ARGS=...   as in run.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BACKENDS=${BACKENDS:-sqlite postgres}
SNAPSHOT_EVERY=${SNAPSHOT_EVERY:-1000 10000}
TRACE=${TRACE:-automerge-paper}
TRACE_DIR=${TRACE_DIR:-/work/shared/data/editing-traces}
PASSES=${PASSES:-4}
SAMPLES=${SAMPLES:-50}
DIFF_SPAN=${DIFF_SPAN:-1000}
SEED=${SEED:-1}
LOAD_RATE=${LOAD_RATE:-10000}
PERF_SAMPLES=${PERF_SAMPLES:-20}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PG_ADMIN_DB=${PG_ADMIN_DB:-test}
PG_DB=${PG_DB:-tandem_history_bench}
PG_USER=$(echo "$PG_URL" | sed -E 's|^[a-z]+://([^:@/]+).*|\1|')
SERVER_ARGS=${SERVER_ARGS:-}
REPLAY_CACHE=${REPLAY_CACHE:-/tmp/tandem-bench-replays}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SERVER="$TARGET_DIR/release/tandem"
BENCH="$TARGET_DIR/release/tandem-bench"
OUT=$(mktemp -d /tmp/tandem-history.XXXXXX)
TRACE_FILE="$TRACE_DIR/$TRACE.json.gz"
BIG="$TRACE-x$PASSES"
# Only this script and the server it starts see it.
ADMIN_TOKEN="bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
export TANDEM_ADMIN_TOKEN=$ADMIN_TOKEN

command -v jq >/dev/null || { echo "history.sh needs jq" >&2; exit 1; }
if [[ " $BACKENDS " == *" postgres "* ]]; then
    command -v psql >/dev/null || { echo "history.sh needs psql for the postgres backend" >&2; exit 1; }
fi
[[ -r "$TRACE_FILE" ]] || { echo "no trace $TRACE_FILE" >&2; exit 1; }
if [[ -n "${PERF:-}" ]]; then
    command -v perf >/dev/null || { echo "PERF=1 needs perf" >&2; exit 1; }
fi
# A server writes the final snapshots of large histories on SIGTERM.
STOP_WAIT=60
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
release_binaries

DATA_DIR=""
PG_USED=""

db_url() {
    case $1 in
        sqlite) echo "sqlite://$DATA_DIR/tandem.db" ;;
        postgres) echo "$PG_URL/$PG_DB" ;;
    esac
}

pg_admin() { psql "$PG_URL/$PG_ADMIN_DB" -qAt -v ON_ERROR_STOP=1 -c "$1"; }

# Empty database for a case.
fresh_db() {
    drop_data
    DATA_DIR=$(mktemp -d /tmp/tandem-history-data.XXXXXX)
    if [[ $1 == postgres ]]; then
        PG_USED=1
        pg_admin "drop database if exists $PG_DB" >/dev/null
        pg_admin "create database $PG_DB" >/dev/null
    fi
}

drop_data() {
    [[ -n "$DATA_DIR" ]] && rm -rf "$DATA_DIR"
    DATA_DIR=""
    if [[ -n "$PG_USED" ]]; then
        pg_admin "drop database if exists $PG_DB" >/dev/null || true
    fi
}

cleanup() {
    stop_server
    if [[ -z "${KEEP_DATA:-}" ]]; then
        drop_data
    else
        echo "kept: ${DATA_DIR:-} ${PG_USED:+postgres database $PG_DB}" >&2
    fi
    return 0
}
trap cleanup EXIT

# bench NAME ARGS...: one tandem-bench run against the running server; JSON in $OUT/NAME.json.
bench() {
    local name=$1 rc=0
    shift
    echo "== $name: tandem-bench $*" >&2
    echo "tandem-bench $(printf '%q ' "$@" | sed 's/ $//')" >"$OUT/$name.cmd"
    "$BENCH" "$@" --url "ws://127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
        >"$OUT/$name.txt" 2>"$OUT/$name.err" || rc=$?
    ((rc == 0)) || echo "   $name failed (exit $rc): $(tail -3 "$OUT/$name.err")" >&2
    grep -v '^{' "$OUT/$name.txt" >&2 || true
    grep '^{' "$OUT/$name.txt" | tail -1 >"$OUT/$name.json" || true
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "   WARNING: the server died during $name; log tail:" >&2
        tail -5 "$OUT/$name.server.log" >&2
    fi
}

# Bytes the case's database takes on disk (server stopped).
db_size() {
    case $1 in
        sqlite) du -cb "$DATA_DIR"/tandem.db* | tail -1 | cut -f1 ;;
        postgres) pg_admin "select pg_database_size('$PG_DB')" ;;
    esac
}
# Per table (with indexes and TOAST) for Postgres; "table bytes" lines.
table_sizes() {
    case $1 in
        sqlite)
            if command -v sqlite3 >/dev/null; then
                sqlite3 "$DATA_DIR/tandem.db" "select name, sum(pgsize) from dbstat group by name order by 2 desc limit 6" 2>/dev/null |
                    tr '|' ' ' || true
            fi
            ;;
        postgres)
            psql "$PG_URL/$PG_DB" -qAt -F ' ' -c "select relname, pg_total_relation_size(oid) from pg_class
                where relkind = 'r' and relnamespace = 'public'::regnamespace order by 2 desc limit 6"
            ;;
    esac
}

# perf_summary FILE: the server's CPU samples by where they fall (first line: buckets, in %),
# then its 12 hottest symbols.
perf_summary() {
    perf report -i "$1" --no-children --sort dso,symbol --stdio --percent-limit 0.01 2>/dev/null |
        awk '/^ +[0-9.]+%/ {
            p = $1; sub(/%/, "", p); dso = $2; sym = ""
            for (i = 4; i <= NF; i++) sym = sym (i > 4 ? " " : "") $i
            sub(/ +- +- *$/, "", sym)
            if (sym ~ /^tandem::history/ || sym ~ /history::/) b = "history code"
            else if (sym ~ /^(yrs|<yrs)/ || sym ~ /yrs::/) b = "yrs"
            else if (sym ~ /sqlite3/ || dso ~ /sqlite/) b = "sqlite"
            else if (sym ~ /serde_json|serde::/) b = "json"
            else if (sym ~ /sqlx|postgres/) b = "sqlx"
            else if (sym ~ /memmove|memcpy|memset|malloc|free|_int_|realloc|unlink_chunk|consolidate/) b = "memcpy+malloc"
            else if (dso ~ /kernel/) b = "kernel"
            else b = "other"
            tot[b] += p
            if (n < 12) { top[n++] = sprintf("%6.2f%%  %s", p, sym) }
        }
        END {
            line = ""
            for (k in tot) line = line sprintf("%s %.0f%%, ", k, tot[k])
            print substr(line, 1, length(line) - 2)
            for (i = 0; i < n; i++) print top[i]
        }'
}

for b in $BACKENDS; do
    for every in $SNAPSHOT_EVERY; do
        c="$b-$every"
        args=(--admin-token "$ADMIN_TOKEN" --max-messages-per-sec 0 --snapshot-every-updates "$every")
        fresh_db "$b"
        echo "tandem --database-url $(db_url "$b" | sed "s|$DATA_DIR|DIR|") --admin-token TOKEN --max-messages-per-sec 0 --snapshot-every-updates $every $SERVER_ARGS" |
            xargs >"$OUT/$c.server-cmd"
        start_server "load-$c" "$b" "${args[@]}"
        wait_quiet
        bench "load1-$c" trace-load --trace "$TRACE_FILE" --room "$TRACE" --rate "$LOAD_RATE" \
            --cache-dir "$REPLAY_CACHE"
        wait_quiet
        bench "loadn-$c" trace-load --trace "$TRACE_FILE" --room "$BIG" --passes "$PASSES" \
            --rate "$LOAD_RATE" --cache-dir "$REPLAY_CACHE"
        stop_server # writes the final snapshots
        if [[ $b == postgres ]]; then
            # What autovacuum would do in the next minutes, done now so that it does not run
            # during the measurements (and the planner has statistics of the loaded tables).
            t0=$(date +%s.%N)
            psql "$PG_URL/$PG_DB" -qAt -v ON_ERROR_STOP=1 -c "vacuum (analyze)" >/dev/null
            awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f\n", b - a }' >"$OUT/$c.vacuum-s"
        fi
        db_size "$b" >"$OUT/$c.dbsize"
        table_sizes "$b" >"$OUT/$c.tables" || true
        wait_quiet
        start_server "history-$c" "$b" "${args[@]}"
        hargs=(history --timeline-doc "$BIG" --timeline-passes "$PASSES" --state-doc "$TRACE"
            --trace "$TRACE_FILE" --diff-span "$DIFF_SPAN" --cache-dir "$REPLAY_CACHE")
        # Postgres backends of this database show "postgres: USER DB ..." as their title.
        [[ $b == postgres ]] && hargs+=(--db-process-match "$PG_USER $PG_DB")
        bench "history-$c" "${hargs[@]}" --samples "$SAMPLES" --seed "$SEED"
        if [[ -n "${PERF:-}" ]]; then
            for g in timeline long-state state diff; do
                perf record -F 1999 -p "$SERVER_PID" -o "$OUT/perf-$c-$g.data" >"$OUT/perf-$c-$g.log" 2>&1 &
                perf_pid=$!
                sleep 1
                bench "perf-$c-$g" "${hargs[@]}" --kinds "$g" --samples "$PERF_SAMPLES" --seed "$((SEED + 1))"
                kill -INT "$perf_pid" 2>/dev/null || true
                wait "$perf_pid" 2>/dev/null || true
                perf_summary "$OUT/perf-$c-$g.data" >"$OUT/perf-$c-$g.top" 2>/dev/null || true
                rm -f "$OUT/perf-$c-$g.data"
            done
        fi
        stop_server
    done
done

# ---------------------------------------------------------------------------------------------
# Report
j() { jq -r "$1" "$OUT/$2.json"; }
have() { [[ -s "$OUT/$1.json" ]]; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
ms() { awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }

echo
echo "## History API (issue 5, point 8)"
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), release build; load generator, server"
echo "and Postgres $(pg_admin 'show server_version' 2>/dev/null | cut -d' ' -f1 || echo '?') on the same machine; one keep-alive HTTP/1.1 connection, requests one at a time."
echo "Documents written through the WebSocket protocol by \`trace-load\` (one update = one log row per trace"
echo "transaction): \`$TRACE\` once, \`$BIG\` $PASSES times into $PASSES texts. Random points (seed $SEED), $SAMPLES timed"
echo "requests per kind after one untimed warm-up; every answer checked against a local replay of the trace"
echo "(timeline seqs and per-change inserted/deleted counts, state text, diff spans)."
echo
echo "### Documents and storage"
echo
echo "| storage | snapshot every | document | log rows | log bytes | snapshots (rows per snapshot) | snapshot bytes | written at | database on disk |"
echo "|---|---|---|---|---|---|---|---|---|"
for b in $BACKENDS; do
    for every in $SNAPSHOT_EVERY; do
        c="$b-$every"
        have "history-$c" || continue
        for d in "$TRACE" "$BIG"; do
            load=load1
            [[ $d == "$BIG" ]] && load=loadn
            rate="?"
            have "$load-$c" && rate="$(j .updates_per_s "$load-$c") updates/s"
            size=""
            [[ $d == "$TRACE" ]] && size="$(mib "$(cat "$OUT/$c.dbsize")") (both)"
            jq -r --arg d "$d" --arg b "$b" --arg e "$every" --arg r "$rate" --arg s "$size" \
                '.documents[] | select(.name == $d) | "| \($b) | \($e) | \(.name) | \(.log_rows) | \(.log_bytes / 1048576 * 10 | round / 10) MiB | \(.snapshots) (\(if .snapshots > 0 then (.log_rows / .snapshots | round) else "—" end)) | \(.snapshot_bytes / 1048576 * 10 | round / 10) MiB | \($r) | \($s) |"' \
                "$OUT/history-$c.json"
        done
    done
done
for b in $BACKENDS; do
    for every in $SNAPSHOT_EVERY; do
        [[ -s "$OUT/$b-$every.vacuum-s" ]] || continue
        echo
        echo "$b, snapshot every $every: \`VACUUM (ANALYZE)\` after the load took $(cat "$OUT/$b-$every.vacuum-s") s (run so that autovacuum does"
        echo "not run during the measurements)."
    done
done
echo
echo "### Request times (client-side: request written → whole body read)"
echo
echo "| storage | snapshot every | request | document | p50 | p95 | max | body (p50) | checked | server CPU / request | other load |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for b in $BACKENDS; do
    for every in $SNAPSHOT_EVERY; do
        c="$b-$every"
        have "history-$c" || continue
        jq -r --arg b "$b" --arg e "$every" '.kinds[] |
            "| \($b) | \($e) | \(.kind) | \(.document) | \(.p50_us / 10 | round / 100) ms | \(.p95_us / 10 | round / 100) ms | \(.max_us / 10 | round / 100) ms | \(.body_bytes_p50) B | \(.verified)/\(.count + 1)\(if .failed > 0 then " (**\(.failed) failed**)" else "" end) | \(.cpu_us_per_request | to_entries | map(select(.value > 0)) | map("\(.key) \(.value / 10 | round / 100)") | join(", ")) ms | \(.other_cpu_pct // "?")% |"' \
            "$OUT/history-$c.json"
    done
done
echo
echo "Targets (worst p95 / worst max over the timeline kinds; over state json + binary):"
echo
for b in $BACKENDS; do
    for every in $SNAPSHOT_EVERY; do
        c="$b-$every"
        have "history-$c" || continue
        verdict() { if [[ $1 == true ]]; then echo "met"; else echo "**missed**"; fi; }
        echo "- $b, snapshot every $every: timeline page ≤ 50 ms: $(verdict "$(j .timeline_target_met "history-$c")")" \
            "(p95 $(ms "$(j .timeline_p95_us "history-$c")") ms, max $(ms "$(j .timeline_max_us "history-$c")") ms);" \
            "state ≤ 200 ms: $(verdict "$(j .state_target_met "history-$c")")" \
            "(p95 $(ms "$(j .state_p95_us "history-$c")") ms, max $(ms "$(j .state_max_us "history-$c")") ms);" \
            "newest state = endContent: $(j .end_content_verified "history-$c")"
    done
done
if [[ -n "${PERF:-}" ]]; then
    echo
    echo "### Where the server's CPU goes (perf, $PERF_SAMPLES more requests per group, server process only)"
    echo
    echo "Buckets: \`history code\` = the server's history module (summaries, diff, JSON rendering),"
    echo "\`yrs\` = decoding/applying updates and snapshots, \`sqlite\` = the embedded database,"
    echo "\`memcpy+malloc\` = libc copies and allocation (callers not recorded)."
    for b in $BACKENDS; do
        for every in $SNAPSHOT_EVERY; do
            for g in timeline long-state state diff; do
                f="$OUT/perf-$b-$every-$g.top"
                [[ -s $f ]] || continue
                echo
                echo "$b, snapshot every $every, **$g**: $(head -1 "$f")"
                echo
                echo '```'
                tail -n +2 "$f" | cut -c1-150
                echo '```'
            done
        done
    done
fi
report_problems '((.errors // []) | length) > 0 or .verified == false'
echo
echo "Commands (\`bench/history.sh\` runs them all; DIR = a fresh directory, the Postgres database is"
echo "created fresh per case and dropped afterwards; the server is restarted between load and requests):"
echo
echo '```'
for b in $BACKENDS; do
    for every in $SNAPSHOT_EVERY; do
        c="$b-$every"
        [[ -s "$OUT/$c.server-cmd" ]] || continue
        echo "# server: $(cat "$OUT/$c.server-cmd") --addr 127.0.0.1:PORT"
        for n in "load1-$c" "loadn-$c" "history-$c" "perf-$c-timeline"; do
            [[ -s "$OUT/$n.cmd" ]] && echo "$(sed "s|$TRACE_DIR|TRACES|g" "$OUT/$n.cmd") --url ws://127.0.0.1:PORT"
        done
    done
done
echo '```'
echo "(history reads the token from TANDEM_ADMIN_TOKEN; TRACES = $TRACE_DIR)"
echo
echo "Raw output: $OUT" >&2
