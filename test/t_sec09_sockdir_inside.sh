#!/usr/bin/env bash
# t_sec09_sockdir_inside.sh: a --sockdir that is PATH, lies inside PATH, or
# contains PATH is refused up front. Sockets under the
# mountpoint are hidden by the mount (nobody can ever join), and a socket
# directory above PATH would have to hold the mountpoint. Without the
# check, multifs reports ready for the first two and serves nobody.
#
# Each case must exit 1 or 2 with one line on stderr, mount nothing, and
# leave PATH and the socket directory as they were (absent stays absent; an
# existing directory keeps its type, mode, owner and contents). Cases:
# --sockdir PATH (PATH absent, and PATH an existing empty directory),
# PATH/sub (daemonized and with -f), PATH's parent and grandparent, and
# PATH/sub named through a symbolic link to PATH's parent (the same
# directory under another name). A sibling PATH.sock still works.
. "$(dirname "$0")/lib.sh"

# state X: what is at X, to compare before and after.
state() {
	if [ -e "$1" ] || [ -L "$1" ]; then
		echo "$(stat -c '%F %a %U %G' "$1") [$(ls -A "$1" 2>&1 | tr '\n' ' ')]"
	else
		echo absent
	fi
}

# refused LABEL PATH SOCKDIR [FLAGS...]: multifs FLAGS --sockdir SOCKDIR
# PATH must be refused and change nothing.
refused() {
	local label=$1 p=$2 sd=$3 rc lines before_p before_sd
	shift 3
	before_p=$(state "$p")
	before_sd=$(state "$sd")
	timeout 10 "$MULTIFS" "$@" --sockdir "$sd" "$p" </dev/null >"$SCRATCH/out" 2>"$SCRATCH/err"
	rc=$?
	if is_mounted "$p"; then
		# A daemon that took it: stop it at exit.
		track_mount "$p" "$(daemon_pid "$p")"
	fi
	if [ "$rc" -eq 1 ] || [ "$rc" -eq 2 ]; then
		pass "$label: refused (exit $rc)"
	else
		fail "$label: refused with exit 1 or 2" "exit $rc${rc:+, stderr: $(head -c 200 "$SCRATCH/err")}"
	fi
	lines=$(grep -c '' "$SCRATCH/err")
	if [ "$lines" -eq 1 ] && [ -s "$SCRATCH/err" ]; then
		pass "$label: one line on stderr ($(head -c 120 "$SCRATCH/err"))"
	else
		fail "$label: one line on stderr" "$lines lines: $(head -c 200 "$SCRATCH/err")"
	fi
	check_fails "$label: nothing mounted at PATH" is_mounted "$p"
	check_fails "$label: nothing mounted at the socket directory" is_mounted "$sd"
	check_eq "$label: PATH left as it was" "$before_p" "$(state "$p")"
	check_eq "$label: the socket directory left as it was" "$before_sd" "$(state "$sd")"
}

# --sockdir PATH, PATH absent.
mkdir -p "$SCRATCH/eq"
refused "sockdir = PATH" "$SCRATCH/eq/vm" "$SCRATCH/eq/vm"

# --sockdir PATH, PATH an existing empty directory.
mkdir -p "$SCRATCH/eq2/vm"
chmod 755 "$SCRATCH/eq2/vm"
refused "sockdir = PATH, an existing directory" "$SCRATCH/eq2/vm" "$SCRATCH/eq2/vm"

# --sockdir PATH/sub.
mkdir -p "$SCRATCH/sub"
refused "sockdir = PATH/sub" "$SCRATCH/sub/vm1" "$SCRATCH/sub/vm1/sub"
refused "sockdir = PATH/sub, multifs -f" "$SCRATCH/sub/vm3" "$SCRATCH/sub/vm3/sub" -f

# --sockdir a parent of PATH (existing and empty, as PATH's parent must be).
mkdir -p "$SCRATCH/par/a"
chmod 755 "$SCRATCH/par/a"
refused "sockdir = PATH's parent" "$SCRATCH/par/a/vm" "$SCRATCH/par/a"
refused "sockdir = PATH's grandparent" "$SCRATCH/par/a/vm2" "$SCRATCH/par"

# The same directory under another name: a symbolic link to PATH's parent.
mkdir -p "$SCRATCH/real"
ln -s real "$SCRATCH/alias"
refused "sockdir = PATH/sub through a symlinked parent" "$SCRATCH/real/vm" "$SCRATCH/alias/vm/sub"

# Control: a sibling socket directory whose name starts like PATH's is
# not inside it, and works.
P=$SCRATCH/ok/vm
mkdir -p "$SCRATCH/ok"
if "$MULTIFS" --log-file "$SCRATCH/ok.log" --sockdir "$P.sock" "$P" 2>"$SCRATCH/err"; then
	pass "sockdir = PATH.sock (a sibling) is accepted"
else
	fail "sockdir = PATH.sock (a sibling) is accepted" "$(head -c 200 "$SCRATCH/err")"
fi
track_mount "$P" "$(daemon_pid "$P")"
bg vde_plug "$P" null://
check_links "sockdir = PATH.sock: a link joins" "$P" 1 3

finish
