# Sourced by the bench drivers (run.sh, storage.sh, history.sh, soak.sh).
#
# release_binaries: builds the release server and load generator (unless SKIP_BUILD=1) and
# checks that $SERVER and $BENCH exist.
#
# wait_quiet: wait (bounded) until other processes leave the CPU alone before a case, since the
# numbers mean little otherwise.
#   QUIET_PCT=15    machine CPU use (other processes, % of one core) counted as quiet
#   QUIET_WAIT=900  longest wait in seconds, then the case runs anyway

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
