#!/bin/bash
# t_sec01_symlink_swap.sh: an unprivileged user cannot make root's multifs
# mount over a directory of their choosing by swapping PATH for a symbolic
# link between multifs's look at PATH and its mount.
#
# In a sticky, world-writable directory (like /tmp) an attacker, mfu_d1,
# pre-creates PATH as an empty directory of its own, waits with inotify for
# the socket directory (.NAME.multifs) that multifs makes before it mounts,
# and at once moves PATH away (renamed, or removed) and puts a symlink to a
# victim directory (root's, holding a file) in its place (swap_path.py).
# Root then runs `multifs PATH`, daemonized. In every round:
#  - the victim is never a mount point, and `ls` on it still shows its file
#    (no dead "Transport endpoint is not connected" mount);
#  - multifs either exits non-zero with one line on stderr and leaves no
#    fuse.multifs mount anywhere under the scratch area (the moved-away
#    directory included) and no daemon, or exits 0 and really serves at
#    PATH: PATH is a fuse.multifs mount and a link joins.
# Then, over stale mounts (a daemon killed with -9): a restart at the same
# PATH detaches the stale mount and serves; a start at a PATH that is a
# symlink to such a dead mount is refused and leaves that mount alone.
#
# The machine here has fs.protected_symlinks=0 (the test notes the value);
# nothing below depends on it: no symlink is followed by the attacker's
# victims here, only by mount(2).
. "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-10}
A=mfu_d1
note "fs.protected_symlinks=$(cat /proc/sys/fs/protected_symlinks 2>/dev/null || echo '?')"

id -u "$A" >/dev/null 2>&1 || useradd -M -N -s /usr/sbin/nologin "$A" >/dev/null 2>&1
at_exit "userdel $A"
if ! id -u "$A" >/dev/null 2>&1; then
	fail "create user $A" "useradd failed"
	finish
fi
hostile_copy
PUB=$SCRATCH/pub # the /tmp of this test
mkdir -m 1777 "$PUB"
chmod 1777 "$PUB"
ATT=$SCRATCH/att # the attacker's own files
mkdir -m 755 "$ATT"
chown "$A" "$ATT"

# multifs_at DIR: the mount on top at DIR is a fuse.multifs one.
multifs_at() {
	awk -v p="$1" '$5 == p { for (i = 6; i < NF; i++) if ($i == "-") t = $(i + 1) } END { exit t != "fuse.multifs" }' /proc/self/mountinfo
}

# mounts_under DIR: the mount point of every fuse.multifs mount whose mount
# point or source (multifs names its mounts after PATH) lies under DIR.
mounts_under() {
	awk -v d="$1/" '{
		for (i = 6; i < NF; i++) if ($i == "-") { t = $(i + 1); src = $(i + 2) }
		if (t == "fuse.multifs" && (index($5, d) == 1 || index(src, d) == 1)) print $5
	}' /proc/self/mountinfo
}

# unmount_under DIR: detach every mount under DIR, stacked ones too.
unmount_under() {
	local i m
	for i in 1 2 3 4 5 6 7 8; do
		[ -z "$(awk -v d="$1/" 'index($5, d) == 1' /proc/self/mountinfo)" ] && return 0
		for m in $(awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo); do
			umount -l "$m" 2>/dev/null
		done
	done
}
at_exit "unmount_under '$SCRATCH'"

# stop_at P: stop the daemon serving P (unmount), wait for it to go.
stop_at() {
	local d
	d=$(daemon_pid "$1")
	multifs_at "$1" && timeout 5 fusermount -u "$1" 2>/dev/null
	[ -n "$d" ] && { wait_exit "$d" 3 || kill -KILL "$d" 2>/dev/null; }
	return 0
}

# =============================================================================
# 1. the race, ROUNDS times
SWAPPED=0 LATE=0 REFUSED=0 SERVED=0 HIT=0
for r in $(seq 1 "$ROUNDS"); do
	how=rename
	[ $((r % 2)) = 0 ] && how=rmdir
	NAME=vm$r
	P=$PUB/$NAME
	V=$SCRATCH/victim$r
	mkdir -m 755 "$V"
	echo precious >"$V/file"
	rm -f "$ATT/ready.$r"
	timeout 20 runuser -u "$A" -- "$PY" "$HD/swap_path.py" "$PUB" "$NAME" "$V" "$how" "$ATT/ready.$r" 10 \
		</dev/null >"$SCRATCH/swap.$r" 2>&1 &
	SW=$!
	track "$SW"
	if ! wait_for "[ -e '$ATT/ready.$r' ]" 5; then
		fail "round $r: the attacker is ready" "$(cat "$SCRATCH/swap.$r")"
		continue
	fi
	timeout 20 "$MULTIFS" --log-file "$SCRATCH/$NAME.log" "$P" </dev/null >/dev/null 2>"$SCRATCH/err.$r"
	RC=$?
	# The attacker has acted by now if it saw the socket directory at all;
	# give it a moment, then stop waiting for an event that will not come.
	wait_exit "$SW" 2 || kill "$SW" 2>/dev/null
	wait "$SW" 2>/dev/null
	RES=$(sed -n 's/^result=\([a-z]*\).*/\1/p' "$SCRATCH/swap.$r")
	case $RES in
	swapped) SWAPPED=$((SWAPPED + 1)) ;;
	late) LATE=$((LATE + 1)) ;;
	esac
	# A daemon that exits 0 and then finds no mount at PATH goes away on its
	# own; wait for that so what it leaves is what is judged.
	if [ "$RC" != 0 ] || ! multifs_at "$P"; then
		wait_for "[ -z \"\$(daemon_pid '$P')\" ]" 2
	fi
	label="round $r ($how, attacker: ${RES:-?}, multifs exit $RC)"

	if mounted_at "$V"; then
		HIT=$((HIT + 1))
		fail "$label: the victim is not a mount point" "$(awk -v p="$V" '$5 == p' /proc/self/mountinfo | head -n 1)"
	else
		pass "$label: the victim is not a mount point"
	fi
	check_eq "$label: ls victim shows its file" file "$(ls "$V" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
	if [ "$RC" = 0 ]; then
		SERVED=$((SERVED + 1))
		if multifs_at "$P" && [ ! -L "$P" ]; then
			pass "$label: exit 0 and PATH is a fuse.multifs mount"
			check "$label: exit 0 and a link joins PATH" joinable "$P"
		else
			fail "$label: exit 0 means serving at PATH" "PATH: $(stat -c %F "$P" 2>&1); multifs mounts: $(mounts_under "$SCRATCH" | tr '\n' ' ')"
		fi
		stop_at "$P"
	else
		REFUSED=$((REFUSED + 1))
		check "$label: one line on stderr ($(head -c 200 "$SCRATCH/err.$r"))" one_line "$SCRATCH/err.$r"
		check_eq "$label: no fuse.multifs mount left anywhere" "" "$(mounts_under "$SCRATCH" | tr '\n' ' ')"
		check_eq "$label: no daemon left" "" "$(daemon_pid "$P")"
	fi
	# What a failing daemon left must not spoil the next round.
	d=$(daemon_pid "$P") && kill -KILL "$d" 2>/dev/null
	unmount_under "$SCRATCH"
done
note "$ROUNDS rounds: the attacker swapped PATH in $SWAPPED (too late, PATH already mounted: $LATE); multifs refused $REFUSED, exited 0 in $SERVED; victim mounted over in $HIT"
[ "$SWAPPED" = 0 ] && note "the attacker never won the race to swap PATH: these rounds prove little"

# =============================================================================
# 2. stale mounts
# 2a. A restart at a PATH holding the dead mount of a multifs killed with -9
# detaches it and serves (what the fix must not break).
P=$SCRATCH/stale
start_multifs "$P" || finish
D=$LASTPID
kill -KILL "$D"
check_exits "kill -9: the daemon is gone" "$D" 2
ERR=$(stat "$P" 2>&1)
if printf '%s' "$ERR" | grep -Eq 'not connected|connection abort'; then pass "kill -9 leaves a dead mount at PATH"; else fail "kill -9 leaves a dead mount at PATH" "$ERR"; fi
timeout 20 "$MULTIFS" --log-file "$SCRATCH/stale2.log" "$P" </dev/null >/dev/null 2>"$SCRATCH/stale2.err"
RC=$?
check_eq "restart over the dead mount at PATH: exit 0 ($(head -c 200 "$SCRATCH/stale2.err"))" 0 "$RC"
track_mount "$P" "$(daemon_pid "$P")"
check_eq "restart: exactly one mount at PATH" 1 "$(awk -v p="$P" '$5 == p { n++ } END { print n + 0 }' /proc/self/mountinfo)"
check "restart: a link joins" joinable "$P"
stop_at "$P"
check_fails "restart: stopped, PATH is no longer mounted" mounted_at "$P"

# 2b. A PATH that is the attacker's symlink to a dead multifs mount: multifs
# must refuse, and must not detach, unmount or touch the dead mount.
DM=$SCRATCH/dead
start_multifs "$DM" || finish
D=$LASTPID
kill -KILL "$D"
check_exits "kill -9 of the daemon at $DM: gone" "$D" 2
DMID=$(awk -v p="$DM" '$5 == p { print $1 }' /proc/self/mountinfo | tail -n 1)
check "the dead mount exists (mount id ${DMID:-none})" test -n "$DMID"
runuser -u "$A" -- ln -s "$DM" "$PUB/dlink"
for args in "" "--sockdir $(sockdir_of "$DM")"; do
	label="PATH a symlink to a dead multifs mount${args:+ ($args)}"
	# shellcheck disable=SC2086 # $args is one option and its value
	timeout 20 "$MULTIFS" --log-file "$SCRATCH/dlink.log" $args "$PUB/dlink" </dev/null >/dev/null 2>"$SCRATCH/dlink.err"
	RC=$?
	if [ "$RC" != 0 ]; then pass "$label: refused (exit $RC)"; else fail "$label: refused" "exit 0"; fi
	check "$label: one line on stderr ($(head -c 200 "$SCRATCH/dlink.err"))" one_line "$SCRATCH/dlink.err"
	check_eq "$label: the dead mount is still there, the same one" "$DMID" \
		"$(awk -v p="$DM" '$5 == p { print $1 }' /proc/self/mountinfo | tail -n 1)"
	ERR=$(stat "$DM" 2>&1)
	if printf '%s' "$ERR" | grep -q 'not connected'; then pass "$label: it is still dead (nobody mounted or served over it)"; else fail "$label: it is still dead" "$ERR"; fi
	check_eq "$label: no other multifs mount" "$DM" "$(mounts_under "$SCRATCH" | tr '\n' ' ' | sed 's/ $//')"
	check "$label: the symlink is still a symlink" test -L "$PUB/dlink"
	check "$label: the dead daemon's socket directory is untouched" test -S "$(sockdir_of "$DM")/ctl"
	d=$(daemon_pid "$PUB/dlink") && kill -KILL "$d" 2>/dev/null
done
umount -l "$DM" 2>/dev/null

finish
