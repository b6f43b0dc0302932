#!/usr/bin/env python3
"""victim.py PATH SECONDS: bind a SOCK_DGRAM socket at PATH, mode 0600 (only
its owner may send to it), create PATH.ready, count the datagrams that
arrive for SECONDS (or until SIGTERM), then print "received=N". For
test/t_hostile.sh: the socket a hostile user must not be able to aim
multifs at."""
import os
import signal
import socket
import sys
import time

from vdewire import bind_dgram

path, secs = sys.argv[1], float(sys.argv[2])
s = bind_dgram(path)
os.chmod(path, 0o600)
open(path + ".ready", "w").close()
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
s.settimeout(0.1)
n = 0
end = time.monotonic() + secs
while not stop and time.monotonic() < end:
    try:
        s.recv(65536)
        n += 1
    except (socket.timeout, InterruptedError):
        pass
print("received=%d" % n, flush=True)
