#!/bin/bash
# t_cli_errors.sh: command-line errors leave nothing behind and say why in one
# line; --help, --version; a daemonized multifs is ready when it returns; the
# default PATH.
. "$(dirname "$0")/lib.sh"

# snapshot PATH: what must not change for PATH: mounts, the socket dir, the
# mountpoint itself (listing and mode when it exists).
snapshot() {
	local sd
	sd=$(sockdir_of "$1")
	echo "mounted: $(is_mounted "$1" && echo yes || echo no)"
	echo "sockdir: $([ -e "$sd" ] && ls -A "$sd" | tr '\n' ' ' || echo absent)"
	if [ -e "$1" ]; then
		echo "path: $(stat -c %a "$1") $(ls -A "$1" | tr '\n' ' ')"
	else
		echo "path: absent"
	fi
	echo "mounts under scratch: $(awk -v s="$SCRATCH/" 'index($2, s) == 1 { print $2 }' /proc/mounts | tr '\n' ' ')"
}

# expect_error NAME STATUS PATH ARGS...: multifs ARGS exits with STATUS (1:
# cannot serve, 2: a command-line mistake) and one line on stderr starting
# "multifs:", and PATH, its socket dir and the mounts are unchanged.
expect_error() {
	local name=$1 want=$2 path=$3 before after rc lines
	shift 3
	before=$(snapshot "$path")
	timeout 10 "$MULTIFS" "$@" >"$SCRATCH/out" 2>"$SCRATCH/err"
	rc=$?
	# A multifs that wrongly started would be left serving: stop it.
	if is_mounted "$path" && ! printf '%s' "$before" | grep -q 'mounted: yes'; then
		track_mount "$path" "$(daemon_pid "$path")"
		fusermount -u "$path" 2>/dev/null
	fi
	after=$(snapshot "$path")
	check_eq "$name: exit status $want" "$want" "$rc"
	lines=$(wc -l <"$SCRATCH/err")
	if [ "$lines" -eq 1 ] && head -n 1 "$SCRATCH/err" | grep -q '^multifs: '; then
		pass "$name: one line on stderr: $(head -n 1 "$SCRATCH/err")"
	else
		fail "$name: one line on stderr starting 'multifs:'" "$lines lines: $(tr '\n' '|' <"$SCRATCH/err" | head -c 300)"
	fi
	check_eq "$name: nothing left behind" "$before" "$after"
}

N=$SCRATCH/new # never created: each error case must leave it absent

expect_error "-o mode=999" 2 "$N" -o mode=999 "$N"
expect_error "-o mode=abc" 2 "$N" -o mode=abc "$N"
expect_error "--mode 0999" 2 "$N" --mode 0999 "$N"
expect_error "-o dirmode=9x" 2 "$N" -o dirmode=9x "$N"
expect_error "--log-format xml" 2 "$N" --log-format xml "$N"
expect_error "--log-level loud" 2 "$N" --log-level loud "$N"
expect_error "-o foo=1" 2 "$N" -o foo=1 "$N"
expect_error "multi:// [bogus=1]" 2 "$N" "multi://$N[bogus=1]"
expect_error "multi:// [mode=999]" 2 "$N" "multi://$N[mode=999]"
expect_error "unknown flag --bogus" 2 "$N" --bogus "$N"
expect_error "unknown flag -x" 2 "$N" -x "$N"
# Two operands are SOURCE PATH, as mount.fuse3 passes them; three are not.
expect_error "three operands" 2 "$N" label "$N" "$SCRATCH/other"
expect_error "-o ro (as mount -r would pass)" 2 "$N" label "$N" -o ro
expect_error "-o grp=nosuchgroup" 1 "$N" -o grp=nosuchgroup "$N"
expect_error "--grp nosuchgroup" 1 "$N" --grp nosuchgroup "$N"

# An existing, empty mountpoint is kept as it was.
E=$SCRATCH/empty
mkdir -p "$E"
chmod 0751 "$E"
expect_error "bad mode, pre-existing empty PATH" 2 "$E" -o mode=abc "$E"
expect_error "unknown group, pre-existing empty PATH" 1 "$E" -o grp=nosuchgroup "$E"

# A non-empty directory is refused.
F=$SCRATCH/full
mkdir -p "$F"
echo data >"$F/file"
expect_error "PATH a non-empty directory" 1 "$F" "$F"
check_eq "non-empty PATH: its file is intact" data "$(cat "$F/file" 2>&1)"

# Neither PATH nor the socket dir is followed if it is a symbolic link:
# in /tmp its owner may be anyone, and mounting (or chmod, or cleaning up)
# would act on wherever it points.
echo data >"$SCRATCH/afile"
expect_error "PATH a regular file" 1 "$SCRATCH/afile" "$SCRATCH/afile"
check "PATH a regular file: says so" grep -q 'not a directory' "$SCRATCH/err"
T=$SCRATCH/target
mkdir -p "$T"
chmod 0750 "$T"
ln -s "$T" "$SCRATCH/lnk"
expect_error "PATH a symbolic link" 1 "$SCRATCH/lnk" "$SCRATCH/lnk"
check "PATH a symbolic link: says so" grep -q 'a symbolic link' "$SCRATCH/err"
check_fails "PATH a symbolic link: its target is not mounted" is_mounted "$T"
check_eq "PATH a symbolic link: its target is as it was" "750 " "$(stat -c %a "$T") $(ls -A "$T")"
ln -s "$T" "$(sockdir_of "$N")"
expect_error "socket dir a symbolic link" 1 "$N" "$N"
check "socket dir a symbolic link: says so" grep -q 'is a symbolic link' "$SCRATCH/err"
check_eq "socket dir a symbolic link: its target is as it was" "750 " "$(stat -c %a "$T") $(ls -A "$T")"
rm -f "$(sockdir_of "$N")"

# PATH already served by a live multifs.
S=$SCRATCH/served
if start_multifs "$S"; then
	D=$LASTPID
	bg vde_plug "$S" null://
	check_within "already served: a link joins the first multifs" 2 "[ -d '$S/links/1' ]" show_links "$S"
	expect_error "PATH already served" 1 "$S" "$S"
	expect_error "PATH already served, -f" 1 "$S" -f "$S"
	check "already served: first daemon still runs" alive "$D"
	check_eq "already served: first multifs still serves its link" 1 "$(links_of "$S")"
	check "already served: ctl still accepts" test -S "$S/ctl"
fi

# --- --help and --version ---------------------------------------------------------
"$MULTIFS" --help >"$SCRATCH/out" 2>&1
check_eq "--help exit status" 0 "$?"
check "--help prints usage" grep -qi '^usage: multifs' "$SCRATCH/out"
"$MULTIFS" -h >"$SCRATCH/out" 2>&1
check_eq "-h exit status" 0 "$?"
"$MULTIFS" --version >"$SCRATCH/out" 2>&1
check_eq "--version exit status" 0 "$?"
check "--version prints a version" grep -Eq '^multifs [0-9]' "$SCRATCH/out"

# --- a daemonized multifs is ready when it returns ------------------------------
for i in 1 2 3; do
	R=$SCRATCH/ready$i
	# No sleep between the two: multifs returns only once ctl accepts.
	{ "$MULTIFS" --log-file "$SCRATCH/ready$i.log" "$R" && vde_plug "$R" null://; } </dev/null >>"$SCRATCH/bg.log" 2>&1 &
	track $!
	wait_for "is_mounted '$R'" 5
	track_mount "$R" "$(daemon_pid "$R")"
	if wait_for "[ -d '$R/links/1' ]" 2; then
		pass "ready #$i: vde_plug joined right after multifs returned"
	else
		fail "ready #$i: vde_plug joins right after multifs returned" "links '$(links_of "$R")'; $(tail -n 2 "$SCRATCH/bg.log" | tr '\n' ' ')"
	fi
done

# --- the default PATH ---------------------------------------------------------------
DP=/tmp/vdenode_$(id -un)
if [ -e "$DP" ] || is_mounted "$DP"; then
	note "skipping the default PATH check: $DP already exists (another multifs?)"
else
	"$MULTIFS" --log-file "$SCRATCH/default.log"
	rc=$?
	check_eq "no PATH: exit status" 0 "$rc"
	if [ "$rc" -eq 0 ]; then
		DD=$(daemon_pid "$DP")
		track_mount "$DP" "$DD"
		check "no PATH: $DP is mounted" is_mounted "$DP"
		check "no PATH: $DP/ctl is a socket" test -S "$DP/ctl"
		check "no PATH: socket dir $(sockdir_of "$DP")" test -d "$(sockdir_of "$DP")"
		check "fusermount -u $DP" fusermount -u "$DP"
		if [ -n "$DD" ] && wait_exit "$DD" 5; then
			pass "no PATH: daemon exited after fusermount -u"
		else
			fail "no PATH: daemon exits after fusermount -u" "pid '$DD'"
		fi
		check_fails "no PATH: $DP removed" test -e "$DP"
		check_fails "no PATH: socket dir removed" test -e "$(sockdir_of "$DP")"
	fi
fi

finish
