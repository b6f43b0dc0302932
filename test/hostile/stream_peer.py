#!/usr/bin/env python3
"""stream_peer.py MODE ...: a peer of a multifs stream entry (QEMU's
-netdev stream framing: a 4-byte big-endian length, then the frame), well
behaved or hostile, for test/t_stream*.sh. Every wait is bounded.

  recv PATH N SECS OUT [READY] [IDLE]
      join PATH, create READY, read frames strictly (a length no Ethernet
      frame has, or an end mid-frame, is a broken stream) until N frames,
      SECS, or IDLE s (default 3) without a frame once one came; write
      "frames=K seq_ok=0|1 broken=REASON" to OUT.
  send PATH KIND HOLD [READY] [ARG]
      join PATH, create READY, write KIND, then stay joined HOLD seconds:
        bad       lengths 0, 13 and 9235 (the bytes too), then frame 1
        huge      frame 1, then the length 2^32-1
        bytewise  frame 1 (1000 bytes), one byte per write
        burst     ARG frames (1..ARG) in one write
        stopmid   frame 1, then half of frame 2; the rest once ARG exists
        endmid    frame 1, then half of frame 2, then the end (close)
  stuck PATH READY RELEASE SECS OUT
      join PATH, create READY, read nothing until RELEASE exists (at most
      SECS), then read strictly until 1 s passes without a frame; write
      "frames=K seq_ok=0|1 broken=REASON" to OUT; stay joined until
      RELEASE.end exists (at most SECS).
  reconnect PATH TRIES SECS OUT
      join PATH; once that ends (within SECS), join again at once (as
      QEMU's reconnect=N does), up to TRIES times while each is ended by
      the daemon within 1 s; write "first_end=0|1 quick=Q" to OUT.
  churn PATH N SECS OUT
      join PATH N times, up to 64 connections open at once, each ending
      its own way in turn: a whole frame then close, half a header then
      close, half a frame then close, a length of 2^32-1, half a frame
      then shutdown(SHUT_WR) and reading to the end, a reset (SO_LINGER 0)
      with frames unread; write "done=K" to OUT.
  hold PATH N READY RELEASE SECS
      join PATH N times and leave on each a valid length of 9234 and 9000
      bytes of the frame (a frame stopped near its end); create READY,
      then hold them all until RELEASE exists (at most SECS).
  comeback PATH SECS OUT
      join PATH; once that ends, join again every 50 ms until a connection
      holds for 1 s (within SECS); write "rejoined=0|1" to OUT.
"""
import os
import socket
import struct
import sys
import time

NET_BUFSIZE = 4096 + 65536
MAX_FRAME = 9234


PATTERN = bytes(range(256)) * 40


def frame(seq, size=100):
    """An Ethernet frame numbered seq: broadcast, a local ethertype, a
    payload that depends on seq."""
    head = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + struct.pack(">I", seq)
    start = seq & 0xFF
    return head + PATTERN[start:start + size - len(head)]


def wire(f):
    return struct.pack(">I", len(f)) + f


def seq_of(f):
    return struct.unpack(">I", f[14:18])[0] if len(f) >= 18 else -1


def join(path, ready=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    if ready:
        open(ready, "w").close()
    return s


def write_out(out, text):
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.rename(tmp, out)


class Reader:
    """Strict frame reader: every frame whole, every length plausible."""

    def __init__(self, s):
        self.s = s
        self.buf = b""
        self.frames = 0
        self.last = -1
        self.seq_ok = True
        self.broken = "-"

    def read_until(self, n, deadline, idle=None):
        """Read until n frames, the deadline, or (idle) that long without
        a frame once one came."""
        last_frame = None
        while self.frames < n and self.broken == "-":
            now = time.monotonic()
            if now >= deadline or (idle is not None and last_frame is not None and now - last_frame >= idle):
                return
            wait = deadline - now
            if idle is not None and last_frame is not None:
                wait = min(wait, idle - (now - last_frame))
            self.s.settimeout(max(wait, 0.01))
            try:
                b = self.s.recv(1 << 18)
            except socket.timeout:
                continue
            except OSError as e:
                self.broken = "error:%s" % e.errno
                return
            if not b:
                self.broken = "end-mid-frame" if self.buf else "eof"
                return
            buf = self.buf + b
            off = 0
            while len(buf) - off >= 4:
                (l,) = struct.unpack_from(">I", buf, off)
                if l < 14 or l > MAX_FRAME:
                    self.broken = "length-%d" % l
                    return
                if len(buf) - off < 4 + l:
                    break
                f = buf[off + 4:off + 4 + l]
                off += 4 + l
                q = seq_of(f)
                if q <= self.last or f != frame(q, l):
                    self.seq_ok = False
                self.last = q
                self.frames += 1
                last_frame = time.monotonic()
            self.buf = buf[off:]

    def result(self):
        return "frames=%d seq_ok=%d broken=%s" % (self.frames, int(self.seq_ok), self.broken)


def recv(path, n, secs, out, ready=None, idle="3"):
    s = join(path, ready)
    r = Reader(s)
    r.read_until(int(n), time.monotonic() + float(secs), idle=float(idle))
    write_out(out, r.result())


def send(path, kind, hold, ready=None, arg=None):
    deadline = time.monotonic() + float(hold)
    s = join(path, ready)
    if kind == "bad":
        for l in (0, 13, 9235):
            s.sendall(struct.pack(">I", l) + b"\xee" * l)
        s.sendall(wire(frame(1)))
    elif kind == "huge":
        s.sendall(wire(frame(1)) + b"\xff\xff\xff\xff")
    elif kind == "bytewise":
        for b in wire(frame(1, 1000)):
            s.sendall(bytes([b]))
    elif kind == "burst":
        s.sendall(b"".join(wire(frame(i, 60 + i % 1400)) for i in range(1, int(arg) + 1)))
    elif kind in ("stopmid", "endmid"):
        two = wire(frame(2, 600))
        s.sendall(wire(frame(1)) + two[:300])
        if kind == "endmid":
            s.close()
            return
        while not os.path.exists(arg) and time.monotonic() < deadline:
            time.sleep(0.02)
        s.sendall(two[300:])
    else:
        sys.exit("unknown kind " + kind)
    # Stay joined (reading what comes, so that nothing blocks us).
    s.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if not s.recv(1 << 16):
                return
        except socket.timeout:
            pass
        except OSError:
            return


def stuck(path, ready, release, secs, out):
    deadline = time.monotonic() + float(secs)
    s = join(path, ready)
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
    r = Reader(s)
    r.read_until(1 << 30, deadline, idle=1.0)
    write_out(out, r.result())
    # Stay joined until RELEASE.end (at most SECS), for the stats.
    while not os.path.exists(release + ".end") and time.monotonic() < deadline:
        time.sleep(0.02)


def reconnect(path, tries, secs, out):
    deadline = time.monotonic() + float(secs)
    s = join(path)
    first = 0
    s.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        while s.recv(1 << 16):
            pass
        first = 1
    except (socket.timeout, OSError):
        pass
    s.close()
    quick = 0
    for _ in range(int(tries) if first else 0):
        # At once, as QEMU's reconnect does; a connection still open after
        # 1 s was taken as a peer.
        s = join(path)
        s.settimeout(1.0)
        try:
            ended = not s.recv(1 << 16)
        except socket.timeout:
            ended = False
        except OSError:
            ended = True
        s.close()
        if not ended:
            break
        quick += 1
    write_out(out, "first_end=%d quick=%d" % (first, quick))


def comeback(path, secs, out):
    """join PATH; at the end of that connection, join again every 50 ms
    (as QEMU's reconnect=1 does, faster) until one holds for 1 s, within
    SECS; write "rejoined=0|1" to OUT, then stay joined until SECS."""
    deadline = time.monotonic() + float(secs)
    s = join(path)
    s.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        while s.recv(1 << 16):
            pass
    except (socket.timeout, OSError):
        pass
    s.close()
    while time.monotonic() < deadline:
        try:
            s = join(path)
        except OSError:
            time.sleep(0.05)
            continue
        s.settimeout(1.0)
        try:
            ended = not s.recv(1 << 16)
        except socket.timeout:
            ended = False
        except OSError:
            ended = True
        if not ended:
            write_out(out, "rejoined=1")
            s.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                while s.recv(1 << 16):
                    pass
            except (socket.timeout, OSError):
                pass
            return
        s.close()
        time.sleep(0.05)
    write_out(out, "rejoined=0")


def churn(path, n, secs, out):
    deadline = time.monotonic() + float(secs)
    n = int(n)
    done = 0
    open_ = []
    two = wire(frame(2, 600))
    while done < n and time.monotonic() < deadline:
        while len(open_) < 64 and done + len(open_) < n:
            try:
                open_.append(join(path))
            except OSError:
                break
        if not open_:
            time.sleep(0.01)
            continue
        s = open_.pop(0)
        kind = (done + len(open_)) % 6
        try:
            if kind == 0:
                s.sendall(wire(frame(1)))
            elif kind == 1:
                s.sendall(two[:2])
            elif kind == 2:
                s.sendall(wire(frame(1)) + two[:300])
            elif kind == 3:
                s.sendall(b"\xff\xff\xff\xff")
            elif kind == 4:
                s.sendall(two[:300])
                s.shutdown(socket.SHUT_WR)
                s.settimeout(2)
                while s.recv(1 << 16):
                    pass
            else:
                s.sendall(wire(frame(1)))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        s.close()
        done += 1
    for s in open_:
        s.close()
    write_out(out, "done=%d" % done)


def hold(path, n, ready, release, secs):
    deadline = time.monotonic() + float(secs)
    part = struct.pack(">I", MAX_FRAME) + frame(1, MAX_FRAME)[:9000]
    held = []
    while len(held) < int(n) and time.monotonic() < deadline:
        try:
            s = join(path)
        except BlockingIOError:  # the backlog is full: the daemon catches up
            time.sleep(0.01)
            continue
        if os.environ.get("HOLD_EMPTY") != "1":
            s.sendall(part)
        held.append(s)
    open(ready, "w").close()
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)
    for s in held:
        s.close()


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {"recv": recv, "send": send, "stuck": stuck, "reconnect": reconnect, "comeback": comeback,
     "churn": churn, "hold": hold}[mode](*args)
