#!/usr/bin/env python3
"""vde_req.py: one hostile (or well-behaved) vde-2 handshake against a
multifs control socket, for test/t_hostile.sh.

    vde_req.py CTL MODE [--sock PATH] [--timeout S] [--hold S] [--sockdir DIR]

CTL is PATH/ctl or PATH/host/ctl. It prints "pid=N" first (the process the
daemon sees through SO_PEERCRED), then one line

    result=eof|reset|reply|timeout|closed elapsed=SECONDS [path=REPLY_PATH]

eof/reset: the daemon closed the connection without a reply; reply: the
daemon answered with a 110-byte sockaddr_un (path= its data socket);
timeout: nothing within --timeout; closed: this client closed first (the
disconnect modes). Exit status 0 unless the helper itself failed.

Modes (every one is a complete, valid request except for the named fault):
  valid       a correct request (own socket, or --sock)
  split       a correct request written in three pieces, 150 ms apart
  magic       wrong magic 0xdeadbeef
  v1, v2      version 1 or 2 instead of 3
  type1       type REQ_NEW_PORT0 (1)
  type7       type 7
  portbits    type 0 with a port number in the upper bits (old clients): valid
  family      sockaddr family 2 (AF_INET) instead of AF_UNIX
  short       50 bytes of a request, then shutdown(SHUT_WR)
  oversize    a 122-byte header and a 200-byte description (322 bytes)
  flood       64 KiB of request-looking bytes, written at once
  nonul       sun_path is 108 bytes without a NUL
  abstract    sun_path starts with NUL (an abstract socket this helper binds)
  relative    sun_path is a relative path
  path        sun_path is --sock as given (a regular file, someone else's
              socket, a missing path...)
  silent      connect and send nothing; wait for the daemon to hang up
  close-now   connect and close at once (result=closed)
  valid-close a correct request, then close at once without reading
"""
import argparse
import os
import socket
import struct
import sys
import time

from vdewire import SUN_LEN, bind_dgram, request

def own_socket(sockdir):
    path = os.path.join(sockdir or "/tmp", ".vde_req.%d" % os.getpid())
    return bind_dgram(path), path


def wait_answer(c, timeout, t0):
    """Read until EOF, a reset, a full reply or the timeout."""
    c.settimeout(0.05)
    got = b""
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        try:
            b = c.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return ("reset" if not got else "reply"), got
        except OSError as e:
            return "error:%s" % e.errno, got
        if not b:
            return ("eof" if not got else "reply"), got
        got += b
        if len(got) >= 110:
            return "reply", got
    return ("timeout" if not got else "reply"), got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ctl")
    ap.add_argument("mode")
    ap.add_argument("--sock", default=None)
    ap.add_argument("--sockdir", default=None, help="where to bind our own data socket")
    ap.add_argument("--timeout", type=float, default=8.0)
    ap.add_argument("--hold", type=float, default=0.0, help="after a reply, stay joined this long")
    a = ap.parse_args()

    print("pid=%d" % os.getpid(), flush=True)
    keep = []  # sockets that must stay open while we talk
    desc = ("vde_req %s pid=%d" % (a.mode, os.getpid())).encode()

    def mine():
        if a.sock:
            return a.sock.encode()
        s, p = own_socket(a.sockdir)
        keep.append((s, p))
        return p.encode()

    m = a.mode
    payload = None
    pieces = None
    if m == "valid":
        payload = request(mine(), desc=desc)
    elif m == "split":
        r = request(mine(), desc=desc)
        pieces = [r[:7], r[7:60], r[60:]]
    elif m == "magic":
        payload = request(mine(), magic=0xDEADBEEF, desc=desc)
    elif m in ("v1", "v2"):
        payload = request(mine(), version=int(m[1]), desc=desc)
    elif m == "type1":
        payload = request(mine(), typ=1, desc=desc)
    elif m == "type7":
        payload = request(mine(), typ=7, desc=desc)
    elif m == "portbits":
        payload = request(mine(), typ=(5 << 8), desc=desc)
    elif m == "family":
        payload = request(mine(), family=2, desc=desc)
    elif m == "short":
        payload = request(mine(), desc=desc)[:50]
    elif m == "oversize":
        payload = request(mine(), desc=b"X" * 200)
    elif m == "flood":
        payload = (request(mine(), desc=desc) * 600)[: 64 * 1024]
    elif m == "nonul":
        payload = request(b"/" + b"a" * (SUN_LEN - 1), desc=desc)
        assert b"\0" not in payload[14:14 + SUN_LEN]
    elif m == "abstract":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = b"\0multifs-test-abstract-%d" % os.getpid()
        s.bind(name)
        keep.append((s, None))
        payload = request(name, desc=desc)
    elif m == "relative":
        s, p = own_socket(a.sockdir)
        keep.append((s, p))
        payload = request(os.path.relpath(p, "/").encode(), desc=desc)
    elif m == "path":
        if not a.sock:
            sys.exit("path mode needs --sock")
        payload = request(a.sock.encode(), desc=desc)
    elif m in ("silent", "close-now"):
        payload = b""
    elif m == "valid-close":
        payload = request(mine(), desc=desc)
    else:
        sys.exit("unknown mode %r" % m)

    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(a.ctl)
    t0 = time.monotonic()
    try:
        if m == "close-now":
            c.close()
            print("result=closed elapsed=0.000", flush=True)
            return
        if pieces:
            for i, p in enumerate(pieces):
                if i:
                    time.sleep(0.15)
                c.sendall(p)
        elif payload:
            try:
                c.sendall(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon hung up mid-flood: fine, read the outcome
        if m == "valid-close":
            c.close()
            print("result=closed elapsed=%.3f" % (time.monotonic() - t0), flush=True)
            time.sleep(0.5)  # keep our data socket while the daemon reacts
            return
        if m == "short":
            c.shutdown(socket.SHUT_WR)
        res, got = wait_answer(c, a.timeout, t0)
        line = "result=%s elapsed=%.3f" % (res, time.monotonic() - t0)
        if res == "reply":
            if len(got) >= 110 and struct.unpack("<H", got[:2])[0] == 1:
                line += " path=" + got[2:110].split(b"\0", 1)[0].decode(errors="replace")
            else:
                line += " badreply=%d" % len(got)
        print(line, flush=True)
        if res == "reply" and a.hold > 0:
            # Stay a member until the daemon hangs up or --hold passes.
            res2, _ = wait_answer(c, a.hold, time.monotonic())
            print("after=%s" % res2, flush=True)
    finally:
        try:
            c.close()
        except OSError:
            pass
        for s, p in keep:
            s.close()
            if p and not a.sock:
                try:
                    os.unlink(p)
                except OSError:
                    pass


if __name__ == "__main__":
    main()
