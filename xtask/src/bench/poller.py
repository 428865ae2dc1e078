"""The psutil poller users run today, as the bench's baseline.

Every second it walks the socket table with psutil.net_connections and adds
each remote IPv4 address to a set. On SIGTERM it walks the table once more,
from the start, then writes the set as a JSON list of addresses (the format
netmon also reads) and exits: a walk of a storm's table can take longer than
the bench waits after the storm, and a stop in the middle of one would cost
the baseline what was in the table at the end.

Usage: python3 poller.py OUTPUT
"""
import json
import signal
import socket
import sys
import time

import psutil

INTERVAL = 1.0


def main():
    output = sys.argv[1]
    seen = set()
    stop = []

    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    ready = False
    while True:
        # Read before the walk: the last walk starts after the SIGTERM.
        stopping = bool(stop)
        started = time.monotonic()
        for conn in psutil.net_connections(kind="inet"):
            if conn.raddr and conn.family == socket.AF_INET:
                seen.add(conn.raddr.ip)
        if stopping:
            break
        if not ready:
            print("ready", flush=True)
            ready = True
        time.sleep(max(0.0, INTERVAL - (time.monotonic() - started)))
    with open(output, "w") as f:
        json.dump(sorted(seen), f)


main()
