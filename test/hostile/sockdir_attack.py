#!/usr/bin/env python3
"""sockdir_attack.py SOCKDIR FIRST LAST: what a user who may join a
multilink tries on its socket directory, for test/t_sec02_sockdir_perms.sh.
Run it as that user. Each attempt is independent:

  create  a regular file SOCKDIR/squat.file
  squat   bind datagram sockets at SOCKDIR/link.N for N = FIRST..LAST that
          do not exist yet: the names the daemon would give the next links
  rename  rename SOCKDIR/ctl to SOCKDIR/ctl.stolen, then bind a listening
          socket of its own at SOCKDIR/ctl (where every later join goes)
  unlink  remove SOCKDIR/seqpacket

Prints one line, each attempt's result: ok, or the errno's name (for squat,
that of the first refusal, and how many names it took):

    create=EACCES squat=EACCES squatted=0 rename=EACCES unlink=EACCES
"""
import errno
import os
import socket
import sys


def name(e):
    return errno.errorcode.get(e.errno, str(e.errno))


sd, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
res = {}

try:
    os.close(os.open(os.path.join(sd, "squat.file"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    res["create"] = "ok"
except OSError as e:
    res["create"] = name(e)

squatted, first_err = 0, None
held = []
for n in range(first, last + 1):
    p = os.path.join(sd, "link.%d" % n)
    if os.path.lexists(p):
        continue
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.bind(p)
        squatted += 1
        held.append(s)
    except OSError as e:
        s.close()
        if first_err is None:
            first_err = name(e)
res["squat"] = first_err or ("ok" if squatted else "none")
res["squatted"] = str(squatted)

try:
    os.rename(os.path.join(sd, "ctl"), os.path.join(sd, "ctl.stolen"))
    res["rename"] = "ok"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(os.path.join(sd, "ctl"))
        s.listen(8)
        held.append(s)
    except OSError:
        s.close()
except OSError as e:
    res["rename"] = name(e)

try:
    os.unlink(os.path.join(sd, "seqpacket"))
    res["unlink"] = "ok"
except OSError as e:
    res["unlink"] = name(e)

print(" ".join("%s=%s" % (k, res[k]) for k in ("create", "squat", "squatted", "rename", "unlink")))
