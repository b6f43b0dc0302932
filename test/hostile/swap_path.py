#!/usr/bin/env python3
"""swap_path.py PARENT NAME VICTIM HOW READY SECONDS: the PATH-for-a-symlink
race of test/t_sec01_symlink_swap.sh, run by an ordinary user who can write
PARENT (a sticky, world-writable directory like /tmp).

It creates PARENT/NAME, an empty directory of its own, and a symlink to
VICTIM under a spare name, watches PARENT with inotify, creates READY, and
waits (at most SECONDS) for the socket directory root's multifs makes
before it mounts, PARENT/.NAME.multifs. The moment that appears it moves
its directory out of the way (HOW=rename: to PARENT/NAME.moved, where a
mount through a stale descriptor would land; HOW=rmdir: removed, so such a
descriptor names a deleted directory) and renames the symlink to
PARENT/NAME, so that a multifs which mounts by path string mounts over
VICTIM. Prints one line:

    result=swapped how=HOW us=MICROSECONDS   (from the event to the swap)
    result=late how=HOW err=...              (PATH was already a mount point: EBUSY)
    result=timeout                           (the socket directory never appeared)
"""
import ctypes
import errno
import os
import select
import struct
import sys
import time

IN_CREATE = 0x100
IN_MOVED_TO = 0x80
IN_ONLYDIR = 0x1000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

parent, name, victim, how, ready, secs = sys.argv[1:7]
secs = float(secs)
path = os.path.join(parent, name)
spare = os.path.join(parent, "." + name + ".swap")
moved = path + ".moved"
want = ("." + name + ".multifs").encode()

libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(IN_CLOEXEC)
if fd < 0:
    print("result=error err=inotify_init1:%s" % errno.errorcode.get(ctypes.get_errno(), "?"))
    sys.exit(1)
if libc.inotify_add_watch(fd, parent.encode(), IN_CREATE | IN_MOVED_TO | IN_ONLYDIR) < 0:
    print("result=error err=inotify_add_watch:%s" % errno.errorcode.get(ctypes.get_errno(), "?"))
    sys.exit(1)

os.mkdir(path, 0o755)
os.symlink(victim, spare)
open(ready, "w").close()


def swap():
    if how == "rename":
        os.rename(path, moved)
    else:
        os.rmdir(path)
    os.rename(spare, path)


deadline = time.monotonic() + secs
buf = b""
while True:
    left = deadline - time.monotonic()
    if left <= 0:
        print("result=timeout")
        break
    r, _, _ = select.select([fd], [], [], left)
    if not r:
        continue
    t0 = time.monotonic()
    buf += os.read(fd, 65536)
    hit = False
    while len(buf) >= 16:
        _wd, _mask, _cookie, ln = struct.unpack_from("iIII", buf)
        if len(buf) < 16 + ln:
            break
        ev = buf[16 : 16 + ln].rstrip(b"\0")
        buf = buf[16 + ln :]
        if ev == want:
            hit = True
    if not hit:
        continue
    try:
        swap()
    except OSError as e:
        print("result=late how=%s err=%s" % (how, errno.errorcode.get(e.errno, str(e.errno))))
        break
    print("result=swapped how=%s us=%d" % (how, (time.monotonic() - t0) * 1e6))
    break
sys.stdout.flush()
