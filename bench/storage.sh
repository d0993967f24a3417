#!/usr/bin/env bash
# Storage benchmarks of Tandem (persist-before-relay, group commit, load after restart), printed
# as a markdown section for BENCHMARKS.md. Run alone or from `STORAGE=1 bench/run.sh`.
#
# Cases, per backend (memory = nothing persisted, the reference; sqlite; postgres):
#   throughput  100 documents × (1 writer + 1 reader), server `--max-messages-per-sec 0`: durable
#               (= accepted: echoes are released only once durable) updates/s
#   fanout      1 room × 100 clients at 1 and 12 updates/s per client: p99 against memory
#   traces      (sqlite, postgres) replay editing traces into documents, one update per trace
#               transaction; then restart the server before each cold measurement and time
#               connect → SyncStep2 (whole document) for each trace's document
#
# Editing traces: the public "editing-traces" collection by Joseph Gentle, CC BY 4.0
# (https://creativecommons.org/licenses/by/4.0/), in $TRACE_DIR.
#
# Knobs (environment):
#   DURATION=20       measured seconds of throughput and fanout cases
#   RUNS=5            cold measurements per trace and backend (server restarted before each)
#   BACKENDS="memory sqlite postgres"
#   CASES="throughput fanout traces"
#   TRACES="automerge-paper seph-blog1 friendsforever"
#   TRACE_DIR=/work/shared/data/editing-traces
#   PG_URL=postgres://postgres@127.0.0.1:5432   PG_DB=tandem_bench (dropped and recreated per case)
#   SKIP_BUILD=1, QUIET_PCT=15, QUIET_WAIT=900, SERVER_ARGS=...   as in run.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-20}
RUNS=${RUNS:-5}
BACKENDS=${BACKENDS:-memory sqlite postgres}
CASES=${CASES:-throughput fanout traces}
TRACES=${TRACES:-automerge-paper seph-blog1 friendsforever}
TRACE_DIR=${TRACE_DIR:-/work/shared/data/editing-traces}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PG_DB=${PG_DB:-tandem_bench}
SERVER_ARGS=${SERVER_ARGS:-}
SERVER="$ROOT/target/release/tandem"
BENCH="$ROOT/target/release/tandem-bench"
OUT=$(mktemp -d /tmp/tandem-storage.XXXXXX)

command -v jq >/dev/null || { echo "storage.sh needs jq" >&2; exit 1; }
if [[ " $BACKENDS " == *" postgres "* ]]; then
    command -v psql >/dev/null || { echo "storage.sh needs psql for the postgres backend" >&2; exit 1; }
fi
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
release_binaries

# Where the sqlite backend keeps its file between restarts of one case.
DATA_DIR=""


# Database of a backend (fresh_db must have run for the case).
db_url() {
    case $1 in
        memory) echo memory ;;
        sqlite) echo "sqlite://$DATA_DIR/tandem.db" ;;
        postgres) echo "$PG_URL/$PG_DB" ;;
    esac
}

# Empty database for a case, so runs are comparable.
fresh_db() {
    [[ -n "$DATA_DIR" ]] && rm -rf "$DATA_DIR"
    DATA_DIR=$(mktemp -d /tmp/tandem-storage-data.XXXXXX)
    if [[ $1 == postgres ]]; then
        psql "$PG_URL/postgres" -qAt -c "drop database if exists $PG_DB" >/dev/null
        psql "$PG_URL/postgres" -qAt -c "create database $PG_DB" >/dev/null
    fi
}

cleanup() {
    stop_server
    [[ -n "$DATA_DIR" ]] && rm -rf "$DATA_DIR"
    return 0
}
trap cleanup EXIT


# bench NAME ARGS...: one tandem-bench run against the running server; JSON in $OUT/NAME.json.
bench() {
    local name=$1
    shift
    echo "== $name: tandem-bench $*" >&2
    echo "tandem-bench $*" >"$OUT/$name.cmd"
    if "$BENCH" "$@" --url "ws://127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
        >"$OUT/$name.txt" 2>"$OUT/$name.err"; then
        :
    else
        echo "   $name failed (exit $?): $(tail -3 "$OUT/$name.err")" >&2
    fi
    grep -v '^{' "$OUT/$name.txt" >&2 || true
    grep '^{' "$OUT/$name.txt" | tail -1 >"$OUT/$name.json" || true
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "   WARNING: the server died during $name; log tail:" >&2
        tail -5 "$OUT/$name.server.log" >&2
    fi
}

wants() { [[ " $CASES " == *" $1 "* ]]; }
server_cmd() { echo "tandem --database-url $(db_url "$1" | sed "s|$DATA_DIR|DIR|") $SERVER_ARGS ${*:2}" | xargs; }

for b in $BACKENDS; do
    if wants throughput; then
        fresh_db "$b"
        wait_quiet
        start_server "throughput-$b" "$b" --max-messages-per-sec 0
        server_cmd "$b" --max-messages-per-sec 0 >"$OUT/throughput-$b.server-cmd"
        bench "throughput-$b" throughput --rooms 100 --writers 1 --readers 1 --duration "$DURATION"
        stop_server
    fi
    if wants fanout; then
        for r in 1 12; do
            fresh_db "$b"
            wait_quiet
            start_server "fanout-$r-$b" "$b"
            server_cmd "$b" >"$OUT/fanout-$r-$b.server-cmd"
            bench "fanout-$r-$b" fanout --rooms 1 --clients-per-room 100 --rate "$r" --duration "$DURATION"
            stop_server
        done
    fi
    if wants traces && [[ $b != memory ]]; then
        fresh_db "$b"
        start_server "traces-$b" "$b" --max-messages-per-sec 0
        server_cmd "$b" --max-messages-per-sec 0 >"$OUT/traces-$b.server-cmd"
        for t in $TRACES; do
            wait_quiet
            bench "load-$t-$b" trace-load --trace "$TRACE_DIR/$t.json.gz" --room "$t"
        done
        stop_server # writes the final snapshots
        for run in $(seq 1 "$RUNS"); do
            wait_quiet
            : >"$OUT/cold-$run-$b.server.log"
            start_server "cold-$run-$b" "$b" --log tandem=debug
            for t in $TRACES; do
                [[ -s "$OUT/load-$t-$b.json" ]] || continue
                bench "cold-$t-$run-$b" cold-load --room "$t" --trace "$TRACE_DIR/$t.json.gz" --warm
            done
            stop_server
        done
        server_cmd "$b" --log tandem=debug >"$OUT/cold-$b.server-cmd"
    fi
done

# ---------------------------------------------------------------------------------------------
# Report
ms() { jq -r "((($1) / 1000 * 100) | round) / 100"; }
j() { jq -r "$1" "$OUT/$2.json"; }
have() { [[ -s "$OUT/$1.json" ]]; }
# p50 (lower median) and max of numbers, one per line, in ms.
p50max() { sort -n | awk '{v[NR]=$1} END {if (NR) printf "%.2f ms | %.2f ms", v[int((NR+1)/2)]/1000, v[NR]/1000; else printf "? | ?"}'; }
# µs from "open" of the first connection to "loaded" of document $2 in server log $1.
load_us() {
    sed 's/\x1b\[[0-9;]*m//g' "$1" | awk -v doc="$2" '
        function us(ts,  t) { split(substr(ts, 12, 15), t, ":"); return (t[1] * 3600 + t[2] * 60 + t[3]) * 1e6 }
        index($0, "doc=" doc " ") && / open$/ && !o { o = us($1) }
        index($0, "room{doc=" doc "}") && / loaded / && !l { l = us($1) }
        END { if (o && l) printf "%d\n", l - o }'
}

echo
echo "## Storage"
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r), release build; load generator, server and"
echo "Postgres $(psql "$PG_URL/postgres" -qAt -c 'show server_version' 2>/dev/null | cut -d' ' -f1 || echo '?') on the same machine."
echo "\`memory\` persists nothing (reference); \`sqlite\` is the embedded default (WAL, synchronous=NORMAL);"
echo "\`postgres\` is a local server. Every update is durable before any peer (or its sender) sees it."
echo "\"other load\" is CPU used by everything else on the machine during the window; with \`postgres\` it"
echo "includes the Postgres server itself."
if wants throughput; then
    echo
    echo "### Durable updates/s, 100 active documents (each: 1 writer + 1 reader; window 64 per writer)"
    echo
    echo "| storage | durable (accepted) updates/s | delivered to readers/s | ack p50 / p99 | reader p50 / p99 | server CPU | bench CPU | other load |"
    echo "|---|---|---|---|---|---|---|---|"
    for b in $BACKENDS; do
        have "throughput-$b" || continue
        f="$OUT/throughput-$b.json"
        printf '| %s | %s | %s | %s / %s ms | %s / %s ms | %s%% | %s%% | %s%% |\n' "$b" \
            "$(j .accepted_per_s "throughput-$b")" "$(j .delivered_per_s "throughput-$b")" \
            "$(ms .echo_latency.p50_us <"$f")" "$(ms .echo_latency.p99_us <"$f")" \
            "$(ms .reader_latency.p50_us <"$f")" "$(ms .reader_latency.p99_us <"$f")" \
            "$(j '.server.cpu_pct // "?"' "throughput-$b")" "$(j '.bench.cpu_pct // "?"' "throughput-$b")" \
            "$(j '.other_cpu_pct // "?"' "throughput-$b")"
    done
fi
if wants fanout; then
    echo
    echo "### Fan-out with persist-before-relay (1 room × 100 clients; latency send → every other client)"
    echo
    echo "| storage | updates/s per client | delivered | p50 | p99 | max | p99 added vs memory | server CPU | other load |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for r in 1 12; do
        for b in $BACKENDS; do
            have "fanout-$r-$b" || continue
            f="$OUT/fanout-$r-$b.json"
            added="—"
            if [[ $b != memory ]] && have "fanout-$r-memory"; then
                added="$(jq -n --slurpfile a "$f" --slurpfile m "$OUT/fanout-$r-memory.json" \
                    '((($a[0].latency.p99_us - $m[0].latency.p99_us) / 10) | round) / 100') ms"
            fi
            printf '| %s | %s | %s | %s ms | %s ms | %s ms | %s | %s%% | %s%% |\n' "$b" "$r" \
                "$(j '.delivered_ratio * 10000 | round / 100 | tostring + "%"' "fanout-$r-$b")" \
                "$(ms .latency.p50_us <"$f")" "$(ms .latency.p99_us <"$f")" "$(ms .latency.max_us <"$f")" \
                "$added" "$(j '.server.cpu_pct // "?"' "fanout-$r-$b")" "$(j '.other_cpu_pct // "?"' "fanout-$r-$b")"
        done
    done
fi
if wants traces; then
    echo
    echo "### Editing traces written as one update per trace transaction (pipelined, window 256)"
    echo
    echo "| storage | trace | transactions | update bytes | durable in | updates/s | document state | server copy = endContent |"
    echo "|---|---|---|---|---|---|---|---|"
    for b in $BACKENDS; do
        for t in $TRACES; do
            have "load-$t-$b" || continue
            printf '| %s | %s | %s | %s | %s s | %s | %s B | %s |\n' "$b" "$t" \
                "$(j .txns "load-$t-$b")" "$(j .update_bytes "load-$t-$b")" "$(j .send_s "load-$t-$b")" \
                "$(j .updates_per_s "load-$t-$b")" "$(j .final_state_bytes "load-$t-$b")" \
                "$(j .verified "load-$t-$b")"
        done
    done
    echo
    echo "### Cold load after restart: connect → SyncStep2 (whole document), $RUNS runs, server restarted before each"
    echo
    echo "\"server load\" = server log \`open\` (connection accepted) → \`loaded\` (snapshot + log tail read"
    echo "from the database and applied to a fresh Doc); the rest is handshake, encoding and sending SyncStep2."
    echo "\"in memory\" = the same fetch while the document is loaded."
    echo
    echo "| storage | trace | SyncStep2 bytes | cold p50 | cold max | server load p50 | server load max | in memory p50 | text = endContent |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for b in $BACKENDS; do
        [[ $b == memory ]] && continue
        for t in $TRACES; do
            have "cold-$t-1-$b" || continue
            cold=$(for r in $(seq 1 "$RUNS"); do have "cold-$t-$r-$b" && j '.cold_us[0]' "cold-$t-$r-$b"; done | p50max)
            load=$(for r in $(seq 1 "$RUNS"); do load_us "$OUT/cold-$r-$b.server.log" "$t"; done | p50max)
            warm=$(for r in $(seq 1 "$RUNS"); do have "cold-$t-$r-$b" && j '.warm_us[0]' "cold-$t-$r-$b"; done | p50max | cut -d'|' -f1 | xargs)
            ok=$(for r in $(seq 1 "$RUNS"); do have "cold-$t-$r-$b" && j '.verified' "cold-$t-$r-$b"; done | sort -u | xargs)
            printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$b" "$t" "$(j .sync_step2_bytes "cold-$t-1-$b")" \
                "$cold" "$load" "$warm" "$ok"
        done
    done
fi
report_problems '((.errors // []) | length) > 0 or (.gaps // 0) > 0
    or (.incomplete_clients // .incomplete // 0) > 0 or .verified == false'
echo
echo "Commands (\`bench/storage.sh\` runs them all; DIR = a fresh directory; Postgres database dropped and"
echo "recreated per case; traces from $TRACE_DIR — Joseph Gentle's editing-traces, CC BY 4.0):"
echo
echo '```'
for b in $BACKENDS; do
    for c in "throughput-$b" "fanout-1-$b" "fanout-12-$b"; do
        [[ -s "$OUT/$c.cmd" ]] || continue
        echo "# server: $(cat "$OUT/$c.server-cmd") --addr 127.0.0.1:PORT"
        echo "$(cat "$OUT/$c.cmd") --url ws://127.0.0.1:PORT --server-pid PID"
    done
    if [[ -s "$OUT/traces-$b.server-cmd" ]]; then
        echo "# server: $(cat "$OUT/traces-$b.server-cmd") --addr 127.0.0.1:PORT"
        for t in $TRACES; do
            [[ -s "$OUT/load-$t-$b.cmd" ]] && echo "$(cat "$OUT/load-$t-$b.cmd") --url ws://127.0.0.1:PORT"
        done
        echo "# then $RUNS times: restart the server as: $(cat "$OUT/cold-$b.server-cmd") --addr 127.0.0.1:PORT"
        for t in $TRACES; do
            [[ -s "$OUT/cold-$t-1-$b.cmd" ]] && echo "$(cat "$OUT/cold-$t-1-$b.cmd") --url ws://127.0.0.1:PORT"
        done
    fi
done
echo '```'
echo
echo "Raw output: $OUT" >&2
