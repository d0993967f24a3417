#!/usr/bin/env bash
# Clustering benchmarks (README "Running more than one node"): the same load against one node
# and against N nodes sharing Postgres and Redis, clients spread over the nodes in turn.
#
#   bench/cluster.sh                      # every case
#   CASES="fanout throughput" bench/cluster.sh
#
# Cases:
#   fanout      1 room × 100 clients at 1 and 12 updates/s: one node, then 3 nodes
#   throughput  4 writers / 16 readers on one document, pipelined: one node, then 3 nodes
#   idle        IDLE_CONNS (100000) synced idle connections over IDLE_NODES (6) nodes
#               (a process may hold 20,000 files here, so 5 nodes top out near 99,500)
#
# Knobs: DURATION=20, PG_URL (a database this script may create databases on; default
# postgres://postgres@127.0.0.1:5432/test), REDIS_URL (default redis://127.0.0.1:6379),
# SKIP_BUILD=1, QUIET_PCT/QUIET_WAIT (see lib.sh). Each run gets a fresh database and a fresh
# Redis channel prefix. Server CPU is per node, % of one core over the whole bench run
# (utime+stime from /proc), and includes connecting.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-20}
CASES=${CASES:-fanout throughput idle}
IDLE_CONNS=${IDLE_CONNS:-100000}
IDLE_NODES=${IDLE_NODES:-6}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
SERVER="$ROOT/target/release/tandem"
BENCH="$ROOT/target/release/tandem-bench"
OUT=$(mktemp -d /tmp/tandem-cluster-bench.XXXXXX)
START_WAIT=30
STOP_WAIT=20
SERVER_ARGS="--max-messages-per-sec 0 --max-conns-per-doc 0"

command -v jq >/dev/null || { echo "cluster.sh needs jq" >&2; exit 1; }
command -v psql >/dev/null || { echo "cluster.sh needs psql" >&2; exit 1; }
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
release_binaries

DB="tandem_bench_$$"
psql -q "$PG_URL" -c "CREATE DATABASE $DB" >/dev/null
DB_URL="${PG_URL%/*}/$DB"

NODE_PIDS=()
NODE_URLS=()
stop_nodes() {
    local pid
    for pid in "${NODE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${NODE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    NODE_PIDS=()
    NODE_URLS=()
}
cleanup() {
    stop_nodes
    psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# start_nodes NAME N [REDIS]: N nodes on the bench database (clustered when REDIS is given).
start_nodes() {
    local name=$1 n=$2 redis=${3:-} i prefix
    prefix="bench-$$-$RANDOM"
    for i in $(seq 1 "$n"); do
        # shellcheck disable=SC2046 # the cluster arguments are a list of words
        launch_server "$name-node$i" --database-url "$DB_URL" \
            $([[ -n "$redis" ]] && echo --redis-url "$redis" --redis-prefix "$prefix")
        NODE_PIDS+=("$SERVER_PID")
        NODE_URLS+=("ws://127.0.0.1:$PORT")
        SERVER_PID=""
    done
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
urls() { local IFS=,; echo "${NODE_URLS[*]}"; }

# run NAME N REDIS BENCH-ARGS...: nodes up, the bench against all of them, CPU per node.
run() {
    local name=$1 n=$2 redis=$3 pid t0 secs hz
    shift 3
    hz=$(getconf CLK_TCK)
    wait_quiet
    start_nodes "$name" "$n" "$redis"
    declare -A before
    for pid in "${NODE_PIDS[@]}"; do before[$pid]=$(cpu_ticks "$pid"); done
    t0=$(date +%s.%N)
    echo "== $name: tandem-bench $* (nodes: $(urls))" >&2
    "$BENCH" "$@" --url "$(urls)" >"$OUT/$name.txt" 2>"$OUT/$name.err" || echo "   $name failed; see $OUT/$name.err" >&2
    secs=$(echo "$(date +%s.%N) - $t0" | bc)
    : >"$OUT/$name.cpu"
    for pid in "${NODE_PIDS[@]}"; do
        echo "$pid $(echo "scale=1; ($(cpu_ticks "$pid") - ${before[$pid]}) * 100 / $hz / $secs" | bc)" >>"$OUT/$name.cpu"
    done
    grep '^{' "$OUT/$name.txt" | tail -1 >"$OUT/$name.json" || true
    stop_nodes
}

cpus() { awk '{printf "%s%s%%", sep, $2; sep=" / "}' "$OUT/$1.cpu"; }
j() { jq -r "$1" "$OUT/$2.json"; }
ms() { jq -r "($1 // 0) / 1000 | . * 100 | round / 100"; }

wants() { [[ " $CASES " == *" $1 "* ]]; }

if wants fanout; then
    for r in 1 12; do
        run "fanout-$r-single" 1 "" fanout --rooms 1 --clients-per-room 100 --rate "$r" --duration "$DURATION"
        run "fanout-$r-cluster" 3 "$REDIS_URL" fanout --rooms 1 --clients-per-room 100 --rate "$r" --duration "$DURATION"
    done
fi
if wants throughput; then
    run throughput-single 1 "" throughput --writers 4 --readers 16 --duration "$DURATION"
    run throughput-cluster 3 "$REDIS_URL" throughput --writers 4 --readers 16 --duration "$DURATION"
fi

echo
echo "### Clustering ($(date -u +%Y-%m-%d), $(nproc) cores, release build, Postgres + Redis on this machine)"
if wants fanout; then
    echo
    echo "| case | nodes | delivered | p50 | p99 | max | CPU per node |"
    echo "|---|---|---|---|---|---|---|"
    for r in 1 12; do
        for kind in single cluster; do
            c="fanout-$r-$kind"
            [[ -s "$OUT/$c.json" ]] || continue
            printf '| 1 × 100 @ %s/s | %s | %s | %s ms | %s ms | %s ms | %s |\n' "$r" \
                "$([[ $kind == single ]] && echo 1 || echo 3)" \
                "$(j '.delivered_ratio * 10000 | round / 100 | tostring + "%"' "$c")" \
                "$(ms .latency.p50_us <"$OUT/$c.json")" "$(ms .latency.p99_us <"$OUT/$c.json")" \
                "$(ms .latency.max_us <"$OUT/$c.json")" "$(cpus "$c")"
        done
    done
fi
if wants throughput; then
    echo
    echo "| throughput 4 writers / 16 readers | nodes | accepted updates/s | ack p50 / p99 | reader p99 | CPU per node |"
    echo "|---|---|---|---|---|---|"
    for kind in single cluster; do
        c="throughput-$kind"
        [[ -s "$OUT/$c.json" ]] || continue
        printf '| one document | %s | %s | %s / %s ms | %s ms | %s |\n' \
            "$([[ $kind == single ]] && echo 1 || echo 3)" "$(j .accepted_per_s "$c")" \
            "$(ms .echo_latency.p50_us <"$OUT/$c.json")" "$(ms .echo_latency.p99_us <"$OUT/$c.json")" \
            "$(ms .reader_latency.p99_us <"$OUT/$c.json")" "$(cpus "$c")"
    done
fi

if wants idle; then
    wait_quiet
    start_nodes idle "$IDLE_NODES" "$REDIS_URL"
    declare -A rss0
    for pid in "${NODE_PIDS[@]}"; do rss0[$pid]=$(rss_kb "$pid"); done
    procs=$(((IDLE_CONNS + 18999) / 19000))
    echo "== idle: $IDLE_CONNS connections over $IDLE_NODES nodes, $procs client processes" >&2
    "$BENCH" idle --conns "$IDLE_CONNS" --rooms 1000 --procs "$procs" --source-ips 8 --hold 20 \
        --url "$(urls)" >"$OUT/idle.txt" 2>"$OUT/idle.err" &
    bench_pid=$!
    declare -A peak cpu0
    hz=$(getconf CLK_TCK)
    while kill -0 "$bench_pid" 2>/dev/null; do
        for pid in "${NODE_PIDS[@]}"; do
            r=$(rss_kb "$pid")
            ((r > ${peak[$pid]:-0})) && peak[$pid]=$r
        done
        if grep -q "holding" "$OUT/idle.txt" 2>/dev/null && [[ -z "${cpu0[${NODE_PIDS[0]}]:-}" ]]; then
            for pid in "${NODE_PIDS[@]}"; do cpu0[$pid]=$(cpu_ticks "$pid"); done
            hold_t0=$(date +%s.%N)
        fi
        sleep 1
    done
    wait "$bench_pid" || echo "   idle failed; see $OUT/idle.err" >&2
    grep '^{' "$OUT/idle.txt" | tail -1 >"$OUT/idle.json" || true
    echo
    echo "| idle connections | nodes | synced | connect+sync rate | RSS per node (peak − start) | per connection | idle CPU per node while held |"
    echo "|---|---|---|---|---|---|---|"
    per_node=$((IDLE_CONNS / IDLE_NODES))
    rss="" kib="" idle_cpu=""
    for pid in "${NODE_PIDS[@]}"; do
        d=$(( ${peak[$pid]:-0} - ${rss0[$pid]} ))
        rss+="${rss:+ / }$((d / 1024)) MiB"
        kib+="${kib:+ / }$(echo "scale=2; $d / $per_node" | bc) KiB"
        if [[ -n "${hold_t0:-}" ]]; then
            idle_cpu+="${idle_cpu:+ / }$(echo "scale=1; ($(cpu_ticks "$pid") - ${cpu0[$pid]}) * 100 / $hz / ($(date +%s.%N) - $hold_t0)" | bc)%"
        fi
    done
    printf '| %s | %s | %s | %s conns/s | %s | %s | %s |\n' "$IDLE_CONNS" "$IDLE_NODES" \
        "$(j .synced idle)" "$(j .conns_per_s idle)" "$rss" "$kib" "${idle_cpu:-?}"
    stop_nodes
fi
echo
echo "Raw output: $OUT" >&2
