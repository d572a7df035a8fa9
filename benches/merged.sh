#!/bin/sh
# Three generators against one server, merged: what a load test from many hosts
# looks like, on one machine. Each `sockloop bench` connects, waits for a common
# start (--start-in), reports every 0.5 s, and the three reports are merged and
# drawn. With RESTART=1 the server is stopped (SIGTERM, no drain) 5 s into the
# window and started again 1 s later, so the plot shows the outage.
#
#   benches/merged.sh [SOCKLOOP] [OUT_DIR]    # default: target/release/sockloop, ./merged
#
# Loopback only: 127.0.0.1, a port of its own.
set -eu
sockloop=${1:-target/release/sockloop}
out=${2:-merged}
port=${PORT:-5801}
secs=${SECS:-12}
mkdir -p "$out"

serve() {
    "$sockloop" serve --listen "tcp://127.0.0.1:$port" 2>>"$out/server.log" &
    server=$!
}
serve
# The ready line is on stdout; the port answering is enough here.
until "$sockloop" send "tcp://127.0.0.1:$port" ping >/dev/null 2>&1; do sleep 0.05; done

pids=
for i in 1 2 3; do
    "$sockloop" bench "tcp://127.0.0.1:$port" --conns 30 --depth 4 --secs "$secs" \
        --start-in 2 --interval 0.5 --keep-going --allow-errors --json \
        >"$out/run$i.json" 2>"$out/run$i.err" &
    pids="$pids $!"
done

if [ "${RESTART:-0}" = 1 ]; then
    sleep 7   # 2 s to the start, 5 s into the window
    kill -TERM "$server"; wait "$server" || true
    sleep 1
    serve
fi
for p in $pids; do wait "$p"; done
kill -TERM "$server"; wait "$server" || true

"$sockloop" bench merge "$out"/run1.json "$out"/run2.json "$out"/run3.json \
    --plot "$out/merged.svg" | tee "$out/merged.txt"
