#!/usr/bin/env python3
"""mass.py: many simultaneous connections to a multifs entry, for
test/t_hostile.sh.

    mass.py stream CTL N SOCKDIR [--ready F] [--release F] [--max S]
    mass.py seqpacket ENTRY N [--early-close K] [--ready F] [--release F] [--max S]

stream: opens N connections to a vde-2 control socket at once (connect all,
then write all). Even-numbered ones send a valid request naming their own
datagram socket bound in SOCKDIR; odd ones send garbage of assorted kinds
(bad magic, short then silence, oversized, zero bytes then silence). Then it
waits (at most --max seconds) until every valid one has its reply and every
garbage one was hung up on, and prints

    valid=N replies=N valid_eof=N garbage=N garbage_eof=N garbage_reply=N pending=N seconds=S

seqpacket: opens N connections to a SOCK_SEQPACKET entry at once; the first
--early-close K of them are closed right after connect, before reading the
ack; the others read their one-byte ack. Prints

    connected=N early_closed=K acks_ok=N acks_refused=N acks_eisconn=N no_ack=N seconds=S pid=P

(P: this process, which every connection's SO_PEERCRED names).

In both modes, once done it creates --ready F (if given), keeps every
connection open until --release F exists (bounded by --max), then closes
everything and exits 0.
"""
import argparse
import errno
import os
import select
import socket
import time

from vdewire import bind_dgram, request




def hold(a, t0):
    if a.ready:
        open(a.ready, "w").close()
    if a.release:
        while not os.path.exists(a.release) and time.monotonic() - t0 < a.max:
            time.sleep(0.05)


def stream(a):
    t0 = time.monotonic()
    conns = []
    data = []
    for i in range(a.n):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(a.target)
        conns.append(c)
    kinds = {}
    for i, c in enumerate(conns):
        if i % 2 == 0:
            path = os.path.join(a.sockdir, "m%d" % i)
            data.append((bind_dgram(path), path))
            c.sendall(request(path.encode(), desc=b"mass %d" % i))
            kinds[i] = "valid"
        else:
            k = (i // 2) % 4
            if k == 0:
                c.sendall(request(b"/nonexistent", magic=0x12345678, desc=b"mass"))
            elif k == 1:
                c.sendall(b"\xfe\xed")  # short, then silence: the 5 s limit
            elif k == 2:
                c.sendall(os.urandom(400))
            # k == 3: nothing at all
            kinds[i] = "garbage"
    got = {i: b"" for i in range(a.n)}
    done = {}
    pending = set(range(a.n))
    deadline = t0 + a.max
    poller = select.poll()
    byfd = {}
    for i, c in enumerate(conns):
        poller.register(c, select.POLLIN)
        byfd[c.fileno()] = i
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            i = byfd[fd]
            c = conns[i]
            if i not in pending:
                continue
            try:
                b = c.recv(4096)
            except ConnectionResetError:
                b = b""
            if not b:
                done[i] = "eof"
                pending.discard(i)
                poller.unregister(c)
                continue
            got[i] += b
            if len(got[i]) >= 110:
                done[i] = "reply"
                pending.discard(i)
                poller.unregister(c)
    valid = [i for i in kinds if kinds[i] == "valid"]
    garbage = [i for i in kinds if kinds[i] == "garbage"]
    print("valid=%d replies=%d valid_eof=%d garbage=%d garbage_eof=%d garbage_reply=%d pending=%d seconds=%.2f" % (
        len(valid), sum(done.get(i) == "reply" for i in valid), sum(done.get(i) == "eof" for i in valid),
        len(garbage), sum(done.get(i) == "eof" for i in garbage), sum(done.get(i) == "reply" for i in garbage),
        len(pending), time.monotonic() - t0), flush=True)
    hold(a, t0)
    for c in conns:
        c.close()
    for d, p in data:
        d.close()
        try:
            os.unlink(p)
        except OSError:
            pass


def seqpacket(a):
    t0 = time.monotonic()
    conns = []
    early = 0
    for i in range(a.n):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        c.connect(a.target)
        if i < a.early_close:
            c.close()
            early += 1
        else:
            conns.append(c)
    ok = refused = eisconn = noack = 0
    for c in conns:
        c.settimeout(max(0.1, t0 + a.max - time.monotonic()))
        try:
            b = c.recv(16)
        except (socket.timeout, OSError):
            b = b""
        if not b:
            noack += 1
        elif b[0] == 0:
            ok += 1
        else:
            refused += 1
            if b[0] == errno.EISCONN:
                eisconn += 1
    print("connected=%d early_closed=%d acks_ok=%d acks_refused=%d acks_eisconn=%d no_ack=%d seconds=%.2f pid=%d" % (
        a.n, early, ok, refused, eisconn, noack, time.monotonic() - t0, os.getpid()), flush=True)
    hold(a, t0)
    for c in conns:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["stream", "seqpacket"])
    ap.add_argument("target")
    ap.add_argument("n", type=int)
    ap.add_argument("sockdir", nargs="?", default="/tmp")
    ap.add_argument("--early-close", type=int, default=0)
    ap.add_argument("--ready")
    ap.add_argument("--release")
    ap.add_argument("--max", type=float, default=30.0)
    a = ap.parse_args()
    (stream if a.kind == "stream" else seqpacket)(a)


if __name__ == "__main__":
    main()
