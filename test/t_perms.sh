#!/usr/bin/env bash
# t_perms.sh: mode, dirmode and grp, proven as other users.
#
# Users and a group are created for the test and removed afterwards:
#   mfu_member (in group mfg), mfu_other (not), mfu_owner (runs multifs itself).
# Every client runs as its user through runuser.
. "$(dirname "$0")/lib.sh"

G=mfg
MEMBER=mfu_member
OTHER=mfu_other
OWNER=mfu_owner

as() { local u=$1; shift; runuser -u "$u" -- "$@"; }

setup_users() {
	groupadd -f "$G"
	for u in $MEMBER $OTHER $OWNER; do
		id "$u" >/dev/null 2>&1 || useradd -M -N -g users -s /bin/sh "$u"
	done
	usermod -a -G "$G" "$MEMBER"
	at_exit "userdel $MEMBER; userdel $OTHER; userdel $OWNER; groupdel $G"
}

# join_as USER DIR: start vde_plug DIR null:// as USER; its pid in $LASTPID.
join_as() { bg runuser -u "$1" -- vde_plug "$2" null://; }

# joined PATH PID: a link of that pid is listed (root looks).
joined() {
	local l
	for l in "$1"/links/*/stats; do
		[ "$(stat_key "$l" pid)" = "$2" ] && return 0
	done
	return 1
}

# link_of PATH PID: the id of the link whose peer is PID (runuser's child).
link_of() {
	local l
	for l in "$1"/links/*; do
		[ "$(stat_key "$l/stats" pid)" = "$2" ] && basename "$l" && return 0
	done
	return 1
}

# plug_pid RUNUSER_PID: vde_plug's pid under runuser.
plug_pid() { pgrep -P "$1" vde_plug || echo "$1"; }

# refused NAME USER DIR: USER's vde_plug cannot join DIR: it exits non-zero
# within 3 s and no link of it appears.
refused() {
	local before after
	before=$(stat_key "$P/stats" links_total)
	timeout 3 runuser -u "$2" -- vde_plug "$3" null:// >/dev/null 2>&1
	local rc=$?
	after=$(stat_key "$P/stats" links_total)
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$before" = "$after" ] && [ "$(stat_key "$P/host/stats" attached)" = no ]; then
		pass "$1"
	else
		fail "$1" "vde_plug exit $rc, links_total $before -> $after"
	fi
}

setup_users

# ---------------------------------------------------------------- default mode
P=$SCRATCH/def
start_multifs "$P" || finish
join_as root "$P"; ROOTPLUG=$LASTPID
# The checks below that other users cannot reach link 1 need it there.
check_within "default: root's vde_plug joins as link 1" 3 "[ -d '$P/links/1' ]" show_links "$P"
check_fails "default: other cannot list the mount" as $OTHER ls "$P"
check_fails "default: other cannot read stats" as $OTHER cat "$P/stats"
check_fails "default: other cannot read a link's stats" as $OTHER cat "$P/links/1/stats"
check_fails "default: other cannot close a link" as $OTHER sh -c "echo 1 > '$P/links/1/close'"
check_eq "default: link 1 still open" "1" "$(links_of "$P")"
refused "default: other cannot join through ctl" $OTHER "$P"
refused "default: other cannot join through host/ctl" $OTHER "$P/host"
check_fails "default: other cannot connect to the seqpacket entry" \
	as $OTHER python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(sys.argv[1])" "$(sockdir_of "$P")/seqpacket"
check_eq "default: mount root is 2700" "2700 root" "$(stat -c '%a %G' "$P")"
check_eq "default: socket dir is 2700" "2700 root" "$(stat -c '%a %G' "$(sockdir_of "$P")")"
check_eq "default: ctl socket is 600" "600 socket" "$(stat -c '%a %F' "$(sockdir_of "$P")/ctl")"
check "default: owner (root) closes" sh -c "echo 1 > '$P/links/1/close'"

# ------------------------------------------------------- mode=0660 and a group
P=$SCRATCH/grp
start_multifs "$P" -o mode=0660,grp=$G || finish
SD=$(sockdir_of "$P")
check_eq "0660: mount root 2770, group $G" "2770 $G" "$(stat -c '%a %G' "$P")"
check_eq "0660: socket dir 2750 (group may enter, not write), group $G" "2750 $G" "$(stat -c '%a %G' "$SD")"
for s in ctl host.ctl seqpacket host.seqpacket host.vhost-user; do
	check_eq "0660: socket $s 660, group $G" "660 $G socket" "$(stat -c '%a %G %F' "$SD/$s")"
done
check_eq "0660: stats 440" "440 $G" "$(stat -c '%a %G' "$P/stats")"
join_as $MEMBER "$P"; MPLUG=$LASTPID
check_stat "0660: member joins through ctl" "$P/stats" links 1 3
N=$(links_of "$P")
check_eq "0660: member's link stats show its uid" "$(id -u $MEMBER)" "$(as $MEMBER cat "$P/links/$N/stats" | sed -n 's/^uid: //p')"
DS=$(ls "$SD" | grep '^link\.' | head -1)
check_eq "0660: the member's data socket is 660, group $G" "660 $G" "$(stat -c '%a %G' "$SD/$DS")"
check_eq "0660: close file 220" "220 $G" "$(stat -c '%a %G' "$P/links/$N/close")"
check "0660: member reads stats" as $MEMBER cat "$P/stats"
check_fails "0660: other cannot list" as $OTHER ls "$P/links"
check_fails "0660: other cannot read stats" as $OTHER cat "$P/links/$N/stats"
check_fails "0660: other cannot close" as $OTHER sh -c "echo 1 > '$P/links/$N/close'"
refused "0660: other cannot join" $OTHER "$P"
refused "0660: other cannot attach a host" $OTHER "$P/host"
check_eq "0660: the member's link survived the other's attempts" "$N" "$(links_of "$P")"
check "0660: member closes its link" as $MEMBER sh -c "echo 1 > '$P/links/$N/close'"
if wait_exit "$MPLUG" 2 && [ -z "$(links_of "$P")" ]; then
	pass "0660: member's vde_plug exited after close"
else
	fail "0660: member's vde_plug exited after close" "links: $(links_of "$P")"
fi
join_as $MEMBER "$P/host"
check_stat "0660: member attaches the host" "$P/host/stats" attached yes 3

# ------------------------------------------------------------- mode=0666: all
P=$SCRATCH/all
start_multifs "multi://$P[mode=0666]" || finish
track_mount "$P" "$(daemon_pid "$P")"
check_eq "0666: mount root 2777" "2777" "$(stat -c '%a' "$P")"
join_as $OTHER "$P"; OPLUG=$LASTPID
check_links "0666: any user joins" "$P" 1 3
check "0666: another user reads its stats" as $MEMBER cat "$P/links/1/stats"
check "0666: another user closes it" as $MEMBER sh -c "echo 1 > '$P/links/1/close'"
check "0666: its vde_plug exited" wait_exit "$OPLUG" 2

# ------------------------------------------ multifs run by an ordinary user
# FUSE for ordinary users needs /dev/fuse usable by all (0666, as Debian's
# udev rules make it); restore what this machine had.
FUSEMODE=$(stat -c '%a' /dev/fuse)
chmod 0666 /dev/fuse
at_exit "chmod $FUSEMODE /dev/fuse"
OWNDIR=$SCRATCH/owner
mkdir -p "$OWNDIR"
chown $OWNER "$OWNDIR"
P=$OWNDIR/vm
if as $OWNER "$MULTIFS" --log-file "$OWNDIR/log" "$P"; then
	pass "user: multifs starts as $OWNER"
else
	fail "user: multifs starts as $OWNER" "exit $?"
fi
track_mount "$P" "$(daemon_pid "$P")"
check_eq "user: the tree belongs to $OWNER" "$OWNER" "$(stat -c '%U' "$P" 2>/dev/null || as $OWNER stat -c '%U' "$P")"
bg runuser -u $OWNER -- vde_plug "$P" null://
check_within "user: serves its own user's vde_plug" 3 "as $OWNER test -d '$P/links/1'" as $OWNER ls "$P/links"
check_fails "user: other users cannot list it" as $OTHER ls "$P"
check "user: the owner closes its link" as $OWNER sh -c "echo 1 > '$P/links/1/close'"
check "user: the owner unmounts" as $OWNER fusermount3 -u "$P"
wait_for "! is_mounted '$P'" 3
check_fails "user: unmounted" is_mounted "$P"

# A 000 data socket of the daemon's own user (qemu passes 0700; -m 000 is
# the extreme): joining still works, as with vde_switch.
P=$OWNDIR/vm0
as $OWNER "$MULTIFS" --log-file "$OWNDIR/log0" "$P" && track_mount "$P" "$(daemon_pid "$P")"
bg runuser -u $OWNER -- vde_plug -m 000 "$P" null://
check_within "user: a 000 client socket of the same user joins" 3 "as $OWNER test -d '$P/links/1'" as $OWNER ls "$P/links"

# allow_other needs user_allow_other for ordinary users: a clear error.
cp -p /etc/fuse.conf "$SCRATCH/fuse.conf.saved" 2>/dev/null && at_exit "cp -p '$SCRATCH/fuse.conf.saved' /etc/fuse.conf"
sed -i 's/^[[:space:]]*user_allow_other/#user_allow_other/' /etc/fuse.conf 2>/dev/null
P=$OWNDIR/open
ERR=$(as $OWNER "$MULTIFS" -o mode=0666 "$P" 2>&1)
RC=$?
if [ "$RC" -ne 0 ] && printf '%s' "$ERR" | grep -q user_allow_other && ! is_mounted "$P" && [ ! -e "$P" ] && [ ! -e "$(sockdir_of "$P")" ]; then
	pass "user: allow_other without user_allow_other is a clear error"
else
	fail "user: allow_other without user_allow_other is a clear error" "exit $RC: $ERR"
fi

finish
