#!/usr/bin/env python3
"""stuck_seq.py ENTRY READY SECONDS: join a multifs seqpacket entry
(PATH/seqpacket or PATH/host/seqpacket), create READY once acked, then
never read again for SECONDS (or until killed): a stuck peer, for
test/t_stalled.sh."""
import os
import socket
import sys
import time

entry, ready, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(entry)
if s.recv(1) != b"\0":
    sys.exit("not accepted")
open(ready, "w").close()
time.sleep(secs)
