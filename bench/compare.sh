#!/usr/bin/env bash
# Side-by-side fan-out runs of two or more server builds, interleaved (A B A B ...), with the
# kernel's view of each server during the measured window: context switches and syscalls
# counted by `perf stat` (needs root or perf_event_paranoid <= -1 for the syscall tracepoints).
#
#   bench/compare.sh NAME=PATH/TO/tandem NAME=PATH/TO/tandem ...
#
# Knobs (environment):
#   ROUNDS=2        how many times each server runs (interleaved)
#   RATE=12         updates/s per client; CLIENTS=100 in ROOMS=1
#   DURATION=20     measured seconds (the bench adds a 3 s warm-up)
#   PERF_SECS=10    seconds counted by perf stat, starting 5 s into the run
#   BENCH=...       load generator (default target/release/tandem-bench of this tree)
#   QUIET_PCT/QUIET_WAIT as in lib.sh (default QUIET_WAIT=0: the machine is shared)
#
# Prints one markdown row per run: server CPU, p50/p99, delivered, and per delivered update
# the server's CPU µs, context switches and send/receive/wake syscalls.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-2}
RATE=${RATE:-12}
CLIENTS=${CLIENTS:-100}
ROOMS=${ROOMS:-1}
DURATION=${DURATION:-20}
PERF_SECS=${PERF_SECS:-10}
BENCH=${BENCH:-$ROOT/target/release/tandem-bench}
QUIET_WAIT=${QUIET_WAIT:-0}
SERVER_ARGS=${SERVER_ARGS:-}
OUT=$(mktemp -d /tmp/tandem-compare.XXXXXX)
START_WAIT=10
STOP_WAIT=15
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap stop_server EXIT

EVENTS=context-switches,cpu-migrations,task-clock
for s in sendto sendmsg write writev recvfrom read epoll_wait futex; do
    EVENTS="$EVENTS,syscalls:sys_enter_$s"
done

# Deliveries per second the case asks for: every update reaches every client of its room.
per_sec=$(awk -v r="$ROOMS" -v c="$CLIENTS" -v x="$RATE" 'BEGIN { print r * c * x * c }')

echo "| server | run | server CPU | µs CPU / delivered | ctx switches / delivered | sendto+sendmsg+write / delivered | recv+read / delivered | epoll_wait / delivered | futex / delivered | p50 | p99 | delivered | other load |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
    for spec in "$@"; do
        name=${spec%%=*}
        SERVER=${spec#*=}
        case=$name-$round
        wait_quiet
        launch_server "$case"
        "$BENCH" fanout --rooms "$ROOMS" --clients-per-room "$CLIENTS" --rate "$RATE" \
            --duration "$DURATION" --url "ws://127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
            >"$OUT/$case.txt" 2>"$OUT/$case.err" &
        bench=$!
        sleep 5
        perf stat -x, -e "$EVENTS" -p "$SERVER_PID" -o "$OUT/$case.perf" -- sleep "$PERF_SECS" \
            2>/dev/null || true
        wait "$bench" || echo "   $case: bench failed: $(tail -2 "$OUT/$case.err")" >&2
        stop_server
        grep '^{' "$OUT/$case.txt" | tail -1 >"$OUT/$case.json" || true
        count() { awk -F, -v e="$1" '$3 == e { s += $1 } END { print s + 0 }' "$OUT/$case.perf"; }
        n=$(awk -v p="$per_sec" -v s="$PERF_SECS" 'BEGIN { print p * s }')
        per() { awk -v a="$1" -v n="$n" 'BEGIN { printf "%.3f", a / n }'; }
        cpu_ms=$(count task-clock)
        sends=$(($(count syscalls:sys_enter_sendto) + $(count syscalls:sys_enter_sendmsg) + $(count syscalls:sys_enter_write) + $(count syscalls:sys_enter_writev)))
        recvs=$(($(count syscalls:sys_enter_recvfrom) + $(count syscalls:sys_enter_read)))
        j() { jq -r "$1" "$OUT/$case.json"; }
        printf '| %s | %s | %s%% | %s | %s | %s | %s | %s | %s | %s ms | %s ms | %s | %s%% |\n' \
            "$name" "$round" "$(j '.server.cpu_pct // "?"')" \
            "$(awk -v a="$cpu_ms" -v n="$n" 'BEGIN { printf "%.2f", a * 1000 / n }')" \
            "$(per "$(count context-switches)")" "$(per "$sends")" "$(per "$recvs")" \
            "$(per "$(count syscalls:sys_enter_epoll_wait)")" \
            "$(per "$(count syscalls:sys_enter_futex)")" \
            "$(j '.latency.p50_us / 1000 * 100 | round / 100')" \
            "$(j '.latency.p99_us / 1000 * 100 | round / 100')" \
            "$(j '.delivered_ratio * 10000 | round / 100 | tostring + "%"')" \
            "$(j '.other_cpu_pct // "?"')"
    done
done
echo
echo "Raw output: $OUT" >&2
