#!/usr/bin/env bash
# Fan-out while the document is being restored (room-core issue, item 2): does a restore of a
# large document stall everyone's keystrokes?
#
# One release server on SQLite (fresh directory) with an admin token. trace-load writes the
# automerge-paper trace into document "paper" (Y.Text "paper", one update per transaction), then
# 100 clients join "paper" and type into Y.Text "text" at RATE updates/s each, twice:
#   baseline   no restores
#   restoring  every RESTORE_EVERY seconds a POST .../restore, alternately to the middle of the
#              trace and to its end (each restore rewrites about half of a 100 KB text, and the
#              typing of the 100 clients since the trace)
# and prints both fan-out results (latency to the other 99 clients) and the restore times.
#
# Editing traces: Joseph Gentle's "editing-traces", CC BY 4.0, in $TRACE_DIR.
#
# Knobs: RATE=12 DURATION=20 RESTORE_EVERY=2 TRACE_DIR=/work/shared/data/editing-traces
#        REPLAY_CACHE=/tmp/tandem-bench-replays SKIP_BUILD=1 QUIET_PCT QUIET_WAIT
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RATE=${RATE:-12}
DURATION=${DURATION:-20}
RESTORE_EVERY=${RESTORE_EVERY:-2}
TRACE_DIR=${TRACE_DIR:-/work/shared/data/editing-traces}
REPLAY_CACHE=${REPLAY_CACHE:-/tmp/tandem-bench-replays}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SERVER="$TARGET/release/tandem"
BENCH="$TARGET/release/tandem-bench"
OUT=$(mktemp -d /tmp/tandem-restore-bench.XXXXXX)
TOKEN=bench-admin-token
SERVER_ARGS=${SERVER_ARGS:-}

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
release_binaries

SERVER_PID=""
SERVER_DIR=""
trap stop_server EXIT
launch_server restore --admin-token "$TOKEN" --max-messages-per-sec 0
PID=$SERVER_PID
URL="ws://127.0.0.1:$PORT"

mkdir -p "$REPLAY_CACHE"
"$BENCH" trace-load --url "$URL" --trace "$TRACE_DIR/automerge-paper.json.gz" --room paper \
    --text-name paper --cache-dir "$REPLAY_CACHE" >"$OUT/load.txt"
END=$(curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/v1/admin/documents/paper" | jq .last_seq)
MID=$((END / 2))
echo "automerge-paper loaded: seq $END; restores go to $MID and $END in turn" >&2

for case in baseline restoring; do
    args=()
    [[ $case == restoring ]] && args=(--restore-every "$RESTORE_EVERY" --restore-seqs "$MID,$END" --admin-token "$TOKEN")
    wait_quiet
    echo "== $case" | tee -a "$OUT/report.txt"
    "$BENCH" fanout --url "$URL" --server-pid "$PID" --room paper --rooms 1 --clients-per-room 100 \
        --rate "$RATE" --duration "$DURATION" --connect-timeout 120 "${args[@]}" | tee -a "$OUT/report.txt"
done
echo "results in $OUT" >&2
