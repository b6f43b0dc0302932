#!/usr/bin/env python3
"""race_start.py OUT SECONDS -- CMD1 ARGS... -- CMD2 ARGS... [-- ...]: start
the commands at the same instant, for test/t_sec05_concurrent_start.sh.

Each command is forked first and waits, already forked, on a pipe; closing
the pipe releases them all at once, so they exec within microseconds of
each other. Command i's stderr goes to OUT.i.err (stdin and stdout are
/dev/null). A command still running after SECONDS is killed (status 124).
Prints the exit statuses, space-separated, in the order given.
"""
import os
import signal
import sys
import time

out, secs = sys.argv[1], float(sys.argv[2])
cmds, cur = [], None
for a in sys.argv[3:]:
    if a == "--":
        cur = []
        cmds.append(cur)
    elif cur is not None:
        cur.append(a)
cmds = [c for c in cmds if c]

gate_r, gate_w = os.pipe()
pids = []
for i, c in enumerate(cmds, 1):
    pid = os.fork()
    if pid == 0:
        os.close(gate_w)
        os.read(gate_r, 1)  # returns at EOF: when the parent lets go
        null = os.open(os.devnull, os.O_RDWR)
        err = os.open("%s.%d.err" % (out, i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(err, 2)
        try:
            os.execvp(c[0], c)
        finally:
            os._exit(127)
    pids.append(pid)
os.close(gate_r)
time.sleep(0.05)  # every child is in its read by now
os.close(gate_w)

status = {}
deadline = time.monotonic() + secs
while len(status) < len(pids):
    for p in pids:
        if p in status:
            continue
        q, st = os.waitpid(p, os.WNOHANG)
        if q:
            status[p] = os.waitstatus_to_exitcode(st)
    if len(status) < len(pids):
        if time.monotonic() > deadline:
            for p in pids:
                if p not in status:
                    os.kill(p, signal.SIGKILL)
                    os.waitpid(p, 0)
                    status[p] = 124
        time.sleep(0.005)
print(" ".join(str(status[p]) for p in pids))
