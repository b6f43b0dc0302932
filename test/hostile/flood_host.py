#!/usr/bin/env python3
"""flood_host.py PATH SIZE COUNT SECONDS: attach to PATH/host/seqpacket as
the host, send COUNT frames of SIZE bytes (broadcast Ethernet header, then
filler) as fast as the daemon takes them, for at most SECONDS, then
detach. Prints

    sent=N seconds=S

For test/t_sec06_queue_memory.sh: the host whose frames fill every stuck
link's queue."""
import socket
import sys
import time

path, size, count, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(path + "/host/seqpacket")
if s.recv(1) != b"\0":
    sys.exit("not accepted as the host")
frame = (b"\xff" * 6 + b"\x02\x00\x00\x6d\x66\x06" + b"\x88\xb5" + bytes(range(256)) * 40)[:size]
t0 = time.monotonic()
s.settimeout(secs)
sent = 0
try:
    while sent < count and time.monotonic() - t0 < secs:
        s.send(frame)
        sent += 1
except OSError as e:
    print("send failed: %s" % e, file=sys.stderr)
print("sent=%d seconds=%.2f" % (sent, time.monotonic() - t0), flush=True)
s.close()
