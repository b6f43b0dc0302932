#!/bin/bash
# t_crash.sh: what a crash leaves behind, and starting again over it.
#
#  - `kill -9` the daemon: its peers see EOF, the mount is left stale
#    (ENOTCONN) and the socket dir is left; `multifs PATH` again succeeds,
#    replaces both, and serves;
#  - a socket dir that holds something multifs did not make (a regular
#    file) is refused with a clear error and left untouched; one holding
#    only a dead socket is reused; a live one is refused;
#  - SIGTERM while a shell has cd'd into the mount: exit 0 within ~5 s and
#    the mount is gone (detached lazily).
. "$(dirname "$0")/lib.sh"

# mounts_at PATH: how many mounts sit exactly at PATH.
mounts_at() { awk -v p="$1" '$2 == p { n++ } END { print n + 0 }' /proc/mounts; }

# dead_socket PATH: a unix socket file nobody listens on any more.
dead_socket() {
	"$PY" -c 'import socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); s.close()' "$1"
}

# refused_as_served NAME ERR ARGS...: multifs ARGS exits 1 and says (into
# the file ERR) that the multilink is already served.
refused_as_served() {
	local name=$1 err=$2 rc
	shift 2
	"$MULTIFS" "$@" >/dev/null 2>"$err"
	rc=$?
	if [ "$rc" -eq 1 ] && grep -q 'already served' "$err"; then
		pass "$name: $(cat "$err")"
	else
		fail "$name (exit 1, already served)" "exit $rc: $(cat "$err")"
	fi
}

# =============================================================================
# 1. kill -9
P=$SCRATCH/k
SD=$(sockdir_of "$P")
start_multifs "$P" || finish
D=$LASTPID
bg vde_plug "$P" null://
L=$LASTPID
bg "$VDEPROBE" hold -dir "$P/host" -ready "$SCRATCH/k.host" -max 30s
H=$LASTPID
wait_for "[ -d '$P/links/1' ] && [ -e '$SCRATCH/k.host' ]" 3
check "a link and a host joined" test -d "$P/links/1" -a -e "$SCRATCH/k.host"
check_eq "the socket dir holds a data socket per vde-2 peer" 2 "$(ls "$SD" | grep -c '^\(link\|host\)\.[0-9]')"

kill -KILL "$D"
check_exits "kill -9: the daemon is gone" "$D" 2
if wait_exit "$L" 2 && wait_exit "$H" 2; then
	pass "kill -9: the link's vde_plug and the host saw EOF and exited"
else
	fail "kill -9: the peers exit within 2 s" "vde_plug alive: $(alive "$L" && echo yes || echo no), host alive: $(alive "$H" && echo yes || echo no)"
fi
ERR=$(stat "$P" 2>&1)
if [ $? -ne 0 ] && printf '%s' "$ERR" | grep -q 'Transport endpoint is not connected'; then
	pass "kill -9: the mount is left stale (ENOTCONN)"
else
	fail "kill -9: the mount is left stale (ENOTCONN)" "$ERR"
fi
check "kill -9: still in /proc/mounts" is_mounted "$P"
check "kill -9: the socket dir is left" test -d "$SD"
check "kill -9: its stale sockets are left" test -S "$SD/ctl"

"$MULTIFS" --log-file "$SCRATCH/k2.log" "$P" 2>"$SCRATCH/k2.err"
RC=$?
check_eq "multifs PATH over the stale mount exits 0" "0" "$RC${RC:+$( [ "$RC" != 0 ] && echo ": $(cat "$SCRATCH/k2.err")")}"
D2=$(daemon_pid "$P")
track_mount "$P" "$D2"
check "the new daemon runs" alive "$D2"
check_eq "exactly one mount at PATH (the stale one was detached)" 1 "$(mounts_at "$P")"
check "the log says it detached the stale mount" grep -q 'detaching the stale mount' "$SCRATCH/k2.log"
check_eq "the tree works" "ctl host links seqpacket stats" "$(ls "$P" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
check_eq "fresh stats" "links: 0|links_total: 0|host: detached" \
	"$(grep -E '^(links|links_total|host):' "$P/stats" | tr '\n' '|' | sed 's/|$//')"
check_eq "the stale data sockets are gone" "ctl host.ctl host.seqpacket host.vhost-user seqpacket" \
	"$(ls "$SD" | sort | tr '\n' ' ' | sed 's/ $//')"
bg vde_plug "$P" null://
L2=$LASTPID
check_stat "a vde_plug joins the restarted multifs as link 1" "$P/links/1/stats" pid "$L2" 3
bg vde_plug "$P/host" null://
check_stat "a host attaches to the restarted multifs" "$P/stats" host attached 3

# A second kill -9 and restart, with the sockets of a live peer in place.
kill -KILL "$D2"
check_exits "a second kill -9: the daemon is gone" "$D2" 2
"$MULTIFS" --log-file "$SCRATCH/k3.log" "$P" 2>"$SCRATCH/k3.err"
RC=$?
check_eq "a second kill -9 and restart: exit 0" "0" "$RC${RC:+$( [ "$RC" != 0 ] && echo ": $(cat "$SCRATCH/k3.err")")}"
D3=$(daemon_pid "$P")
track_mount "$P" "$D3"
check_eq "a second kill -9 and restart: one mount" 1 "$(mounts_at "$P")"
check "a second kill -9 and restart: stats readable" grep -q '^links: 0$' "$P/stats"

# A live multifs is not mistaken for a dead one.
refused_as_served "a second multifs on a live PATH is refused" "$SCRATCH/k4.err" "$P"
check "the live one still serves" grep -q '^links: 0$' "$P/stats"

# The mountpoint a killed multifs had made is removed by the next one's
# stop (the dead one's lock says it made it); one made by hand stays.
M=$SCRATCH/made

# killed_then_restarted HOW: start multifs on M, kill -9 it, start it again
# over what it left, and stop that one; HOW names how M came to be.
killed_then_restarted() {
	local d
	"$MULTIFS" --log-file "$SCRATCH/made.log" "$M" || fail "start over a PATH $1" "exit $?"
	d=$(daemon_pid "$M")
	kill -KILL "$d"
	check_exits "kill -9 over a PATH $1: the daemon is gone" "$d" 2
	"$MULTIFS" --log-file "$SCRATCH/made.log" "$M" || fail "restart after kill -9 over a PATH $1" "exit $?"
	d=$(daemon_pid "$M")
	track_mount "$M" "$d"
	fusermount -u "$M"
	check_exits "restarted over a PATH $1: stopped" "$d" 3
}
killed_then_restarted "multifs made"
check_fails "the mountpoint the killed multifs made is removed at the next stop" test -e "$M"
mkdir "$M"
killed_then_restarted "made by hand"
check "a mountpoint made by hand stays" test -d "$M"

# =============================================================================
# 2. socket dirs multifs did not make
FD=$SCRATCH/fakesd
mkdir -m 0700 "$FD"
echo precious >"$FD/keep.txt"
dead_socket "$FD/old.sock"
P2=$SCRATCH/f2
"$MULTIFS" --sockdir "$FD" "$P2" >/dev/null 2>"$SCRATCH/f2.err"
RC=$?
if [ "$RC" -eq 1 ]; then pass "a socket dir holding a regular file: refused (exit 1)"; else fail "a socket dir holding a regular file: refused with exit 1" "exit $RC"; fi
check "the error names the file and says it is not a socket: $(cat "$SCRATCH/f2.err")" \
	grep -q 'holds keep.txt' "$SCRATCH/f2.err"
check_eq "the regular file is untouched" precious "$(cat "$FD/keep.txt" 2>&1)"
check "the dead socket beside it is untouched" test -S "$FD/old.sock"
check_eq "nothing else appeared in that dir" "keep.txt old.sock" "$(ls "$FD" | sort | tr '\n' ' ' | sed 's/ $//')"
check_fails "PATH is not mounted" is_mounted "$P2"
check_fails "the mountpoint multifs created is removed again" test -e "$P2"
check "no daemon left" test -z "$(daemon_pid "$P2")"

# A regular file where the socket dir should be.
echo precious >"$SCRATCH/notadir"
"$MULTIFS" --sockdir "$SCRATCH/notadir" "$P2" >/dev/null 2>"$SCRATCH/f3.err"
RC=$?
if [ "$RC" -ne 0 ]; then pass "a socket dir that is a regular file: refused (exit $RC): $(cat "$SCRATCH/f3.err")"; else fail "a socket dir that is a regular file: refused" "exit 0"; fi
check_eq "that file is untouched" precious "$(cat "$SCRATCH/notadir" 2>&1)"
check_fails "PATH is not mounted" is_mounted "$P2"

# A live multifs's socket dir.
refused_as_served "a live multifs's socket dir: refused" "$SCRATCH/f4.err" --sockdir "$SD" "$P2"
check "the live multifs still serves" grep -q '^links: 0$' "$P/stats"
check "its ctl socket is still there" test -S "$SD/ctl"

# Dead sockets in a directory without multifs's marker: not provably a
# crash's leftover (another program's, say), so refused and left alone.
FD2=$SCRATCH/deadsd
mkdir -m 0700 "$FD2"
dead_socket "$FD2/ctl"
dead_socket "$FD2/link.7"
P3=$SCRATCH/f5
"$MULTIFS" --sockdir "$FD2" "$P3" >/dev/null 2>"$SCRATCH/f6.err"
RC=$?
check_eq "dead sockets without the marker: refused (exit 1): $(cat "$SCRATCH/f6.err")" 1 "$RC"
check_eq "dead sockets without the marker: left alone" "ctl link.7" "$(ls -A "$FD2" | sort | tr '\n' ' ' | sed 's/ $//')"

# With the marker (the lock file a multifs killed with -9 leaves), the
# same directory is a crash's leftover: reused, its dead sockets replaced.
touch "$FD2/.multifs.lock"
if "$MULTIFS" --log-file "$SCRATCH/f5.log" --sockdir "$FD2" "$P3" 2>"$SCRATCH/f5.err"; then
	pass "a socket dir holding only dead sockets is reused (exit 0)"
	track_mount "$P3" "$(daemon_pid "$P3")"
	check_eq "its dead sockets were replaced" "ctl host.ctl host.seqpacket host.vhost-user seqpacket" \
		"$(ls "$FD2" | sort | tr '\n' ' ' | sed 's/ $//')"
	bg vde_plug "$P3" null://
	check_links "a vde_plug joins it" "$P3" 1 3
else
	fail "a socket dir holding only dead sockets is reused" "$(cat "$SCRATCH/f5.err")"
fi

# =============================================================================
# 3. SIGTERM while a shell has cd'd into the mount
P4=$SCRATCH/busy
SD4=$(sockdir_of "$P4")
start_multifs_fg "$P4" || finish
F=$LASTPID
bg vde_plug "$P4" null://
BL=$LASTPID
(cd "$P4/links" && exec sleep 30) </dev/null >/dev/null 2>&1 &
SL=$!
disown "$SL" 2>/dev/null
track "$SL"
wait_for "[ \"\$(readlink /proc/$SL/cwd)\" = '$P4/links' ]" 3
check_eq "a process sits in the mount" "$P4/links" "$(readlink "/proc/$SL/cwd")"
exec 9<"$P4/stats" # and an open file, too
T0=$(now_ms)
kill -TERM "$F"
if wait_exit "$F" 6; then
	wait "$F"
	RC=$?
	check_eq "SIGTERM with a busy mount: exit status 0 after $(($(now_ms) - T0)) ms" 0 "$RC"
else
	fail "SIGTERM with a busy mount: multifs exits within 6 s" "still running"
fi
exec 9<&-
check_fails "the busy mount is gone from /proc/mounts" is_mounted "$P4"
check_fails "the socket dir is gone" test -e "$SD4"
check_exits "the link's vde_plug exited" "$BL" 2
check "the log says it detached the busy mount lazily" grep -q 'detaching it lazily' "$SCRATCH/busy.log"
check "the process in the mount is unharmed" alive "$SL"
kill "$SL" 2>/dev/null
wait_exit "$SL" 2
check_fails "no multifs left for that PATH" test -n "$(daemon_pid "$P4")"

finish
