#!/usr/bin/env python3
"""vde_desc.py: a vde-2 peer whose request carries bytes of the test's
choosing, for the log and stats injection tests (t_sec03_logfile.sh,
t_sec10_stats_injection.sh).

    vde_desc.py CTL [--desc-hex HEX] [--sock-hex HEX] [--sockdir DIR] [--hold S]

The description is the bytes HEX stands for (at most 128: the daemon
refuses a longer request). Without --sock-hex the peer binds its own data
socket in --sockdir (default /tmp) and names it; with it, the request names
those bytes as its data socket path, which need not exist (the daemon then
refuses it and logs the path). It prints "pid=N", then one line
"result=reply path=P" or "result=eof|reset|timeout", and with a reply
stays joined for --hold seconds (or until the daemon hangs up).
"""
import argparse
import os
import socket
import sys
import time

from vdewire import bind_dgram, request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ctl")
    ap.add_argument("--desc-hex", default="")
    ap.add_argument("--sock-hex", default=None)
    ap.add_argument("--sockdir", default="/tmp")
    ap.add_argument("--hold", type=float, default=0.0)
    ap.add_argument("--timeout", type=float, default=8.0)
    a = ap.parse_args()
    print("pid=%d" % os.getpid(), flush=True)
    desc = bytes.fromhex(a.desc_hex)
    if len(desc) > 128:
        sys.exit("description longer than 128 bytes: the daemon would refuse the request")
    own = None
    if a.sock_hex is not None:
        path = bytes.fromhex(a.sock_hex)
    else:
        p = os.path.join(a.sockdir, ".vde_desc.%d" % os.getpid())
        own = (bind_dgram(p), p)
        path = p.encode()
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        c.connect(a.ctl)
        c.sendall(request(path, desc=desc))
        c.settimeout(a.timeout)
        got = b""
        res = "timeout"
        try:
            while len(got) < 110:
                b = c.recv(4096)
                if not b:
                    break
                got += b
            res = "reply" if len(got) >= 110 else "eof"
        except ConnectionResetError:
            res = "reset"
        except socket.timeout:
            pass
        line = "result=" + res
        if res == "reply":
            line += " path=" + got[2:110].split(b"\0", 1)[0].decode(errors="replace")
        print(line, flush=True)
        if res == "reply" and a.hold > 0:
            c.settimeout(a.hold)
            try:
                c.recv(1)  # b"" once the daemon hangs up
            except (socket.timeout, OSError):
                pass
    finally:
        c.close()
        if own:
            own[0].close()
            try:
                os.unlink(own[1])
            except OSError:
                pass


if __name__ == "__main__":
    main()
