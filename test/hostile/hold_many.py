#!/usr/bin/env python3
"""hold_many.py ENTRY N READY RELEASE SECONDS: open N connections to a
SOCK_SEQPACKET entry without reading anything (those the daemon cannot
accept wait in its listen backlog), create READY, keep them until RELEASE
exists (at most SECONDS), then close them all. Prints

    connected=N

For test/t_hostile.sh: a client that takes every descriptor the daemon
may have."""
import os
import socket
import sys
import time

entry, n, ready, release, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
conns = []
for _ in range(n):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        c.connect(entry)
    except OSError as e:
        print("connect failed after %d: %s" % (len(conns), e), flush=True)
        c.close()
        break
    conns.append(c)
print("connected=%d" % len(conns), flush=True)
open(ready, "w").close()
deadline = time.monotonic() + secs
while not os.path.exists(release) and time.monotonic() < deadline:
    time.sleep(0.05)
for c in conns:
    c.close()
