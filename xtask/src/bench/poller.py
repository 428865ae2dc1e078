"""The psutil poller users run today, as the bench's baseline.

Every second it walks the socket table with psutil.net_connections and adds
each remote IPv4 address to a set; on SIGTERM it writes the set as a JSON
list of addresses (the format netmon also reads) and exits.

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

    def dump(*_):
        with open(output, "w") as f:
            json.dump(sorted(seen), f)
        sys.exit(0)

    signal.signal(signal.SIGTERM, dump)
    ready = False
    while True:
        started = time.monotonic()
        for conn in psutil.net_connections(kind="inet"):
            if conn.raddr and conn.family == socket.AF_INET:
                seen.add(conn.raddr.ip)
        if not ready:
            print("ready", flush=True)
            ready = True
        time.sleep(max(0.0, INTERVAL - (time.monotonic() - started)))


main()
