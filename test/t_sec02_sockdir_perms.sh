#!/bin/bash
# t_sec02_sockdir_perms.sh: a user who may join a multilink cannot tamper
# with its socket directory: no file of its own in it, no socket replaced.
#
# With -o mode=0666 (the attacker, mfu_d2, is an "other") and again with
# -o mode=0660,grp=mfu_dg2 (the attacker is in that group):
#  - the socket directory has no w bit for group or others, while PATH (the
#    FUSE tree) still shows the seed's dirmode (02777, 02770);
#  - as the attacker (sockdir_attack.py): creating a file, binding sockets
#    at the next link.N names, renaming ctl away (to bind its own in its
#    place) and deleting seqpacket all fail with EACCES or EPERM;
#  - the attacker can still join as a link (joining needs no w there), and
#    root still joins after those attempts;
#  - after kill -9, with the dead daemon's sockets left in the directory,
#    a restart with the same options serves, and its directory is as tight.
# A data-socket name already taken (a socket file at the name the next
# link would get) must not block a join: the daemon picks another name.
# Last, a socket directory in a parent the attacker may write (no sticky
# bit): renamed away and replaced by a symlink to a victim directory, it
# still gets every socket multifs binds, and the victim nothing, not even
# at the stop.
. "$(dirname "$0")/lib.sh"

A=mfu_d2
G=mfu_dg2
groupadd -f "$G"
id -u "$A" >/dev/null 2>&1 || useradd -M -N -G "$G" -s /usr/sbin/nologin "$A" >/dev/null 2>&1
at_exit "userdel $A; groupdel $G"
if ! id -u "$A" >/dev/null 2>&1; then
	fail "create user $A" "useradd failed"
	finish
fi
AU=$(id -u "$A")
hostile_copy

# links_of_uid P UID: how many of P's links belong to UID.
links_of_uid() {
	local s n=0
	for s in "$1"/links/*/stats; do
		[ -e "$s" ] && [ "$(stat_key "$s" uid)" = "$2" ] && n=$((n + 1))
	done
	echo "$n"
}

# join_as USER P: USER (root: as is) starts vde_plug P null://, which must be
# listed as a link of USER within 3 s. The vde_plug keeps running (tracked);
# its pid is left in $LASTPID.
join_as() {
	local u=$1 p=$2 uid n0
	uid=$(id -u "$u")
	n0=$(links_of_uid "$p" "$uid")
	if [ "$u" = root ]; then
		bg vde_plug "$p" null://
	else
		bg runuser -u "$u" -- vde_plug "$p" null://
	fi
	wait_for "[ \"\$(links_of_uid '$p' $uid)\" -gt $n0 ]" 3
}

# no_w_for_others DIR: DIR's mode has no w bit for group or others.
no_w_for_others() {
	local m
	m=$(stat -c %a "$1") || return 1
	[ $((8#$m & 8#022)) = 0 ]
}

# field NAME FILE: NAME=value in the helper's output.
field() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" "$2" | head -n 1; }

# refused_op LABEL VALUE: VALUE is EACCES or EPERM.
refused_op() {
	case $2 in
	EACCES | EPERM) pass "$1 ($2)" ;;
	*) fail "$1" "got ${2:-nothing}" ;;
	esac
}

# -----------------------------------------------------------------------------
# run_case LABEL NAME PATHMODE OPTS: the whole story for one set of options.
run_case() {
	local label=$1 name=$2 pmode=$3 opts=$4 P SD D OUT RC VPS=()
	P=$SCRATCH/$name
	SD=$(sockdir_of "$P")
	start_multifs "$P" -o "$opts" || return
	D=$LASTPID
	note "$label: socket directory $(stat -c '%a %U:%G' "$SD"), PATH $(stat -c '%a %U:%G' "$P")"
	check "$label: the socket directory has no w for group or others ($(stat -c %a "$SD"))" no_w_for_others "$SD"
	check_eq "$label: it belongs to the daemon's user" root "$(stat -c %U "$SD")"
	check_eq "$label: PATH (the tree) still shows the seed's dirmode" "$pmode" "$(stat -c %a "$P")"

	if join_as "$A" "$P"; then pass "$label: $A joins as a link before the attempts"; else fail "$label: $A joins as a link before the attempts" "$(links_of "$P")"; fi
	VPS+=("$LASTPID")

	OUT=$SCRATCH/$name.attack
	timeout 10 runuser -u "$A" -- "$PY" "$HD/sockdir_attack.py" "$SD" 1 40 </dev/null >"$OUT" 2>&1
	note "$label: $A's attempts: $(cat "$OUT")"
	refused_op "$label: $A cannot create a file in the socket directory" "$(field create "$OUT")"
	refused_op "$label: $A cannot bind sockets at the next link.N names" "$(field squat "$OUT")"
	check_eq "$label: no link.N name was squatted" 0 "$(field squatted "$OUT")"
	refused_op "$label: $A cannot rename ctl away" "$(field rename "$OUT")"
	refused_op "$label: $A cannot delete seqpacket" "$(field unlink "$OUT")"
	check "$label: ctl is still the daemon's socket" test -S "$SD/ctl" -a ! -e "$SD/ctl.stolen"
	check "$label: seqpacket is still there" test -S "$SD/seqpacket"

	if join_as root "$P"; then pass "$label: root joins after the attempts"; else fail "$label: root joins after the attempts" "links: '$(links_of "$P")'"; fi
	VPS+=("$LASTPID")
	if join_as "$A" "$P"; then pass "$label: $A joins again after the attempts"; else fail "$label: $A joins again after the attempts" "links: '$(links_of "$P")'"; fi
	VPS+=("$LASTPID")

	# kill -9 with peers joined: their data sockets stay in the directory.
	kill -KILL "$D"
	check_exits "$label: kill -9: the daemon is gone" "$D" 2
	for p in "${VPS[@]}"; do wait_exit "$p" 2 || kill_tree "$p"; done
	note "$label: after kill -9 the socket directory holds: $(ls "$SD" 2>&1 | tr '\n' ' ')"
	"$MULTIFS" --log-file "$SCRATCH/$name.2.log" -o "$opts" "$P" </dev/null >/dev/null 2>"$SCRATCH/$name.2.err"
	RC=$?
	check_eq "$label: restart after kill -9 over the leftover sockets: exit 0 ($(head -c 200 "$SCRATCH/$name.2.err"))" 0 "$RC"
	if [ "$RC" = 0 ]; then
		D=$(daemon_pid "$P")
		track_mount "$P" "$D"
		check "$label: after the restart, still no w for group or others ($(stat -c %a "$SD"))" no_w_for_others "$SD"
		if join_as "$A" "$P"; then pass "$label: after the restart $A joins"; else fail "$label: after the restart $A joins" "links: '$(links_of "$P")'"; fi
		if join_as root "$P"; then pass "$label: after the restart root joins"; else fail "$label: after the restart root joins" "links: '$(links_of "$P")'"; fi
		timeout 5 fusermount -u "$P"
		check_exits "$label: stopped" "$D" 3
	fi
}

run_case "mode=0666" o666 2777 mode=0666
run_case "mode=0660,grp=$G" o660 2770 "mode=0660,grp=$G"

# -----------------------------------------------------------------------------
# A name already taken in the socket directory (here by root, the only one
# who still can) must not block a join.
P=$SCRATCH/taken
SD=$(sockdir_of "$P")
start_multifs "$P" || finish
"$PY" - "$SD" <<'EOF'
import os, socket, sys
for n in range(1, 41):
    p = os.path.join(sys.argv[1], "link.%d" % n)
    if not os.path.lexists(p):
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).bind(p)
EOF
check_eq "link.1 .. link.40 are taken" 40 "$(ls "$SD" | grep -c '^link\.[0-9]*$')"
if join_as root "$P"; then pass "a join succeeds while the next link.N names are taken"; else fail "a join succeeds while the next link.N names are taken" "links: '$(links_of "$P")'"; fi

# -----------------------------------------------------------------------------
OPEN=$SCRATCH/open # writable by everybody, no sticky bit
mkdir -m 0777 "$OPEN"
VICTIM=$SCRATCH/victim
mkdir -m 0755 "$VICTIM"
echo precious >"$VICTIM/file"
P=$SCRATCH/swapped
SD=$OPEN/sd
start_multifs "$P" --sockdir "$SD" -o mode=0666 || finish
D=$LASTPID
check "the attacker renames the socket directory away and plants a symlink to a victim" \
	runuser -u "$A" -- sh -c "mv '$SD' '$OPEN/moved' && ln -s '$VICTIM' '$SD'"
# Root joins through the directory as it now is (PATH/ctl points at the
# symlink). The data socket is bound beside the ctl it came through; the
# reply names it by SOCKDIR's path, which the attacker redirected, so the
# join may fail: what matters is that nothing lands in the victim.
bg vde_plug "$OPEN/moved" null://
JP=$LASTPID
# The join is settled once vde_plug has given up (the reply named a path
# it could not reach) or its link is in PATH/links: by then the daemon
# has made whatever it makes for a join, which stays while vde_plug lives.
if ! wait_for "! alive $JP || [ -n \"\$(links_of '$P')\" ]" 5; then
	note "the join neither failed nor showed a link within 5 s; checking the victim anyway"
fi
check_eq "the victim directory got nothing from a join" "file" "$(ls -A "$VICTIM" | tr '\n' ' ' | sed 's/ $//')"
kill_tree "$JP"
timeout 5 fusermount -u "$P"
check_exits "stopped" "$D" 3
check_eq "the victim directory still holds only its file after the stop" "file precious" "$(ls -A "$VICTIM") $(cat "$VICTIM/file")"
check "the symlink is left as it was (not removed through)" test -L "$SD"
check_fails "multifs removed its sockets from the moved directory" sh -c "ls -A '$OPEN/moved' | grep -q ."

finish
