#!/usr/bin/env bash
# t_sec07_signals.sh: signals and a broken stderr must not stop multifs
# (anyone who can signal it or close its terminal would cut every link).
#
# SIGHUP must not stop multifs: it reopens the log file (the logrotate
# convention) and does nothing else. A stderr that is a pipe whose reader
# has gone must not kill it either. Only SIGTERM, SIGINT and unmounts stop
# it, cleanly. Cases:
#   a. kill -HUP a daemon with --log-file: it keeps serving; after
#      `mv x.log x.log.1; kill -HUP` new lines go to a fresh x.log;
#   b. kill -HUP a `multifs -f`, and a real terminal hang-up: the pty a
#      `multifs -f` runs on is closed (SIGHUP, then EIO on every write);
#   c. `multifs -f PATH 2>&1 | head -c 1`, then output (a join at debug
#      level): the writes meet EPIPE;
#   d. SIGTERM and SIGINT of `multifs -f` (exit status 0) and SIGTERM of a
#      daemon: mount, mountpoint and socket directory gone.
# After every signal: no dead mount ("Transport endpoint is not connected")
# and no stale socket directory (one whose ctl does not answer).
. "$(dirname "$0")/lib.sh"

# enotconn PATH: stat(PATH) fails with ENOTCONN, a FUSE mount whose daemon
# is gone.
enotconn() {
	"$PY" -c '
import errno, os, sys
try:
    os.stat(sys.argv[1])
except OSError as e:
    sys.exit(0 if e.errno == errno.ENOTCONN else 1)
sys.exit(1)' "$1"
}

# answers SOCKET: a stream connect to SOCKET succeeds.
answers() {
	"$PY" -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(2)
s.connect(sys.argv[1])' "$1"
}

# is_head_alive PID: head (PID itself, or a child of that subshell) runs.
is_head_alive() {
	pgrep -P "$1" -x head >/dev/null && return 0
	alive "$1" && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = head ]
}

# links_now PATH: the number of open links.
links_now() { stat_key "$1/stats" links; }

# still_serving LABEL PATH PID: after a signal that must not stop it, the
# daemon PID is alive and serves PATH, and a new link joins.
still_serving() {
	local label=$1 p=$2 pid=$3 sd n
	sd=$(sockdir_of "$p")
	# Give a signal's default action (death) time to show.
	sleep 0.5
	check "$label: the daemon is alive" alive "$pid"
	check "$label: PATH is still mounted" is_mounted "$p"
	check_fails "$label: no dead mount at PATH" enotconn "$p"
	check "$label: no stale socket directory (its ctl answers)" answers "$sd/ctl"
	n=$(links_now "$p")
	bg vde_plug "$p" null://
	check_stat "$label: a link still joins" "$p/stats" links "$((${n:-0} + 1))" 3
}

# gone_cleanly LABEL PATH: after a stop, nothing is left: no mount (dead or
# alive), no mountpoint (multifs created it), no socket directory.
gone_cleanly() {
	local label=$1 p=$2 sd
	sd=$(sockdir_of "$p")
	check_within "$label: the mount is gone" 3 "! is_mounted '$p'" grep -F " $p " /proc/mounts
	check_fails "$label: no dead mount at PATH" enotconn "$p"
	check_within "$label: the mountpoint multifs created is gone" 2 "! is_mounted '$p' && [ ! -e '$p' ]" ls -ld "$p"
	check_within "$label: the socket directory is gone" 2 "[ ! -e '$sd' ]" ls -la "$sd"
}

# ------------------------------------------- a. SIGHUP reopens the log file
P=$SCRATCH/a
LOG=$SCRATCH/a.log
start_multifs "$P" || finish
D=$LASTPID
kill -HUP "$D" 2>/dev/null
still_serving "a. HUP of a daemon" "$P" "$D"
check_within "a. the log file still gets lines after HUP" 2 "grep 'link joined' '$LOG' | grep -q 'link=1'" tail -n 2 "$LOG"
mv "$LOG" "$LOG.1"
kill -HUP "$D" 2>/dev/null
still_serving "a. HUP after the log was moved away" "$P" "$D"
check_within "a. after the rotation new lines go to a fresh log file" 3 \
	"grep 'link joined' '$LOG' | grep -q 'link=2'" ls -l "$SCRATCH"
check_fails "a. ... and not to the moved one" sh -c "grep 'link joined' '$LOG.1' | grep -q 'link=2'"
check_eq "a. the fresh log file is the daemon's, 0600" "600 root" "$(stat -c '%a %U' "$LOG" 2>/dev/null)"
kill -TERM "$D" 2>/dev/null
check_exits "a. SIGTERM then stops it" "$D" 5
gone_cleanly "a. after SIGTERM" "$P"

# -------------------------------------------- b. SIGHUP of multifs -f
P=$SCRATCH/b
start_multifs_fg "$P" || finish
D=$LASTPID
kill -HUP "$D" 2>/dev/null
still_serving "b. HUP of multifs -f" "$P" "$D"
kill -TERM "$D" 2>/dev/null
check_exits "b. SIGTERM then stops it" "$D" 5
gone_cleanly "b. after SIGTERM" "$P"

# A real hang-up: multifs -f on a pty whose master is closed. It gets
# SIGHUP as the terminal's controlling process, and EIO on every later write
# to its stderr (debug level: a join writes lines).
P=$SCRATCH/b2
cat >"$SCRATCH/hangup.py" <<'EOF'
import os, pty, select, sys, time
exe, path, pidfile = sys.argv[1:4]
pid, fd = pty.fork()
if pid == 0:
    try:
        os.execv(exe, [exe, "-f", "--log-level", "debug", path])
    finally:
        os._exit(127)
with open(pidfile, "w") as f:
    f.write("%d\n" % pid)
ready = False
deadline = time.time() + 5
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.05)
    if r:
        try:
            os.read(fd, 65536)
        except OSError:
            break
    if os.path.lexists(os.path.join(path, "ctl")):
        ready = True
        break
os.close(fd)  # the hang-up
sys.exit(0 if ready else 1)
EOF
timeout 10 "$PY" "$SCRATCH/hangup.py" "$MULTIFS" "$P" "$SCRATCH/b2.pid"
RC=$?
D=$(cat "$SCRATCH/b2.pid" 2>/dev/null)
track_mount "$P" "$D"
if check_eq "b2. multifs -f served on a pty" 0 "$RC"; then
	still_serving "b2. terminal hang-up of multifs -f" "$P" "$D"
	kill -TERM "$D" 2>/dev/null
	check_exits "b2. SIGTERM then stops it" "$D" 5
	gone_cleanly "b2. after SIGTERM" "$P"
fi

# ------------------------------------------- c. stderr a pipe that closed
P=$SCRATCH/c
("$MULTIFS" -f --log-level debug "$P" </dev/null 2>&1 | head -c 1 >/dev/null) &
PIPE=$!
track "$PIPE"
track_mount "$P"
if check_within "c. multifs -f | head -c 1 serves" 5 "is_mounted '$P' && [ -S '$P/ctl' ]"; then
	D=$(daemon_pid "$P")
	track_mount "$P" "$D"
	# head has read its byte (the "serving" line) and gone: the pipe
	# has no reader, the next write meets EPIPE.
	check_within "c. head has exited" 3 "! is_head_alive $PIPE"
	bg vde_plug "$P" null://
	check_within "c. a join (lines for the dead pipe) is served" 3 "[ \"\$(links_now '$P')\" = 1 ]" links_now "$P"
	still_serving "c. writes to a broken stderr" "$P" "$D"
	kill -TERM "$D" 2>/dev/null
	check_exits "c. SIGTERM then stops it" "$D" 5
	gone_cleanly "c. after SIGTERM" "$P"
fi

# ---------------------------------------- d. SIGTERM and SIGINT still stop
for sig in TERM INT; do
	P=$SCRATCH/d$sig
	start_multifs_fg "$P" || finish
	D=$LASTPID
	bg vde_plug "$P" null://
	PLUG=$LASTPID
	check_stat "d. $sig: a link joins" "$P/stats" links 1 3
	kill "-$sig" "$D"
	RC=running
	wait_exit "$D" 5 && { wait "$D"; RC=$?; }
	check_eq "d. SIG$sig of multifs -f: exit status 0" 0 "$RC"
	gone_cleanly "d. after SIG$sig" "$P"
	check "d. SIG$sig: the link's vde_plug saw EOF and exited" wait_exit "$PLUG" 3
done
P=$SCRATCH/dd
start_multifs "$P" || finish
D=$LASTPID
kill -TERM "$D"
check_exits "d. SIGTERM stops a daemon" "$D" 5
gone_cleanly "d. after SIGTERM of a daemon" "$P"

finish
