#!/bin/bash
# t_sec08_sockdir_existing.sh: --sockdir pointed at a directory that exists
# uses it only if it is empty or provably multifs's own, and otherwise
# refuses and changes nothing: it must never delete or take over another
# program's sockets or files.
#
#  - A directory holding another program's listening unix socket (and,
#    once, a regular file beside it; once a dead socket instead), and one
#    holding only dead sockets named like multifs's (ctl, link.7) that
#    multifs did not make: multifs exits 1 with one line on stderr; every
#    entry is still there, the program's socket still answers, the
#    directory's mode, owner and group are unchanged, nothing is mounted
#    and the PATH multifs would have created is not left behind.
#  - An existing empty directory is accepted and serves; after the stop it
#    is gone or empty (the test says which), never holding stale sockets.
#  - After `kill -9`, a restart with the same --sockdir reuses the
#    directory its predecessor left (what multifs wrote there proves it is
#    its own) and serves; after the stop it is gone or empty.
#  - A --sockdir that is a symbolic link is refused and its target left
#    alone.
. "$(dirname "$0")/lib.sh"

LS=$ROOT/test/hostile/listen_sock.py

# listing DIR: its entries with their types, one line.
listing() { (cd "$1" 2>/dev/null && stat -c '%n:%F' -- * .[!.]* 2>/dev/null) | sort | tr '\n' ' ' | sed 's/ $//'; }

# dead_socket PATH: a unix socket file nobody listens on.
dead_socket() {
	"$PY" -c 'import socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); s.close()' "$1"
}

# listener PATH: another program listening at PATH (for 60 s at most).
listener() {
	rm -f "$SCRATCH/listen.ready"
	bg "$PY" "$LS" "$1" "$SCRATCH/listen.ready" 60
	check_within "another program listens at $1" 5 "[ -e '$SCRATCH/listen.ready' ]"
}

# gone_or_empty DIR: what is left of DIR after a stop, in words; status 0
# if it is gone or empty.
gone_or_empty() {
	if [ ! -e "$1" ]; then
		echo gone
	elif [ -d "$1" ] && [ ! -L "$1" ] && [ -z "$(ls -A "$1")" ]; then
		echo empty
	else
		echo "left holding: $(listing "$1")"
		return 1
	fi
}

# refused_untouched LABEL D P [SOCK]: `multifs --sockdir D P` must exit 1
# with one line, and leave D (and the socket SOCK in it, still answering)
# as it was.
refused_untouched() {
	local label=$1 d=$2 p=$3 sock=${4:-} before meta rc dp
	before=$(listing "$d")
	meta=$(stat -c '%a %U %G' "$d")
	timeout 20 "$MULTIFS" --log-file "$SCRATCH/$(basename "$p").log" --sockdir "$d" "$p" </dev/null >/dev/null 2>"$SCRATCH/err"
	rc=$?
	check_eq "$label: refused with exit 1 ($(head -c 200 "$SCRATCH/err"))" 1 "$rc"
	check "$label: one line on stderr" one_line "$SCRATCH/err"
	check_eq "$label: every entry is still there, and nothing else" "$before" "$(listing "$d")"
	if [ -n "$sock" ]; then
		check "$label: the program's socket still accepts a connection" "$PY" "$LS" --hello "$sock"
	fi
	check_eq "$label: the directory's mode, owner and group are unchanged" "$meta" "$(stat -c '%a %U %G' "$d" 2>&1)"
	check_fails "$label: PATH is not mounted" mounted_at "$p"
	check_fails "$label: the PATH it would have created is not left behind" test -e "$p"
	dp=$(daemon_pid "$p") && kill -KILL "$dp" 2>/dev/null
	[ "$rc" = 0 ] && track_mount "$p"
	return 0
}

# -----------------------------------------------------------------------------
# 1. directories that hold what multifs did not make
D=$SCRATCH/app1
mkdir -m 0750 "$D"
chgrp nogroup "$D" 2>/dev/null
echo precious >"$D/notes.txt"
listener "$D/app.sock"
refused_untouched "another program's socket and a file" "$D" "$SCRATCH/p1" "$D/app.sock"
check_eq "another program's socket and a file: the file's content is intact" precious "$(cat "$D/notes.txt" 2>&1)"

D=$SCRATCH/app2
mkdir -m 0750 "$D"
chgrp nogroup "$D" 2>/dev/null
listener "$D/app.sock"
dead_socket "$D/old.sock"
refused_untouched "another program's socket and a dead one (sockets only)" "$D" "$SCRATCH/p2" "$D/app.sock"

D=$SCRATCH/app3
mkdir -m 0755 "$D"
dead_socket "$D/ctl"
dead_socket "$D/link.7"
refused_untouched "dead sockets named like multifs's, not made by multifs" "$D" "$SCRATCH/p3"

# -----------------------------------------------------------------------------
# 2. an existing empty directory
D=$SCRATCH/empty
mkdir -m 0755 "$D"
P=$SCRATCH/p4
timeout 20 "$MULTIFS" --log-file "$SCRATCH/p4.log" --sockdir "$D" "$P" </dev/null >/dev/null 2>"$SCRATCH/err"
RC=$?
check_eq "an existing empty directory is accepted: exit 0 ($(head -c 200 "$SCRATCH/err"))" 0 "$RC"
if [ "$RC" = 0 ]; then
	DP=$(daemon_pid "$P")
	track_mount "$P" "$DP"
	check "an existing empty directory: multifs serves" joinable "$P"
	note "an existing empty directory, while serving: $(listing "$D")"
	timeout 5 fusermount -u "$P"
	check_exits "an existing empty directory: stopped" "$DP" 3
	LEFT=$(gone_or_empty "$D")
	check "an existing empty directory, after the stop: $LEFT" gone_or_empty "$D"
fi

# -----------------------------------------------------------------------------
# 3. kill -9, then a restart with the same --sockdir
D=$SCRATCH/own
P=$SCRATCH/p5
start_multifs "$P" --sockdir "$D" || finish
DP=$LASTPID
bg vde_plug "$P" null://
VP=$LASTPID
check_stat "kill -9: a link had joined" "$P/stats" links 1 3
kill -KILL "$DP"
check_exits "kill -9: the daemon is gone" "$DP" 2
# A live vde_plug's data socket would not be a leftover.
check_exits "kill -9: the link's vde_plug exits" "$VP" 2
note "kill -9: the socket directory it left: $(listing "$D")"
check "kill -9: the socket directory is left" test -d "$D"
timeout 20 "$MULTIFS" --log-file "$SCRATCH/p5.2.log" --sockdir "$D" "$P" </dev/null >/dev/null 2>"$SCRATCH/err"
RC=$?
check_eq "restart with the same --sockdir over its own leftover: exit 0 ($(head -c 200 "$SCRATCH/err"))" 0 "$RC"
if [ "$RC" = 0 ]; then
	DP=$(daemon_pid "$P")
	track_mount "$P" "$DP"
	check "restart: multifs serves" joinable "$P"
	timeout 5 fusermount -u "$P"
	check_exits "restart: stopped" "$DP" 3
	LEFT=$(gone_or_empty "$D")
	check "restart, after the stop, the socket directory is $LEFT" gone_or_empty "$D"
fi

# -----------------------------------------------------------------------------
# 4. a symlink as --sockdir (never followed: a regression check)
T=$SCRATCH/target
mkdir -m 0755 "$T"
ln -s "$T" "$SCRATCH/sdlink"
refused_untouched "--sockdir a symlink to an empty directory" "$SCRATCH/sdlink" "$SCRATCH/p6"
check_eq "--sockdir a symlink: its target is still empty" "" "$(ls -A "$T")"
check_eq "--sockdir a symlink: its target's mode is unchanged" 755 "$(stat -c %a "$T")"
check "--sockdir a symlink: it is still a symlink" test -L "$SCRATCH/sdlink"

finish
