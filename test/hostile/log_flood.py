#!/usr/bin/env python3
"""log_flood.py: what a peer or a local user can do as fast as it can to
make the daemon log, for t_sec13_log_flood.sh. Every mode is bounded both
in time (--seconds) and in count (--max), and prints "pid=N" first and
"sent=N" at the end.

    log_flood.py runts CTL [--sockdir DIR]    join as a vde-2 link, then send
                                              1-byte datagrams (each dropped
                                              as a frame of bad size)
    log_flood.py handshakes CTL               connect, send a request with a
                                              bad magic, close; again
    log_flood.py close FILE                   write "2" to a links/N/close
                                              file (refused: EINVAL); again

--hold S: after the flood, stay joined S seconds (runts), so that the test
can read the link's counters.
"""
import argparse
import errno
import os
import socket
import sys
import time

from vdewire import bind_dgram, request


def runts(a, deadline):
    p = os.path.join(a.sockdir, ".log_flood.%d" % os.getpid())
    own = bind_dgram(p)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(a.target)
    c.sendall(request(p.encode(), desc=b"log_flood runts"))
    got = b""
    c.settimeout(5)
    while len(got) < 110:
        b = c.recv(4096)
        if not b:
            sys.exit("no reply from the daemon")
        got += b
    data_path = got[2:110].split(b"\0", 1)[0]
    own.connect(data_path)
    own.settimeout(1)
    n = 0
    one = b"x"
    while n < a.max:
        if n % 1024 == 0 and time.monotonic() >= deadline:
            break
        try:
            own.send(one)
        except socket.timeout:
            if time.monotonic() >= deadline:
                break
            continue
        n += 1
    print("sent=%d" % n, flush=True)
    if a.hold > 0:
        time.sleep(a.hold)
    c.close()
    own.close()
    os.unlink(p)


def handshakes(a, deadline):
    bad = request(b"/nonexistent", magic=0x12345678, desc=b"log_flood")
    n = 0
    while n < a.max and time.monotonic() < deadline:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            c.settimeout(1)
            c.connect(a.target)
            c.sendall(bad)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNREFUSED, errno.EPIPE, errno.ECONNRESET) and \
                    not isinstance(e, socket.timeout):
                raise
        finally:
            c.close()
        n += 1
    print("sent=%d" % n, flush=True)


def close_writes(a, deadline):
    fd = os.open(a.target, os.O_WRONLY)
    n = 0
    while n < a.max and time.monotonic() < deadline:
        try:
            os.pwrite(fd, b"2\n", 0)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
        n += 1
    os.close(fd)
    print("sent=%d" % n, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["runts", "handshakes", "close"])
    ap.add_argument("target")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--max", type=int, default=10_000_000)
    ap.add_argument("--sockdir", default="/tmp")
    ap.add_argument("--hold", type=float, default=0.0)
    a = ap.parse_args()
    print("pid=%d" % os.getpid(), flush=True)
    deadline = time.monotonic() + a.seconds
    {"runts": runts, "handshakes": handshakes, "close": close_writes}[a.mode](a, deadline)


if __name__ == "__main__":
    main()
