# Sourced by the bench drivers (run.sh, storage.sh, history.sh, soak.sh).
#
# release_binaries: builds the release server and load generator (unless SKIP_BUILD=1) and
# checks that $SERVER and $BENCH exist.
#
# wait_quiet: wait (bounded) until other processes leave the CPU alone before a case, since the
# numbers mean little otherwise.
#   QUIET_PCT=15    machine CPU use (other processes, % of one core) counted as quiet
#   QUIET_WAIT=900  longest wait in seconds, then the case runs anyway
#
# launch_server LOGNAME ARGS...: starts $SERVER in a fresh working directory on a free port
# ($PORT, $SERVER_PID, $SERVER_DIR), with $SERVER_ARGS then ARGS, its output appended to
# $OUT/LOGNAME.server.log, and waits until it listens.
#   START_WAIT=30   seconds it may take to listen
# start_server LOGNAME BACKEND ARGS...: launch_server on the driver's database of BACKEND (its
# db_url function names it).
# report_problems CONDITION: under "Problems seen:", the cases in $OUT whose JSON result matches
# the jq CONDITION (with its errors), and the cases that ran (a .cmd) but left no result.
# stop_server: SIGTERM, waits for the exit (SIGKILL after STOP_WAIT seconds, default 30),
# removes the working directory. Does nothing when no server runs.

QUIET_PCT=${QUIET_PCT:-15}
QUIET_WAIT=${QUIET_WAIT:-900}

# Machine busy ticks (all cores), from /proc/stat.
busy_ticks() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat; }

wait_quiet() {
    local waited=0 a b pct hz
    hz=$(getconf CLK_TCK)
    while ((waited < QUIET_WAIT)); do
        a=$(busy_ticks)
        sleep 2
        b=$(busy_ticks)
        pct=$(((b - a) * 100 / hz / 2))
        if ((pct < QUIET_PCT)); then
            return 0
        fi
        ((waited % 60 == 0)) && echo "   machine busy (${pct}% of one core); waiting for it to calm down..." >&2
        waited=$((waited + 2))
    done
    echo "   machine still busy after ${QUIET_WAIT}s; running anyway" >&2
}

# A loopback port nobody listens on.
free_port() {
    local p
    for p in $(seq 21000 21999); do
        if [[ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]]; then
            echo "$p"
            return 0
        fi
    done
    echo "no free port in 21000-21999" >&2
    return 1
}

release_binaries() {
    if [[ -z "${SKIP_BUILD:-}" ]]; then
        echo "building release binaries..." >&2
        (cd "$ROOT" && cargo build --release -p tandem-server -p tandem-bench) >&2
    fi
    [[ -x "$SERVER" && -x "$BENCH" ]] || { echo "missing $SERVER or $BENCH" >&2; exit 1; }
}

SERVER_PID=""
PORT=""
SERVER_DIR=""

launch_server() {
    local name=$1 i
    shift
    PORT=$(free_port)
    SERVER_DIR=$(mktemp -d /tmp/tandem-server.XXXXXX)
    # shellcheck disable=SC2086 # SERVER_ARGS is a list of words
    (cd "$SERVER_DIR" && exec "$SERVER" --addr "127.0.0.1:$PORT" $SERVER_ARGS "$@") \
        >>"$OUT/$name.server.log" 2>&1 &
    SERVER_PID=$!
    for i in $(seq 1 $((${START_WAIT:-30} * 10))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "server exited at start; log:" >&2
            tail -50 "$OUT/$name.server.log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "server did not listen on $PORT within ${START_WAIT:-30} s" >&2
    return 1
}

# start_server LOGNAME BACKEND EXTRA-ARGS...
start_server() {
    local name=$1 backend=$2
    shift 2
    launch_server "$name" --database-url "$(db_url "$backend")" "$@"
}

stop_server() {
    local i limit=${STOP_WAIT:-30}
    [[ -n "$SERVER_PID" ]] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for i in $(seq 1 $((limit * 10))); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "server $SERVER_PID ignored SIGTERM for $limit s; killing it" >&2
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    [[ -n "$SERVER_DIR" ]] && rm -rf "$SERVER_DIR"
    SERVER_DIR=""
}

report_problems() {
    local problems missing
    problems=$(cd "$OUT" && for f in *.json; do
        [[ -s "$f" ]] || continue
        jq -r --arg c "${f%.json}" 'select('"$1"') | "- \($c): \((.errors // []) | join("; "))"' "$f"
    done)
    missing=$(cd "$OUT" && for f in *.cmd; do
        [[ -e "$f" && ! -s "${f%.cmd}.json" ]] || continue
        echo "- ${f%.cmd}: no result ($(tail -1 "${f%.cmd}.err" 2>/dev/null))"
    done)
    if [[ -n "$problems$missing" ]]; then
        echo
        echo "Problems seen:"
        [[ -n "$problems" ]] && echo "$problems"
        [[ -n "$missing" ]] && echo "$missing"
    fi
    return 0
}
