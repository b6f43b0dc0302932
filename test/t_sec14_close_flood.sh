#!/bin/bash
# t_sec14_close_flood.sh: a close stays final whoever else closes links.
# The daemon remembers each process whose seqpacket port was closed through
# its close file, so that a ptp client, which reconnects at once, is
# refused for as long as it runs. That record is bounded; it used to hold
# 1,024 entries in all and drop the oldest, so an ordinary user could make
# it forget root's closed client by closing 1,024 processes of its own.
# Under mode=0666 (anyone may join and close):
#   - root's ptp-style client (a process that reconnects at once when hung
#     up) joins; `truncate -s 0` on its close file fails with EINVAL (a
#     write of nothing) and leaves it; it is closed through links/N/close
#     (echo 1 >), and its reconnect is refused with the ack byte
#     ECONNREFUSED;
#   - a throw-away user forks FLOOD processes (more than the record's
#     bound per uid), each joins through PATH/seqpacket and is closed
#     through its links/N/close by that user;
#   - root's client reconnects again: still refused, no link appears;
#   - the user's own record is bounded: the daemon holds one pidfd for
#     root's entry and 1,024 for the user's; the user's newest closed
#     process is refused, its oldest (beyond the bound) is let back in.
# A throw-away user mfu_c14 is created and removed at exit.
. "$(dirname "$0")/lib.sh"

FLOOD=${FLOOD:-1200}
PER_UID=1024 # control/refuse.go maxRefusedPerUID

hostile_copy # $SCRATCH traversable for the user
U=mfu_c14
throwaway_user "$U"

P=$SCRATCH/m
start_multifs "$P" -o mode=0666 || finish
D=$LASTPID
SD=$(sockdir_of "$P")

# --- root's ptp-style client ----------------------------------------------------
# Joins; at the hang-up reconnects at once (as libvdeplug_ptp does) and
# reports that reconnect's ack; then, each time ARGV[3]'s counter file
# grows, reconnects once more and reports. Ack 0 is "accepted", anything
# else the errno the daemon refused it with.
cat >"$SCRATCH/ptp.py" <<'EOF'
import os, socket, sys, time
path, out, trig = sys.argv[1], sys.argv[2], sys.argv[3]
def log(s):
    with open(out, "a") as f:
        f.write(s + "\n")
def dial():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(5)
    s.connect(path)
    b = s.recv(16)
    return s, (b[0] if len(b) == 1 else -1)
s, ack = dial()
log("joined ack=%d pid=%d" % (ack, os.getpid()))
s.settimeout(None)
s.recv(2048)  # the hang-up: EOF
s, ack = dial()
log("reconnect 1 ack=%d" % ack)
done = 1
t0 = time.monotonic()
while time.monotonic() - t0 < 100:
    n = os.path.getsize(trig) if os.path.exists(trig) else 0
    if n > done:
        done = n
        s, ack = dial()
        log("reconnect %d ack=%d" % (done, ack))
    time.sleep(0.02)
EOF
RP=$SCRATCH/root_ptp.out
TRIG=$SCRATCH/trigger
bg "$PY" "$SCRATCH/ptp.py" "$SD/seqpacket" "$RP" "$TRIG"
check_within "root's ptp-style client joins" 5 "grep -q '^joined ack=0 ' '$RP'" cat "$RP"
RPID=$(sed -n 's/^joined ack=0 pid=\([0-9]*\)$/\1/p' "$RP")
check_eq "it is link 1, with its pid" "1 $RPID" "$(links_of "$P") $(stat_key "$P/links/1/stats" pid)"
# A truncation is no close: `truncate -s 0 close` is answered as a write
# of nothing (EINVAL), and the link stays.
check_fails "truncate -s 0 links/1/close fails" truncate -s 0 "$P/links/1/close"
check "... with EINVAL, as a write of nothing" sh -c "truncate -s 0 '$P/links/1/close' 2>&1 | grep -q 'Invalid argument'"
check_eq "... and link 1 is still there" 1 "$(links_of "$P")"
close_link "$P/links/1/close" "root closes it through links/1/close"
check_within "its immediate reconnect is refused with ECONNREFUSED (111)" 5 \
	"grep -q '^reconnect 1 ack=111$' '$RP'" cat "$RP"
check_links "no link rejoined" "$P" "" 2

# --- the user's flood -----------------------------------------------------------
# Forks N children; each joins through ENTRY and reports its ack on a shared
# pipe. Two of them (FIRST and LAST) stay Python and wait; the others, to
# keep N processes cheap, exec sleep, which inherits the joined socket (the
# process, and so the record's entry, is the same). The parent closes
# FIRST's link, then every other link its children hold, then LAST's,
# through PATH/links/K/close, and reports. Once its stdin closes it has
# FIRST and LAST reconnect (SIGUSR1) and reports their acks, then kills
# its children.
cat >"$SCRATCH/flood.py" <<'EOF'
import os, signal, socket, sys, time
entry, tree, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.monotonic()
st_r, st_w = os.pipe()  # both close-on-exec
hold_r, hold_w = os.pipe()
def dial():
    try:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        c.settimeout(20)
        c.connect(entry)
        b = c.recv(16)
        return c, (b[0] if len(b) == 1 else -1)
    except OSError:
        return None, -2
def child(keep):
    os.close(st_r); os.close(hold_w)
    def again(sig, frame):
        _, ack = dial()
        os.write(st_w, b"again %d %d\n" % (os.getpid(), ack))
    signal.signal(signal.SIGUSR1, again)
    s, ack = dial()
    os.write(st_w, b"join %d %d\n" % (os.getpid(), ack))
    if not keep and s is not None:
        os.set_inheritable(s.fileno(), True)
        os.execv("/bin/sleep", ["sleep", "90"])
    while os.read(hold_r, 1):
        pass
kids = []
for i in range(n):
    pid = os.fork()
    if pid == 0:
        try:
            child(i in (0, n - 1))
        finally:
            os._exit(0)
    kids.append(pid)
os.close(hold_r)
first, last = kids[0], kids[-1]
buf = b""
def lines(want, prefix, deadline):
    global buf
    got = []
    while len(got) < want and time.monotonic() < deadline:
        while b"\n" not in buf:
            chunk = os.read(st_r, 65536)
            if not chunk:
                return got
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        f = line.decode().split()
        if f[0] == prefix:
            got.append((int(f[1]), int(f[2])))
    return got
joins = lines(n, "join", t0 + 60)
ok = sum(1 for _, a in joins if a == 0)
print("joined=%d of %d seconds=%.1f" % (ok, n, time.monotonic() - t0), flush=True)
links = {}
for name in os.listdir(os.path.join(tree, "links")):
    try:
        with open(os.path.join(tree, "links", name, "stats")) as f:
            links[int([l for l in f if l.startswith("pid: ")][0].split()[1])] = name
    except (OSError, IndexError, ValueError):
        pass
order = [first] + [k for k in kids[1:-1] if k in links] + [last]
closed = 0
for pid in order:
    try:
        with open(os.path.join(tree, "links", links[pid], "close"), "w") as f:
            f.write("1\n")
        closed += 1
    except (OSError, KeyError):
        pass
print("closed=%d seconds=%.1f" % (closed, time.monotonic() - t0), flush=True)
sys.stdin.read()
os.kill(first, signal.SIGUSR1)
os.kill(last, signal.SIGUSR1)
acks = dict(lines(2, "again", time.monotonic() + 10))
print("first_closed_reconnect ack=%d" % acks.get(first, -3), flush=True)
print("last_closed_reconnect ack=%d" % acks.get(last, -3), flush=True)
for k in kids:
    os.kill(k, signal.SIGKILL)
for k in kids:
    os.waitpid(k, 0)
EOF
chmod a+r "$SCRATCH/ptp.py" "$SCRATCH/flood.py"

FO=$SCRATCH/flood.out
mkfifo "$SCRATCH/go"
chmod 666 "$SCRATCH/go"
runuser -u "$U" -- timeout 100 "$PY" "$SCRATCH/flood.py" "$SD/seqpacket" "$P" "$FLOOD" \
	<"$SCRATCH/go" >"$FO" 2>&1 &
FLOODER=$!
track "$FLOODER"
exec 7>"$SCRATCH/go" # the flooder waits for this to close before its last step
check_within "the user's $FLOOD processes all join through seqpacket" 60 \
	"grep -q '^joined=$FLOOD of $FLOOD ' '$FO'" cat "$FO"
check_within "the user closes all $FLOOD of them through their close files" 60 \
	"grep -q '^closed=$FLOOD ' '$FO'" cat "$FO"
note "$(tr '\n' ' ' <"$FO")"
check_links "none of them rejoined" "$P" "" 3

# pidfds DAEMON: how many pidfds the daemon holds (the record's entries).
pidfds() { find "/proc/$1/fd" -lname 'anon_inode:\[pidfd\]' 2>/dev/null | wc -l; }
check_eq "the daemon holds $((PER_UID + 1)) pidfds: root's entry and the user's $PER_UID" \
	$((PER_UID + 1)) "$(pidfds "$D")"

# --- after the flood --------------------------------------------------------------
echo >>"$TRIG"
echo >>"$TRIG" # size 2: reconnect 2
check_within "root's client, reconnecting after the flood, is still refused (ECONNREFUSED)" 5 \
	"grep -q '^reconnect 2 ack=111$' '$RP'" cat "$RP"
check_links "root's client did not rejoin" "$P" "" 1
exec 7>&-
check_within "the user's newest closed process is still refused" 10 \
	"grep -q '^last_closed_reconnect ack=111$' '$FO'" cat "$FO"
check_within "the user's oldest closed process, past its own bound, is let back in" 10 \
	"grep -q '^first_closed_reconnect ack=0$' '$FO'" cat "$FO"
wait "$FLOODER" 2>/dev/null
check_eq "links_total: root's and the user's joins, nothing else" $((1 + FLOOD + 1)) \
	"$(stat_key "$P/stats" links_total)"
check_log_clean "no error in the daemon's log" "$SCRATCH/m.log"
finish
