#!/usr/bin/env bash
# Runs the Tandem benchmark matrix and prints a markdown report for BENCHMARKS.md.
#
# Every case gets a fresh release server (`target/release/tandem`) on a free loopback port with
# a fresh temporary working directory, so it runs on the embedded default storage and no case
# sees another's memory. Results (human output, JSON lines, server logs) stay in $OUT.
#
# Knobs (environment):
#   DURATION=30        measured seconds of fanout and throughput cases
#   IDLE_HOLD=10       seconds the idle connections are held
#   IDLE_MAX=...       connections of the largest idle case (default: server fd limit - 1000)
#   SERVER_ARGS=...    extra arguments for the server
#   SKIP_BUILD=1       use the binaries already in target/release
#   QUIET_PCT=15       before each case, wait until the machine's CPU use (other processes:
#                      builds, tests) is below this % of one core ...
#   QUIET_WAIT=900     ... for at most this many seconds (then run anyway; the report shows the
#                      "other load" measured during each case)
#   CASES="f1 f2 ..."  subset of: fanout-10x10 fanout-1x100-1 fanout-1x100-8 fanout-1x100-12
#                      idle-10k idle-max throughput
#   STORAGE=1          afterwards, run bench/storage.sh too (storage backends: durable updates/s
#                      over 100 documents, fan-out against in-memory, editing traces, cold load)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-30}
IDLE_HOLD=${IDLE_HOLD:-10}
SERVER_ARGS=${SERVER_ARGS:-}
CASES=${CASES:-fanout-10x10 fanout-1x100-1 fanout-1x100-8 fanout-1x100-12 idle-10k idle-max throughput}
SERVER="$ROOT/target/release/tandem"
BENCH="$ROOT/target/release/tandem-bench"
OUT=$(mktemp -d /tmp/tandem-bench.XXXXXX)

command -v jq >/dev/null || { echo "run.sh needs jq" >&2; exit 1; }

# Servers of these cases start fast and have little to persist on SIGTERM.
START_WAIT=10
STOP_WAIT=15
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
release_binaries

# Extra server arguments of the current case only.
CASE_SERVER_ARGS=""


trap stop_server EXIT


# run_case NAME ARGS...: fresh server, one bench run, JSON saved as $OUT/NAME.json.
run_case() {
    local name=$1
    shift
    echo "== $name: tandem-bench $*" >&2
    echo "tandem-bench $*" >"$OUT/$name.cmd"
    echo "$SERVER_ARGS $CASE_SERVER_ARGS" | xargs >"$OUT/$name.server-args"
    wait_quiet
    # shellcheck disable=SC2086 # CASE_SERVER_ARGS is a list of words
    launch_server "$name" $CASE_SERVER_ARGS
    if "$BENCH" "$@" --url "ws://127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
        >"$OUT/$name.txt" 2>"$OUT/$name.err"; then
        :
    else
        echo "   $name failed (exit $?): $(tail -3 "$OUT/$name.err")" >&2
    fi
    cat "$OUT/$name.txt" >&2
    grep '^{' "$OUT/$name.txt" | tail -1 >"$OUT/$name.json" || true
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "   WARNING: the server died during $name; log tail:" >&2
        tail -5 "$OUT/$name.server.log" >&2
    fi
    stop_server
}

wants() { [[ " $CASES " == *" $1 "* ]]; }

# Largest idle case: what the server's file limit permits, with room for its own files.
server_fd_limit() {
    # shellcheck disable=SC2086 # CASE_SERVER_ARGS is a list of words
    launch_server fdprobe $CASE_SERVER_ARGS >/dev/null
    awk '/Max open files/ {print $4}' "/proc/$SERVER_PID/limits"
    stop_server
}
if wants idle-max && [[ -z "${IDLE_MAX:-}" ]]; then
    limit=$(server_fd_limit)
    if [[ "$limit" =~ ^[0-9]+$ ]]; then
        IDLE_MAX=$((limit - 1000))
    else
        IDLE_MAX=19000
    fi
fi
IDLE_MAX=${IDLE_MAX:-19000}
idle_procs() { echo $((($1 + 18999) / 19000 > 2 ? ($1 + 18999) / 19000 : 2)); }

if wants fanout-10x10; then
    run_case fanout-10x10 fanout --rooms 10 --clients-per-room 10 --rate 5 --duration "$DURATION"
fi
for r in 1 8 12; do
    if wants "fanout-1x100-$r"; then
        run_case "fanout-1x100-$r" fanout --rooms 1 --clients-per-room 100 --rate "$r" --duration "$DURATION"
    fi
done
if wants idle-10k; then
    run_case idle-10k idle --conns 10000 --rooms 100 --procs "$(idle_procs 10000)" --source-ips 4 --hold "$IDLE_HOLD"
fi
if wants idle-max; then
    run_case idle-max idle --conns "$IDLE_MAX" --rooms 100 --procs "$(idle_procs "$IDLE_MAX")" --source-ips 4 --hold "$IDLE_HOLD"
fi
if wants throughput; then
    # Writers send far above the default per-connection message rate limit (500/s: throttled
    # past the burst); this case measures raw capacity, so the limit is switched off.
    if "$SERVER" --help 2>/dev/null | grep -q -- --max-messages-per-sec; then
        CASE_SERVER_ARGS="--max-messages-per-sec 0"
    fi
    run_case throughput throughput --writers 4 --readers 16 --duration "$DURATION"
    CASE_SERVER_ARGS=""
fi

# ---------------------------------------------------------------------------------------------
# Report
ms() { jq -r "((($1) / 1000 * 100) | round) / 100"; }
mib() { jq -r "((($1) / 1024 * 10) | round) / 10"; }
j() { jq -r "$1" "$OUT/$2.json"; }
have() { [[ -s "$OUT/$1.json" ]]; }

echo
echo "## Tandem benchmarks"
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r), release build, embedded default storage;"
echo "load generator and server on the same machine. Server CPU is % of one core over the measured"
echo "window (utime+stime from /proc); latencies are send → receipt. \"other load\" is CPU used by"
echo "everything else on the machine during the window (a build or test run skews the numbers)."
if have fanout-10x10 || have fanout-1x100-1 || have fanout-1x100-8 || have fanout-1x100-12; then
    echo
    echo "### Fan-out (every client types at a steady rate; latency to every other client of the room)"
    echo
    echo "| rooms × clients | updates/s per client | delivered | p50 | p90 | p99 | max | server CPU | server RSS | bench CPU | other load |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
fi
for c in fanout-10x10 fanout-1x100-1 fanout-1x100-8 fanout-1x100-12; do
    have "$c" || continue
    f="$OUT/$c.json"
    printf '| %s × %s | %s | %s / %s (%s) | %s ms | %s ms | %s ms | %s ms | %s%% | %s MiB | %s%% | %s%% |\n' \
        "$(j .rooms "$c")" "$(j .clients_per_room "$c")" "$(j .rate_per_client "$c")" \
        "$(j .delivered "$c")" "$(j .expected_deliveries "$c")" \
        "$(j '.delivered_ratio * 10000 | round / 100 | tostring + "%"' "$c")" \
        "$(ms .latency.p50_us <"$f")" "$(ms .latency.p90_us <"$f")" \
        "$(ms .latency.p99_us <"$f")" "$(ms .latency.max_us <"$f")" \
        "$(j '.server.cpu_pct // "?"' "$c")" "$(mib '.server.rss_end_kb // 0' <"$f")" \
        "$(j '.bench.cpu_pct // "?"' "$c")" "$(j '.other_cpu_pct // "?"' "$c")"
done
if have idle-10k || have idle-max; then
    echo
    echo "### Idle connections (each synced: SyncStep2 received; spread over 100 rooms)"
    echo
    echo "| connections | synced | connect+sync rate | connect p50 / p99 | server RSS held | per connection | server CPU connecting / holding | dropped while held | other load |"
    echo "|---|---|---|---|---|---|---|---|---|"
fi
for c in idle-10k idle-max; do
    have "$c" || continue
    f="$OUT/$c.json"
    printf '| %s | %s | %s conns/s | %s / %s ms | %s MiB | %s KiB | %s%% / %s%% | %s | %s%% / %s%% |\n' \
        "$(j .conns "$c")" "$(j .synced "$c")" "$(j .conns_per_s "$c")" \
        "$(ms .connect_latency.p50_us <"$f")" "$(ms .connect_latency.p99_us <"$f")" \
        "$(mib '.server_hold.rss_end_kb // 0' <"$f")" "$(j '.server_kb_per_conn // "?"' "$c")" \
        "$(j '.server_connect.cpu_pct // "?"' "$c")" "$(j '.server_hold.cpu_pct // "?"' "$c")" \
        "$(j .dropped_during_hold "$c")" \
        "$(j '.other_cpu_pct_connect // "?"' "$c")" "$(j '.other_cpu_pct_hold // "?"' "$c")"
done
if have throughput; then
    f="$OUT/throughput.json"
    echo
    echo "### Throughput (one document; writers pipeline with a window of $(j .window throughput) unacknowledged updates)"
    echo
    echo "| writers / readers | accepted updates/s | delivered updates/s (all readers) | per reader | ack p50 / p99 | reader p50 / p99 | server CPU | bench CPU | other load |"
    echo "|---|---|---|---|---|---|---|---|---|"
    printf '| %s / %s | %s | %s | %s | %s / %s ms | %s / %s ms | %s%% | %s%% | %s%% |\n' \
        "$(j .writers throughput)" "$(j .readers throughput)" "$(j .accepted_per_s throughput)" \
        "$(j .delivered_per_s throughput)" "$(j .delivered_per_reader_per_s throughput)" \
        "$(ms .echo_latency.p50_us <"$f")" "$(ms .echo_latency.p99_us <"$f")" \
        "$(ms .reader_latency.p50_us <"$f")" "$(ms .reader_latency.p99_us <"$f")" \
        "$(j '.server.cpu_pct // "?"' throughput)" "$(j '.bench.cpu_pct // "?"' throughput)" \
        "$(j '.other_cpu_pct // "?"' throughput)"
fi
report_problems '((.errors // []) | length) > 0 or (.gaps // 0) > 0 or (.failed // 0) > 0
    or (.incomplete_clients // .incomplete // 0) > 0 or (.dropped_during_hold // 0) > 0'
echo
echo "Commands (each against a fresh \`target/release/tandem --addr 127.0.0.1:PORT\`; \`bench/run.sh\` runs them all):"
echo
echo '```'
for c in fanout-10x10 fanout-1x100-1 fanout-1x100-8 fanout-1x100-12 idle-10k idle-max throughput; do
    [[ -s "$OUT/$c.cmd" ]] || continue
    sargs=$(cat "$OUT/$c.server-args" 2>/dev/null || true)
    echo "$(cat "$OUT/$c.cmd") --url ws://127.0.0.1:PORT --server-pid PID${sargs:+    # server: tandem $sargs}"
done
echo '```'
echo
echo "Raw output: $OUT" >&2
if [[ -n "${STORAGE:-}" ]]; then
    stop_server
    SKIP_BUILD=1 "$ROOT/bench/storage.sh"
fi
