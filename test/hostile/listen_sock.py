#!/usr/bin/env python3
"""listen_sock.py PATH READY SECONDS: another program's listening unix
socket, for test/t_sec08_sockdir_existing.sh. Binds a SOCK_STREAM socket at
PATH, listens, creates READY (give a path outside PATH's directory), and for
SECONDS (or until killed) answers every connection with "hello\\n".
Connect with `listen_sock.py --hello PATH`: exits 0 if the answer came."""
import os
import socket
import sys
import time

if sys.argv[1] == "--hello":
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(3)
    try:
        c.connect(sys.argv[2])
        ok = c.recv(16) == b"hello\n"
    except OSError as e:
        print(e)
        ok = False
    sys.exit(0 if ok else 1)

path, ready, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(16)
open(ready, "w").close()
deadline = time.monotonic() + secs
while True:
    left = deadline - time.monotonic()
    if left <= 0:
        break
    s.settimeout(left)
    try:
        c, _ = s.accept()
    except socket.timeout:
        break
    try:
        c.sendall(b"hello\n")
    except OSError:
        pass
    c.close()
