#!/usr/bin/env python3
"""stuck_links.py PATH N SOCKDIR READY RELEASE SECONDS: join PATH as N vde-2
links (each binds its data socket in SOCKDIR and completes the handshake
on PATH/ctl), create READY once every one has its reply, then never read:
frames for them pile up in the daemon's queues. Once RELEASE exists (at
most SECONDS), close them all and exit. Prints

    joined=N

For test/t_sec06_queue_memory.sh: many links that never read."""
import os
import socket
import sys
import time

from vdewire import bind_dgram, request

path, n, sockdir, ready, release, secs = (sys.argv[1], int(sys.argv[2]), sys.argv[3],
                                          sys.argv[4], sys.argv[5], float(sys.argv[6]))
deadline = time.monotonic() + secs
links = []  # (control stream, data socket, data socket path)
try:
    for i in range(n):
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
        d.close()
        try:
            os.unlink(p)
        except OSError:
            pass
