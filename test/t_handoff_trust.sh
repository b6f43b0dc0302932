#!/bin/bash
# t_handoff_trust.sh: `multifs handoff` trusts only a multifs run by root or
# by its caller, and no mount can keep it from ending on time.
#
# The peer is test/fakemfs, a FUSE server of the test's own that mounts
# with fsname and subtype multifs (mountinfo type fuse.multifs) and serves
# a tree that reads like a multifs's (stats, links/N/stats, links/N/close),
# logging every open, read and write it gets.
#
# A. An impostor: the fake run by an ordinary user (mft_fake), with
#    allow_other (user_allow_other in /etc/fuse.conf), so root can read it.
#    Root's `multifs handoff PATH 1 -- COMMAND` exits 2 with one line naming
#    the owner, COMMAND never runs, and the fake gets no request from it
#    (no open, no write to close). The same with an impostor that answers
#    nothing (handoff refuses at once), and for another ordinary user
#    (mft_other) as the caller. A user's own mount, and root's mount for an
#    ordinary user, are accepted (the hand-off is made: the fake gets the
#    close of OLD).
# B. A mount that stops answering mid-hand-off: the fake run by root
#    (so trusted), which blocks every read once handoff has read the new
#    link's stats twice. `handoff --timeout 2s` exits 1 within the timeout
#    and a margin, COMMAND is ended, OLD is not closed. SIGTERM during such
#    a hang ends handoff at once (exit 1), COMMAND ended, OLD not closed.
#    SIGKILL during such a hang: handoff is reaped at once (no thread of
#    its own waits on the mount).
#
# Users mft_fake and mft_other are made and removed; /etc/fuse.conf and the
# mode of /dev/fuse are restored at exit, also on failure. Every fake is
# killed and its mount undone at exit (killing a fake fails whatever
# request still waits on it).
. "$(dirname "$0")/lib.sh"

FAKE_USER=mft_fake
OTHER_USER=mft_other
throwaway_user $FAKE_USER
throwaway_user $OTHER_USER
FAKE_UID=$(id -u $FAKE_USER)
chmod 755 "$SCRATCH"

# The binaries, where the test users can run them.
FAKEBIN=$SCRATCH/fakemfs
if ! (cd "$ROOT" && go build -o "$FAKEBIN" ./test/fakemfs) >"$SCRATCH/build.log" 2>&1; then
	fail "build test/fakemfs" "$(tail -n 5 "$SCRATCH/build.log" | tr '\n' ' ')"
	finish
fi
MFS=$SCRATCH/multifs
cp "$MULTIFS" "$MFS"
chmod 755 "$FAKEBIN" "$MFS"

# ---- /etc/fuse.conf: user_allow_other while the test runs (an ordinary
# user's FUSE server can then let root in), restored byte for byte at exit.
CONF=/etc/fuse.conf
if [ -e "$CONF" ]; then
	cp -p "$CONF" "$SCRATCH/fuse.conf.saved" || {
		fail "save $CONF" "cannot copy it"
		finish
	}
	at_exit "cp -p '$SCRATCH/fuse.conf.saved' '$CONF'"
	{
		grep -Ev '^[[:space:]]*user_allow_other[[:space:]]*(#.*)?$' "$SCRATCH/fuse.conf.saved"
		echo user_allow_other
	} >"$SCRATCH/conf.new"
	cat "$SCRATCH/conf.new" >"$CONF"
else
	at_exit "rm -f '$CONF'"
	echo user_allow_other >"$CONF"
	chmod 644 "$CONF"
fi
# fusermount3 opens /dev/fuse as the calling user.
FUSEMODE=$(stat -c %a /dev/fuse)
at_exit "chmod $FUSEMODE /dev/fuse"
chmod 0666 /dev/fuse

# as USER CMD...: CMD as USER (root: as is).
as() {
	local u=$1
	shift
	if [ "$u" = root ]; then
		"$@"
	else
		setpriv --reuid="$u" --regid="$(id -g "$u")" --clear-groups -- "$@"
	fi
}

# start_fake NAME USER ARGS...: fakemfs run by USER on $SCRATCH/NAME/m
# (a directory of USER's), logging to $SCRATCH/NAME/log; ARGS are its
# flags. $FD is $SCRATCH/NAME. Killed and unmounted at exit.
start_fake() {
	local name=$1 user=$2
	shift 2
	FD=$SCRATCH/$name
	mkdir -p "$FD/m"
	chown -R "$user" "$FD"
	chmod 755 "$FD"
	as "$user" "$FAKEBIN" -mount "$FD/m" -log "$FD/log" -ready "$FD/ready" "$@" </dev/null >"$FD/out" 2>&1 &
	track $!
	track_mount "$FD/m"
	if ! wait_for "[ -e '$FD/ready' ] && mounted_at '$FD/m'" 10; then
		fail "$name: fakemfs mounts as $user" "$(tr '\n' ' ' <"$FD/out")"
		return 1
	fi
	return 0
}

# owner_of DIR: the user_id of the mount at DIR, as mountinfo says it.
owner_of() {
	awk -v p="$1" '$5 == p { for (i = 7; i <= NF; i++) if ($i == "-") { print $(i + 1), $(i + 3); exit } }' /proc/self/mountinfo |
		sed -n 's/^\(fuse\.multifs\) .*user_id=\([0-9]*\).*/\1 \2/p'
}

# handoff_bg NAME USER ARGS...: `multifs handoff ARGS` run by USER in the
# background: its stdout in $SCRATCH/NAME.out, stderr NAME.err, pid in
# $HPID, and its exit status in NAME.rc once it has fully exited (a process
# with a thread stuck in a FUSE request is not reaped: wait would not
# return).
handoff_bg() {
	local name=$1 user=$2
	shift 2
	rm -f "$SCRATCH/$name".*
	HSTART=$(now_ms)
	(
		# No shell function in between: $! is handoff's own pid (setpriv
		# execs it).
		if [ "$user" = root ]; then
			"$MFS" handoff "$@" >"$SCRATCH/$name.out" 2>"$SCRATCH/$name.err" &
		else
			setpriv --reuid="$user" --regid="$(id -g "$user")" --clear-groups -- \
				"$MFS" handoff "$@" >"$SCRATCH/$name.out" 2>"$SCRATCH/$name.err" &
		fi
		echo $! >"$SCRATCH/$name.pid"
		wait $!
		echo $? >"$SCRATCH/$name.rc"
	) 2>>"$SCRATCH/bg.log" &
	track $!
	wait_for "[ -s '$SCRATCH/$name.pid' ]" 2
	HPID=$(cat "$SCRATCH/$name.pid" 2>/dev/null)
	[ -n "$HPID" ] && track "$HPID"
	return 0
}

# handoff_done NAME SECS: wait SECS for handoff NAME to exit; its exit
# status in $RC ("none" if it did not exit), the time since its start in
# $TOOK (ms).
handoff_done() {
	RC=none
	if wait_for "[ -s '$SCRATCH/$1.rc' ]" "$2"; then
		RC=$(cat "$SCRATCH/$1.rc")
	fi
	TOOK=$(($(now_ms) - HSTART))
}

# writes LOG [FILE]: the writes a fake got (to FILE, links/1/close say).
writes() { grep -c "^write ${2:-}" "$1" 2>/dev/null; }

# one_line_err NAME FILE PATTERN: FILE is one line, "multifs: ...PATTERN".
one_line_err() {
	if one_line "$2" && grep -Eq "^multifs: .*$3" "$2"; then
		pass "$1: one line: $(cat "$2")"
	else
		fail "$1: one line starting 'multifs: ' saying /$3/" "$(tr '\n' '|' <"$2" | head -c 300)"
	fi
}

# ---- A. impostors -------------------------------------------------------------------
# A fake of mft_fake's whose link 2 (once COMMAND writes its pid) has
# carried frames already: a hand-off there would go through at once.
start_fake imp $FAKE_USER -links 1 -newpid "$SCRATCH/imp/newpid" -rx 5 || finish
IMP=$FD
check_eq "impostor: mountinfo says fuse.multifs, user_id $FAKE_UID" "fuse.multifs $FAKE_UID" "$(owner_of "$IMP/m")"
# Root can read it (allow_other): a handoff that trusted it would act on it.
check "impostor: root reads its stats (allow_other)" grep -q '^links_total: ' "$IMP/m/stats"
: >"$IMP/log"

# refused_by ID NAME USER: USER's handoff on the impostor exits 2 at once,
# one line naming its owner; COMMAND (which would leave a marker and show
# up as link 2) did not run; the fake got no request of it.
public_dir
refused_by() {
	local id=$1 name=$2 user=$3 marker=$PUB/$1.started
	rm -f "$marker" "$IMP/newpid"
	touch "$IMP/newpid"
	chmod 666 "$IMP/newpid"
	: >"$IMP/log"
	handoff_bg "$id" "$user" --timeout 5s --overlap 0 "$IMP/m" 1 -- \
		sh -c "echo \$\$ >'$IMP/newpid'; touch '$marker'; exec sleep 30"
	handoff_done "$id" 10
	check_eq "$name: exit status 2" 2 "$RC"
	one_line_err "$name" "$SCRATCH/$id.err" "$IMP/m: refused: mounted by user $FAKE_USER \(uid $FAKE_UID\), neither root nor you"
	if [ "$TOOK" -lt 3000 ]; then pass "$name: refused at once ($TOOK ms)"; else fail "$name: refused at once" "$TOOK ms"; fi
	check "$name: COMMAND never ran" test ! -e "$marker"
	check_eq "$name: nothing on stdout" "" "$(cat "$SCRATCH/$id.out" 2>/dev/null)"
	check_eq "$name: the impostor got no write (no close)" 0 "$(writes "$IMP/log")"
	check_eq "$name: the impostor got no open at all" 0 "$(grep -c '^open ' "$IMP/log")"
	[ -s "$IMP/newpid" ] && track "$(cat "$IMP/newpid")"
}
refused_by imp_root "root, impostor of $FAKE_USER" root
refused_by imp_other "$OTHER_USER, impostor of $FAKE_USER" $OTHER_USER

# An impostor that answers nothing at all: handoff asks it nothing, so it
# refuses just as fast.
start_fake mute $FAKE_USER -links 1 -hang-all || finish
MUTE=$FD
M=$SCRATCH/mute.started
handoff_bg mute root --timeout 5s "$MUTE/m" 1 -- sh -c "touch '$M'"
handoff_done mute 8
check_eq "root, impostor that answers nothing: exit status 2" 2 "$RC"
one_line_err "root, impostor that answers nothing" "$SCRATCH/mute.err" "refused: mounted by user $FAKE_USER \(uid $FAKE_UID\)"
if [ "$TOOK" -lt 3000 ]; then pass "root, impostor that answers nothing: refused at once ($TOOK ms)"; else fail "root, impostor that answers nothing: refused at once" "$TOOK ms"; fi
check "root, impostor that answers nothing: COMMAND never ran" test ! -e "$M"
check_eq "root, impostor that answers nothing: no request reached it" "" "$(cat "$MUTE/log")"

# accepted ID NAME USER FAKE: USER's hand-off on FAKE (a fake whose link 2
# is ready once COMMAND writes its pid) goes through: exit 0, the line, and
# the fake got the close of OLD (link 1), nothing else written.
accepted() {
	local id=$1 name=$2 user=$3 fd=$4 line
	rm -f "$fd/newpid"
	touch "$fd/newpid"
	chmod 666 "$fd/newpid"
	: >"$fd/log"
	handoff_bg "$id" "$user" --timeout 10s --overlap 0 "$fd/m" 1 -- \
		sh -c "echo \$\$ >'$fd/newpid'; exec sleep 30"
	handoff_done "$id" 15
	[ -s "$fd/newpid" ] && track "$(cat "$fd/newpid")"
	line=$(cat "$SCRATCH/$id.out" 2>/dev/null)
	check_eq "$name: exit status 0" 0 "$RC"
	if printf '%s\n' "$line" | grep -Eq '^new=2 closed=1 ready_ms=[0-9]+ overlap_ms=[0-9]+ dup_dropped=-$'; then
		pass "$name: the hand-off is made ($line)"
	else
		fail "$name: the result line" "'$line' $(tr '\n' ' ' <"$SCRATCH/$id.err")"
	fi
	check_eq "$name: OLD's close reached the mount, and nothing else was written" 'write links/1/close "1\n"' "$(grep '^write ' "$fd/log")"
	[ -s "$fd/newpid" ] && kill "$(cat "$fd/newpid")" 2>/dev/null
}
accepted own "$FAKE_USER, its own mount" $FAKE_USER "$IMP"
start_fake rootfs root -links 1 -newpid "$SCRATCH/rootfs/newpid" -rx 5 || finish
check_eq "root's fake: mountinfo says fuse.multifs, user_id 0" "fuse.multifs 0" "$(owner_of "$SCRATCH/rootfs/m")"
accepted rootfs "$OTHER_USER, root's mount" $OTHER_USER "$SCRATCH/rootfs"

# ---- B. a mount that stops answering mid-hand-off ------------------------------------
# hang_fake NAME: a fake of root's (trusted) whose link 2 joins once
# COMMAND writes its pid, never carries a frame, and which blocks every
# read for good once link 2's stats were read twice.
hang_fake() {
	start_fake "$1" root -links 1 -newpid "$SCRATCH/$1/newpid" -rx 0 -hang-after 2
}

# command_gone NAME PIDFILE: COMMAND (its pid in PIDFILE) is gone.
command_gone() {
	local pid
	pid=$(cat "$2" 2>/dev/null)
	if [ -z "$pid" ]; then
		fail "$1: COMMAND ran" "no pid in $2"
		return
	fi
	track "$pid"
	check_within "$1: COMMAND (pid $pid) ended" 2 "! alive $pid" echo "still running"
}

hang_fake hang || finish
H=$FD
handoff_bg hang root -v --timeout 2s "$H/m" 1 -- sh -c "echo \$\$ >'$H/newpid'; exec sleep 60"
handoff_done hang 8
note "hung mount, --timeout 2s: handoff exited $RC after $TOOK ms: $(tail -n 1 "$SCRATCH/hang.err")"
check "hung mount: the fake stopped answering" grep -q '^hang ' "$H/log"
check "hung mount: it did after the new link joined (-v)" grep -q '^multifs: handoff: link 2 joined' "$SCRATCH/hang.err"
check_eq "hung mount, --timeout 2s: exit status" 1 "$RC"
if [ "$RC" != none ] && [ "$TOOK" -lt 5000 ]; then
	pass "hung mount: handoff exited within the timeout and 3 s ($TOOK ms)"
else
	fail "hung mount: handoff exits within the timeout and 3 s" "$TOOK ms, exit status $RC"
fi
tail -n 1 "$SCRATCH/hang.err" >"$SCRATCH/hang.last"
one_line_err "hung mount (the last line)" "$SCRATCH/hang.last" "handoff: the tree stopped answering \(no answer to .* within"
command_gone "hung mount" "$H/newpid"
check_eq "hung mount: OLD not closed (no write to links/1/close)" 0 "$(writes "$H/log" links/1/close)"
check_eq "hung mount: nothing written at all (the tree, once it did not answer, is asked nothing more)" 0 "$(writes "$H/log")"
note "tree readers left waiting on the hung mount (until it answers or its server dies): $(pgrep -c -f '^multifs-tree-reader$')"

# SIGTERM while a read hangs.
hang_fake hang2 || finish
H=$FD
handoff_bg sigterm root --timeout 30s "$H/m" 1 -- sh -c "echo \$\$ >'$H/newpid'; exec sleep 60"
if wait_for "grep -q '^hang ' '$H/log'" 10; then
	T0=$(now_ms)
	kill -TERM "$HPID"
	handoff_done sigterm 5
	TOOK=$(($(now_ms) - T0))
	check_eq "SIGTERM during the hang: exit status" 1 "$RC"
	if [ "$RC" != none ] && [ "$TOOK" -lt 3000 ]; then
		pass "SIGTERM during the hang: handoff exited $TOOK ms after it"
	else
		fail "SIGTERM during the hang: handoff exits within 3 s" "$TOOK ms, exit status $RC"
	fi
	one_line_err "SIGTERM during the hang" "$SCRATCH/sigterm.err" "handoff: interrupted by SIGTERM"
	command_gone "SIGTERM during the hang" "$H/newpid"
	check_eq "SIGTERM during the hang: OLD not closed (no write to links/1/close)" 0 "$(writes "$H/log" links/1/close)"
	note "SIGTERM during the hang: written to the mount: $(grep '^write ' "$H/log" | tr '\n' ' ')"
else
	fail "SIGTERM during the hang: the fake stops answering" "$(tr '\n' ' ' <"$SCRATCH/sigterm.err")"
fi

# SIGKILL while a read hangs: nothing can clean up then (COMMAND runs on,
# in its session), but handoff itself ends at once; a process with a
# thread waiting on the mount would stay unreaped until the mount answers.
hang_fake hang3 || finish
H=$FD
handoff_bg sigkill root --timeout 30s "$H/m" 1 -- sh -c "echo \$\$ >'$H/newpid'; exec sleep 60"
if wait_for "grep -q '^hang ' '$H/log'" 10; then
	T0=$(now_ms)
	kill -KILL "$HPID"
	handoff_done sigkill 5
	TOOK=$(($(now_ms) - T0))
	check_eq "SIGKILL during the hang: handoff is gone (killed, reaped)" 137 "$RC"
	if [ "$RC" != none ] && [ "$TOOK" -lt 2000 ]; then
		pass "SIGKILL during the hang: reaped $TOOK ms after it (no thread of handoff's waits on the mount)"
	else
		fail "SIGKILL during the hang: reaped within 2 s" "$TOOK ms, exit status $RC"
	fi
	[ -s "$H/newpid" ] && track "$(cat "$H/newpid")"
	check_eq "SIGKILL during the hang: OLD not closed (no write to links/1/close)" 0 "$(writes "$H/log" links/1/close)"
else
	fail "SIGKILL during the hang: the fake stops answering" "$(tr '\n' ' ' <"$SCRATCH/sigkill.err")"
fi

finish
