#!/usr/bin/env python3
"""toctou.py CTL DIR VICTIM_DIR ATTEMPTS SECONDS: try to make multifs
connect a new link's data socket to someone else's socket, by swapping a
directory in the requested path between the daemon's ownership check and
its connect (a time-of-check/time-of-use race). For test/t_hostile.sh; run
it as an ordinary user who owns DIR.

VICTIM_DIR holds someone else's socket named "s". The helper makes
DIR/cur, a directory holding its own socket "s", and DIR/alt, a symlink to
VICTIM_DIR; a child process swaps the two names atomically
(renameat2 RENAME_EXCHANGE) as fast as it can, while the parent asks the
daemon, ATTEMPTS times (within SECONDS), for a link whose data socket is
DIR/cur/s. A correct daemon either refuses (it saw the victim's socket) or
connects to the helper's own socket. For every reply the helper sends one
frame from its own socket to the daemon's data socket: if the daemon
connected that socket to another one (the victim's), the kernel refuses the
frame with EPERM, which proves the race was won; the helper then keeps that
link open for 0.3 s (the first 5 times) so that frames from the host reach
the victim's socket, where the victim can count them. Prints

    attempts=N replies=N refused=N won=N seconds=S
"""
import ctypes
import os
import shutil
import socket
import struct
import sys
import time

ctl, d, victim_dir = sys.argv[1], sys.argv[2], sys.argv[3]
attempts, secs = int(sys.argv[4]), float(sys.argv[5])
cur = os.path.join(d, "cur")
alt = os.path.join(d, "alt")
for p in (cur, alt):
    if os.path.islink(p) or os.path.isfile(p):
        os.unlink(p)
    elif os.path.isdir(p):
        shutil.rmtree(p)
os.makedirs(cur)
os.symlink(victim_dir, alt)
data = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
data.bind(os.path.join(cur, "s"))

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2

t0 = time.monotonic()
flipper = os.fork()
if flipper == 0:
    a, b = cur.encode(), alt.encode()
    end = time.monotonic() + secs + 5
    i = 0
    while True:
        libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE)
        i += 1
        if i % 1000 == 0 and time.monotonic() > end:
            os._exit(0)

path = (cur + "/s").encode()
req = struct.pack("<IIIH", 0xFEEDFACE, 3, 0, 1) + path + b"\0" * (108 - len(path)) + b"toctou"
frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x07" + b"\x88\xb5" + bytes(50)
n = replies = refused = won = 0
try:
    while n < attempts and time.monotonic() - t0 < secs:
        n += 1
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(6)
        rep = b""
        try:
            c.connect(ctl)
            c.sendall(req)
            while len(rep) < 110:
                b = c.recv(110 - len(rep))
                if not b:
                    break
                rep += b
        except OSError:
            pass
        if len(rep) < 110:
            refused += 1
            c.close()
            continue
        replies += 1
        theirs = rep[2:].split(b"\0", 1)[0].decode()
        try:
            data.sendto(frame, theirs)
        except PermissionError:
            won += 1
            if won <= 5:
                time.sleep(0.3)
        except OSError:
            pass
        c.close()
finally:
    os.kill(flipper, 9)
    os.waitpid(flipper, 0)
    data.close()
print("attempts=%d replies=%d refused=%d won=%d seconds=%.2f" % (n, replies, refused, won, time.monotonic() - t0), flush=True)
