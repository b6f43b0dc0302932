#!/usr/bin/env bash
# t_sec12_root_joins.sh: root and a multilink served by an ordinary user:
# root can join it, and no user the modes leave out can. Without
# allow_other, a FUSE mount is closed even to root; docs/security.md says
# root can join.
#
# A. /etc/fuse.conf has user_allow_other: the user's multifs mounts with
#    allow_other even with the default modes, so root lists PATH, reads
#    stats and joins with `vde_plug PATH`; default_permissions keeps the
#    modes enforced, so another user still cannot list, read or join.
# B. It has not: multifs still starts with the default modes (0600 needs no
#    allow_other); root cannot reach PATH (EACCES) but joins through the
#    socket directory (`vde_plug SOCKDIR`), another user cannot; with
#    mode=0660 the start is refused with one line and exit 1, leaving
#    nothing behind.
#
# Users mfu_c12o (runs multifs in a directory it owns) and mfu_c12x (the
# other user) are created and removed. /etc/fuse.conf is restored byte for
# byte, with its mode and owner, at exit (also on failure), and so is the
# mode of /dev/fuse, which is opened 0666 only while a user's multifs
# starts (fusermount3 opens it as the calling user).
. "$(dirname "$0")/lib.sh"

OWNER=mfu_c12o
OTHER=mfu_c12x

for u in $OWNER $OTHER; do
	id "$u" >/dev/null 2>&1 || useradd -M -N -s /usr/sbin/nologin "$u"
done
at_exit "userdel $OWNER; userdel $OTHER"
chmod 755 "$SCRATCH"
OWNDIR=$SCRATCH/own
mkdir -p "$OWNDIR"
chown "$OWNER" "$OWNDIR"
chmod 755 "$OWNDIR"

as() {
	local u=$1
	shift
	runuser -u "$u" -- "$@"
}

# ---- /etc/fuse.conf: saved now, restored at exit
CONF=/etc/fuse.conf
SAVED=$SCRATCH/fuse.conf.saved
if [ -e "$CONF" ]; then
	cp -p "$CONF" "$SAVED" || {
		fail "save $CONF" "cannot copy it"
		finish
	}
	# cp -p writes into the existing file: same inode, content, mode, owner.
	at_exit "cp -p '$SAVED' '$CONF'"
else
	at_exit "rm -f '$CONF'"
fi

# conf_write TEXT-FILE: CONF gets that text (its inode and mode kept).
conf_write() {
	if [ -e "$CONF" ]; then
		cat "$1" >"$CONF"
	else
		install -m 644 "$1" "$CONF"
	fi
}

# grant / revoke: the saved file with user_allow_other enabled / disabled.
grant() {
	{
		[ -e "$SAVED" ] && grep -Ev '^[[:space:]]*user_allow_other[[:space:]]*(#.*)?$' "$SAVED"
		echo user_allow_other
	} >"$SCRATCH/conf.new"
	conf_write "$SCRATCH/conf.new"
}
revoke() {
	if [ -e "$SAVED" ]; then
		sed -E 's/^([[:space:]]*user_allow_other)/#\1/' "$SAVED"
	fi >"$SCRATCH/conf.new"
	conf_write "$SCRATCH/conf.new"
}

# ---- /dev/fuse: 0666 only while a user's multifs mounts
FUSEMODE=$(stat -c %a /dev/fuse)
at_exit "chmod $FUSEMODE /dev/fuse"

# start_as USER PATH ARGS...: start a daemonized multifs as USER; exit
# status in $RC, stderr in $SCRATCH/err.
start_as() {
	local u=$1 p=$2
	shift 2
	chmod 0666 /dev/fuse
	as "$u" "$MULTIFS" --log-file "$OWNDIR/$(basename "$p").log" "$@" "$p" </dev/null 2>"$SCRATCH/err"
	RC=$?
	chmod "$FUSEMODE" /dev/fuse
	is_mounted "$p" && track_mount "$p" "$(daemon_pid "$p")"
	return "$RC"
}

# errno_of PATH: the errno name of stat(PATH), or OK.
errno_of() {
	"$PY" -c '
import errno, os, sys
try:
    os.stat(sys.argv[1])
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))' "$1"
}

# total PATH: links_total, read by the owner.
total() { as $OWNER cat "$1/stats" 2>/dev/null | sed -n 's/^links_total: //p'; }

# joins LABEL PATH DIR [USER]: `vde_plug DIR` (as USER, default root) makes
# a link appear (the owner looks).
joins() {
	local label=$1 p=$2 dir=$3 u=${4:-root} n
	n=$(total "$p")
	if [ "$u" = root ]; then
		bg vde_plug "$dir" null://
	else
		bg runuser -u "$u" -- vde_plug "$dir" null://
	fi
	check_within "$label" 3 "[ \"\$(total '$p')\" = $((${n:-0} + 1)) ]" echo "links_total $n -> $(total "$p")"
}

# refused LABEL PATH DIR USER: USER's `vde_plug DIR` exits non-zero within
# 3 s and no link appears.
refused() {
	local label=$1 p=$2 dir=$3 u=$4 before after rc
	before=$(total "$p")
	timeout 3 runuser -u "$u" -- vde_plug "$dir" null:// >/dev/null 2>&1
	rc=$?
	after=$(total "$p")
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ -n "$before" ] && [ "$before" = "$after" ]; then
		pass "$label"
	else
		fail "$label" "vde_plug exit $rc, links_total '$before' -> '$after'"
	fi
}

# ------------------------------------------------ A. user_allow_other granted
grant
P=$OWNDIR/a
SD=$(sockdir_of "$P")
if start_as $OWNER "$P"; then
	pass "A: $OWNER's multifs starts"
else
	fail "A: $OWNER's multifs starts" "exit $RC: $(head -c 200 "$SCRATCH/err")"
fi
check "A: it is mounted" is_mounted "$P"
check_eq "A: the tree is $OWNER's, 2700" "$OWNER 2700" "$(as $OWNER stat -c '%U %a' "$P" 2>/dev/null)"
check "A: root lists PATH" ls "$P"
check "A: root reads PATH/stats" cat "$P/stats"
joins "A: root joins with vde_plug PATH" "$P" "$P"
check_eq "A: root's link shows uid 0" 0 "$(sed -n 's/^uid: //p' "$P/links/1/stats" 2>/dev/null)"
joins "A: root joins through the socket directory too" "$P" "$SD"
check_eq "A: the owner still lists its links" "1 2" "$(as $OWNER ls "$P/links" 2>/dev/null | sort -n | tr '\n' ' ' | sed 's/ $//')"
check_fails "A: another user cannot list PATH" as $OTHER ls "$P"
check_fails "A: another user cannot read PATH/stats" as $OTHER cat "$P/stats"
check_fails "A: another user cannot close a link" as $OTHER sh -c "echo 1 > '$P/links/1/close'"
refused "A: another user cannot join through PATH" "$P" "$P" $OTHER
refused "A: another user cannot join through the socket directory" "$P" "$SD" $OTHER
check "A: root closes a link" sh -c "echo 1 > '$P/links/1/close'"
check "A: the owner unmounts" as $OWNER fusermount3 -u "$P"
check_within "A: gone after the unmount" 3 "! is_mounted '$P' && [ ! -e '$P' ] && [ ! -e '$SD' ]" ls -la "$OWNDIR"

# --------------------------------------------- B. user_allow_other not granted
revoke
P=$OWNDIR/b
SD=$(sockdir_of "$P")
if start_as $OWNER "$P"; then
	pass "B: $OWNER's multifs starts with the default modes"
else
	fail "B: $OWNER's multifs starts with the default modes" "exit $RC: $(head -c 200 "$SCRATCH/err")"
fi
check "B: it is mounted" is_mounted "$P"
check_eq "B: root cannot reach PATH (EACCES)" EACCES "$(errno_of "$P")"
joins "B: root joins through the socket directory" "$P" "$SD"
joins "B: the owner joins through PATH" "$P" "$P" $OWNER
refused "B: another user cannot join through the socket directory" "$P" "$SD" $OTHER
check_fails "B: another user cannot reach PATH" as $OTHER ls "$P"
check "B: the owner unmounts" as $OWNER fusermount3 -u "$P"
check_within "B: gone after the unmount" 3 "! is_mounted '$P' && [ ! -e '$P' ] && [ ! -e '$SD' ]" ls -la "$OWNDIR"

# mode=0660 needs allow_other, which is not granted: a clear refusal.
P=$OWNDIR/c
SD=$(sockdir_of "$P")
start_as $OWNER "$P" -o mode=0660
check_eq "B: mode=0660 without user_allow_other: exit 1" 1 "$RC"
LINES=$(grep -c '' "$SCRATCH/err")
if [ "$LINES" -eq 1 ] && grep -q user_allow_other "$SCRATCH/err"; then
	pass "B: mode=0660: one line on stderr naming user_allow_other"
else
	fail "B: mode=0660: one line on stderr naming user_allow_other" "$LINES lines: $(head -c 200 "$SCRATCH/err")"
fi
check_fails "B: mode=0660: nothing mounted" is_mounted "$P"
check_eq "B: mode=0660: nothing created" "" "$(ls -A "$OWNDIR" | grep -Fx -e c -e .c.multifs)"

finish
