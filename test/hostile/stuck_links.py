#!/usr/bin/env python3
"""stuck_links.py PATH N SOCKDIR READY RELEASE SECONDS [KIND]: join PATH as N
links (a vde-2 one binds its data socket in SOCKDIR and completes the
handshake on PATH/ctl; a stream one connects to PATH/stream), create READY
once every one has joined, then never read: frames for them pile up in the
daemon's queues. Once RELEASE exists (at most SECONDS), close them all and
exit. KIND: vde (the default), stream, or mixed (every other link a stream
one). Prints

    joined=N

For test/t_sec06_queue_memory.sh: many links that never read."""
import os
import socket
import sys
import time

from vdewire import bind_dgram, request

path, n, sockdir, ready, release, secs = (sys.argv[1], int(sys.argv[2]), sys.argv[3],
                                          sys.argv[4], sys.argv[5], float(sys.argv[6]))
kind = sys.argv[7] if len(sys.argv) > 7 else "vde"
deadline = time.monotonic() + secs
links = []  # (control stream, data socket, data socket path)
try:
    for i in range(n):
        if kind == "stream" or (kind == "mixed" and i % 2 == 1):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.settimeout(max(1.0, deadline - time.monotonic()))
            links.append((c, None, None))
            c.connect(os.path.join(path, "stream"))
            continue
        p = os.path.join(sockdir, "stuck.%d.%d" % (os.getpid(), i))
        d = bind_dgram(p)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(max(1.0, deadline - time.monotonic()))
        links.append((c, d, p))
        c.connect(os.path.join(path, "ctl"))
        c.sendall(request(p.encode(), desc=b"stuck_links %d" % i))
        got = b""
        while len(got) < 110:
            b = c.recv(110 - len(got))
            if not b:
                sys.exit("link %d: no reply (refused)" % i)
            got += b
    print("joined=%d" % len(links), flush=True)
    open(ready, "w").close()
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
finally:
    for c, d, p in links:
        c.close()
        if d is None:
            continue
        d.close()
        try:
            os.unlink(p)
        except OSError:
            pass
