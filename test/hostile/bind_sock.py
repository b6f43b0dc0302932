#!/usr/bin/env python3
"""bind_sock.py PATH SECONDS: bind a SOCK_DGRAM unix socket at PATH (as
whoever runs it), create PATH.ready, and keep it for SECONDS (or until
killed). For test/t_hostile.sh: a socket that belongs to another user."""
import os
import sys
import time

from vdewire import bind_dgram

path, secs = sys.argv[1], float(sys.argv[2])
s = bind_dgram(path)
os.chmod(path, 0o666)  # anyone may connect: only ownership should matter
open(path + ".ready", "w").close()
time.sleep(secs)
