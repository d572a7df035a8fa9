#!/bin/sh
# sockloop serve with --metrics, scraped every 100 ms (by one long-lived process, so
# the scraping itself costs little) for as long as it runs.
# Usage: benches/scraped.sh SOCKLOOP TCP_PORT UDP_PORT — a server line for
# ../shared/bench/compare.py (see the README, "Metrics and health").
M=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
"$1" serve --listen tcp://127.0.0.1:$2 --listen udp://127.0.0.1:$3 --metrics tcp://127.0.0.1:$M &
S=$!
trap 'kill -TERM $S; wait $S; kill $C 2>/dev/null; exit 0' TERM INT
python3 -c '
import socket, sys, time
port = int(sys.argv[1])
while True:
    time.sleep(0.1)
    try:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        while s.recv(65536):
            pass
        s.close()
    except OSError:
        pass
' $M &
C=$!
wait $S
