# shellcheck shell=bash
# lib.sh: common helpers for multifs's shell integration tests.
#
# Source it first thing from a test script:
#
#	. "$(dirname "$0")/lib.sh"
#
# It sets ROOT, MULTIFS, VDEPROBE (building the binaries if they are
# missing), a per-test scratch directory $SCRATCH, result counters and a
# cleanup registry run on EXIT/INT/TERM. A script ends with `finish`, which
# prints "N passed, N failed" and exits non-zero if anything failed.

set -u

TEST_NAME=$(basename "${0%.sh}")
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MULTIFS=${MULTIFS:-$ROOT/bin/multifs}
VDEPROBE=${VDEPROBE:-$ROOT/bin/vdeprobe}

PASS=0
FAIL=0
_PIDS=()     # processes to kill at exit (vde_plug, probes, ping, multifs -f)
_DAEMONS=()  # multifs daemons (pids) to stop at exit
_MOUNTS=()   # mountpoints to unmount at exit
_NETNS=()    # network namespaces to delete at exit
_AT_EXIT=()  # shell commands to eval at exit
_CLEANED=0

# ---------------------------------------------------------------------------
# results

pass() {
	PASS=$((PASS + 1))
	echo "ok   $TEST_NAME: $1"
}

# fail NAME REASON
fail() {
	FAIL=$((FAIL + 1))
	echo "FAIL $TEST_NAME: $1: ${2:-}"
}

# check NAME CMD...: pass if CMD succeeds.
check() {
	local name=$1 out rc
	shift
	out=$("$@" 2>&1)
	rc=$?
	if [ "$rc" -eq 0 ]; then
		pass "$name"
	else
		fail "$name" "\`$*\` exited $rc${out:+: $(printf '%s' "$out" | head -c 300)}"
	fi
	return "$rc"
}

# check_fails NAME CMD...: pass if CMD fails.
check_fails() {
	local name=$1 rc
	shift
	"$@" >/dev/null 2>&1
	rc=$?
	if [ "$rc" -ne 0 ]; then
		pass "$name"
		return 0
	fi
	fail "$name" "\`$*\` succeeded, should have failed"
	return 1
}

# check_eq NAME EXPECTED ACTUAL
check_eq() {
	if [ "$2" = "$3" ]; then
		pass "$1"
		return 0
	fi
	fail "$1" "expected '$2', got '$3'"
	return 1
}

# note TEXT: informational output, not a result.
note() { echo "     $TEST_NAME: $*"; }

# ---------------------------------------------------------------------------
# time and polling

# now_ms: milliseconds since the epoch.
now_ms() {
	local t=${EPOCHREALTIME//[.,]/}
	echo $((t / 1000))
}

# wait_for 'SHELL COMMAND' TIMEOUT_SECONDS: poll every 50 ms until the command
# succeeds (0) or the timeout passes (1). The command is eval'ed.
wait_for() {
	local cmd=$1 timeout=${2:-2} deadline
	deadline=$(($(now_ms) + $(awk -v t="$timeout" 'BEGIN { printf "%d", t * 1000 }')))
	while :; do
		eval "$cmd" >/dev/null 2>&1 && return 0
		[ "$(now_ms)" -ge "$deadline" ] && return 1
		sleep 0.05
	done
}

# check_within NAME SECONDS 'CONDITION' [DETAIL CMD...]: pass once the
# eval'ed CONDITION holds (polled as wait_for does); otherwise fail, with
# the output of DETAIL CMD run when the wait gives up (what the state was).
check_within() {
	local name=$1 secs=$2 cond=$3 detail
	shift 3
	if wait_for "$cond" "$secs"; then
		pass "$name"
		return 0
	fi
	[ $# -gt 0 ] && detail=$("$@" 2>&1 | tr '\n' ' ' | head -c 300)
	fail "$name" "not within $secs s${detail:+: ${detail% }}"
	return 1
}

# ---------------------------------------------------------------------------
# processes

# alive PID: the process exists and is not a zombie.
alive() {
	local st
	[ -n "${1:-}" ] || return 1
	st=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# wait_exit PID TIMEOUT: wait until PID has exited (a zombie counts).
wait_exit() { wait_for "! alive $1" "${2:-2}"; }

# check_exits NAME PID SECONDS: pass once PID has exited.
check_exits() { check_within "$1" "$3" "! alive $2" echo "still running"; }

# track PID...: kill these at exit.
track() { _PIDS+=("$@"); }

# bg CMD...: run CMD in the background, output appended to
# $SCRATCH/bg.log, and track it. Its pid is left in $LASTPID. It is
# disowned (bash would report a peer's crash at cleanup as noise); use
# `cmd & wait $!` instead where the exit status matters.
bg() {
	"$@" </dev/null >>"$SCRATCH/bg.log" 2>&1 &
	LASTPID=$!
	disown "$LASTPID" 2>/dev/null
	track "$LASTPID"
}

# descendants PID: all descendants of PID (by parent pid), deepest first.
descendants() {
	local c
	for c in $(pgrep -P "$1" 2>/dev/null); do
		descendants "$c"
		echo "$c"
	done
}

# kill_tree PID: TERM the process and its descendants, KILL them after 1 s.
kill_tree() {
	local pids p
	alive "$1" || return 0
	pids="$(descendants "$1") $1"
	for p in $pids; do kill -TERM "$p" 2>/dev/null; done
	for p in $pids; do
		wait_exit "$p" 1 || kill -KILL "$p" 2>/dev/null
	done
}

# ---------------------------------------------------------------------------
# multifs

# is_mounted PATH
is_mounted() { awk -v p="$1" '$2 == p { f = 1 } END { exit !f }' /proc/mounts; }

# sockdir_of PATH: the default socket directory, /a/.b.multifs for /a/b.
sockdir_of() { echo "$(dirname "$1")/.$(basename "$1").multifs"; }

# daemon_pid PATH: the pid of the multifs process (this binary) serving PATH.
daemon_pid() {
	local exe want d p args
	want=$(readlink -f "$MULTIFS")
	for d in /proc/[0-9]*; do
		p=${d#/proc/}
		exe=$(readlink "$d/exe" 2>/dev/null) || continue
		exe=${exe% (deleted)}
		[ "$exe" = "$want" ] || continue
		alive "$p" || continue
		args=$(tr '\0' '\n' <"$d/cmdline" 2>/dev/null)
		if printf '%s\n' "$args" | grep -Fxq -- "$1" ||
			printf '%s\n' "$args" | grep -Fq -- "multi://$1"; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# track_mount PATH [PID]: unmount PATH and stop its daemon at exit.
track_mount() {
	_MOUNTS+=("$1")
	[ -n "${2:-}" ] && _DAEMONS+=("$2")
	return 0
}

# start_multifs PATH [ARGS...]: start a daemonized multifs on PATH (logging
# to $SCRATCH/NAME.log), track it; its pid is left in $LASTPID.
start_multifs() {
	local path=$1 rc
	shift
	"$MULTIFS" --log-file "$SCRATCH/$(basename "$path").log" "$@" "$path"
	rc=$?
	LASTPID=
	if [ "$rc" -ne 0 ]; then
		fail "start multifs $path" "exit status $rc"
		return 1
	fi
	LASTPID=$(daemon_pid "$path")
	track_mount "$path" "$LASTPID"
	return 0
}

# start_multifs_fg PATH [ARGS...]: start `multifs -f` in the background,
# wait until PATH is mounted; its pid is left in $LASTPID (wait on it for
# the exit status).
start_multifs_fg() {
	local path=$1
	shift
	"$MULTIFS" -f "$@" "$path" </dev/null >>"$SCRATCH/$(basename "$path").log" 2>&1 &
	LASTPID=$!
	track_mount "$path" "$LASTPID"
	if ! wait_for "is_mounted '$path' && [ -S '$path/ctl' ]" 5; then
		fail "start multifs -f $path" "not mounted within 5 s"
		return 1
	fi
	return 0
}

# stat_key FILE KEY: the value of "KEY: value" in FILE. A reader of the
# shell's own, not the Go client's (fsys/treeclient): it reads stats as a
# user's sed does, a check on the format independent of the parser under
# test, and costs one sed, not a program's start, in every poll of wait_for.
stat_key() { sed -n "s/^$2: //p" "$1" 2>/dev/null | head -n 1; }

# check_back_to NAME STATS KEY BASELINE SLACK: pass once the numeric KEY of
# STATS is at most BASELINE + SLACK (waiting up to 5 s): what churn must not
# leak (open_fds, goroutines) comes back down.
check_back_to() {
	local name=$1 stats=$2 key=$3 base=$4 slack=$5
	if wait_for "[ \"\$(stat_key '$stats' $key)\" -le $((base + slack)) ]" 5; then
		pass "$name ($key $(stat_key "$stats" "$key"), baseline $base)"
	else
		fail "$name" "$key $(stat_key "$stats" "$key") > baseline $base + $slack"
	fi
}

# steady STATS KEY...: the KEYs of STATS read the same twice, 200 ms
# apart. A condition (for wait_for, check_within) for taking a baseline of
# counts that fall back after churn (open_fds, goroutines): they have
# stopped moving.
steady() {
	local stats=$1 before k
	shift
	before=$(for k in "$@"; do stat_key "$stats" "$k"; done)
	sleep 0.2
	[ "$before" = "$(for k in "$@"; do stat_key "$stats" "$k"; done)" ]
}

# links_of PATH: the open link ids, space-separated.
links_of() { ls "$1/links" 2>/dev/null | sort -n | tr '\n' ' ' | sed 's/ $//'; }

# check_log_clean NAME LOG: pass if the daemon's LOG has no error-level
# line and no panic.
check_log_clean() { check_fails "$1" grep -Eq 'level=(error|fatal|panic)|panic:' "$2"; }

# log_events LOG MSG: how many MSG events the daemon's (text) LOG accounts
# for. Lines are rate limited (a burst, then a few a second): each one let
# through is an event unless it is a summary line, and each repeated=N
# counts N held back.
log_events() {
	awk -v m="msg=\"$2\"" 'index($0, m) {
		if ($0 !~ / summary=true/) n++
		if (match($0, / repeated=[0-9]+/)) n += substr($0, RSTART + 10, RLENGTH - 10)
	} END { print n + 0 }' "$1"
}

# show_key FILE KEY: "KEY: value" as FILE has it now, for failure details.
show_key() { echo "$2: $(stat_key "$1" "$2")"; }

# check_stat NAME FILE KEY WANT SECONDS: pass once KEY in FILE reads WANT.
check_stat() {
	check_within "$1" "$5" "[ \"\$(stat_key '$2' $3)\" = '$4' ]" show_key "$2" "$3"
}

# show_links PATH: "links: ..." for failure details.
show_links() { echo "links: '$(links_of "$1")'"; }

# check_links NAME PATH WANT SECONDS: pass once PATH's link ids read WANT
# (space-separated, ascending; '' for none).
check_links() {
	check_within "$1" "$4" "[ \"\$(links_of '$2')\" = '$3' ]" show_links "$2"
}

# close_link FILE NAME: `echo 1 > FILE` (a links/N/close) must succeed;
# CLOSED_AT gets the time it was written.
close_link() {
	CLOSED_AT=$(now_ms)
	if (echo 1 >"$1") 2>"$SCRATCH/err"; then
		pass "$2"
	else
		fail "$2" "$(cat "$SCRATCH/err")"
	fi
}

# exits_after_close PID WHO: PID (WHO, a link's vde_plug) must exit within
# 1 s of the last close_link.
exits_after_close() {
	if wait_exit "$1" 1; then
		pass "$2 exited $(($(now_ms) - CLOSED_AT)) ms after the close"
	else
		fail "$2 exits within 1 s of the close" "still running"
	fi
}

# mounted_at DIR: some mount sits exactly at DIR (this namespace's table).
mounted_at() { awk -v p="$1" '$5 == p { f = 1 } END { exit !f }' /proc/self/mountinfo; }

# joinable P: a link (vdeprobe) joins P and `ls P/links` lists it, within
# 3 s; the link is gone again afterwards.
joinable() {
	local r=$SCRATCH/join.$RANDOM pid ok=1
	"$VDEPROBE" hold -dir "$1" -ready "$r" -max 5s </dev/null >/dev/null 2>&1 &
	pid=$!
	if wait_for "[ -e '$r' ] && [ -n \"\$(ls '$1/links' 2>/dev/null)\" ]" 3; then ok=0; fi
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	rm -f "$r"
	return $ok
}

# one_line FILE: FILE holds exactly one non-empty line (an error message).
one_line() { [ "$(grep -c . "$1")" = 1 ] && [ "$(wc -l <"$1")" = 1 ]; }

# ---------------------------------------------------------------------------
# attackers: throw-away users and what they may reach

# throwaway_user NAME: a fresh user with no home and no shell (one left by
# an earlier run is made anew), removed at exit; the test ends if it cannot
# be made.
throwaway_user() {
	userdel "$1" >/dev/null 2>&1
	if ! useradd -M -N -s /usr/sbin/nologin "$1" >/dev/null 2>&1; then
		fail "create user $1" "useradd failed"
		finish
	fi
	at_exit "userdel $1"
}

# public_dir: $PUB, a directory of the test's own that is like /tmp:
# sticky and world-writable.
public_dir() {
	PUB=$SCRATCH/pub
	mkdir -p "$PUB"
	chmod 1777 "$PUB"
}

# hostile_copy: a copy of test/hostile the throw-away users can read (they
# cannot look into /root, say) at $HD; $SCRATCH becomes traversable.
hostile_copy() {
	chmod 755 "$SCRATCH"
	HD=$SCRATCH/hostile
	cp -r "$ROOT/test/hostile" "$HD"
	chmod -R a+rX "$HD"
}

# ---------------------------------------------------------------------------
# network namespaces

# track_netns NAME: delete it (and kill what runs inside) at exit.
track_netns() { _NETNS+=("$1"); }

# netns_host NS TAP ENTRY ADDR: a network namespace NS of the test's own
# behind the VDE entry ENTRY (PATH/host for a multilink's host, a link's
# PATH, a vde_switch's directory): a vde_plug inside NS makes the tap TAP
# there (taps live in a namespace) and joins ENTRY; ADDR/24 on the tap.
# The vde_plug's pid is left in $NSPID.
netns_host() {
	local ns=$1 tap=$2 entry=$3 addr=$4
	track_netns "$ns"
	ip netns add "$ns" || { fail "ip netns add $ns" "failed"; return 1; }
	bg ip netns exec "$ns" vde_plug "$entry" "tap://$tap"
	NSPID=$LASTPID
	if ! wait_for "ip netns exec $ns ip link show $tap" 3; then
		fail "tap $tap in $ns" "$(tail -n 3 "$SCRATCH/bg.log" | tr '\n' ' ')"
		return 1
	fi
	ip -n "$ns" link set lo up &&
		ip -n "$ns" addr add "$addr/24" dev "$tap" &&
		ip -n "$ns" link set "$tap" up ||
		{ fail "configure $tap in $ns" "ip failed"; return 1; }
	pass "namespace $ns ($addr) behind $entry"
}

# ---------------------------------------------------------------------------
# anything else

# at_exit 'SHELL COMMAND': eval it at exit, after the processes, daemons and
# mounts are gone and before the namespaces and scratch go; the last
# registered runs first.
at_exit() { _AT_EXIT+=("$1"); }

# ---------------------------------------------------------------------------
# cleanup

cleanup() {
	local p m n d i
	[ "$_CLEANED" = 1 ] && return 0
	_CLEANED=1
	# 1. Peers and helpers first: a peer started with `ip netns exec` lives
	# in its own mount namespace, which holds a copy of the FUSE mount.
	for p in "${_PIDS[@]}"; do kill_tree "$p"; done
	for n in "${_NETNS[@]}"; do
		for p in $(ip netns pids "$n" 2>/dev/null); do kill_tree "$p"; done
	done
	# 2. The daemons: unmount, which stops them; then insist.
	for m in "${_MOUNTS[@]}"; do
		is_mounted "$m" && timeout 5 fusermount -u "$m" 2>/dev/null
	done
	for d in "${_DAEMONS[@]}"; do
		wait_exit "$d" 3 || kill_tree "$d"
	done
	for m in "${_MOUNTS[@]}"; do
		is_mounted "$m" && timeout 5 fusermount -uz "$m" 2>/dev/null
		is_mounted "$m" && timeout 5 umount -l "$m" 2>/dev/null
	done
	# 3. What the test registered, last first.
	for ((i = ${#_AT_EXIT[@]} - 1; i >= 0; i--)); do
		eval "${_AT_EXIT[$i]}" >/dev/null 2>&1
	done
	# 4. Namespaces.
	for n in "${_NETNS[@]}"; do ip netns del "$n" 2>/dev/null; done
	# 5. Scratch, never through a live mount.
	if [ -n "${SCRATCH:-}" ] && [ -d "$SCRATCH" ]; then
		for m in $(awk -v s="$SCRATCH/" 'index($2, s) == 1 { print $2 }' /proc/mounts); do
			umount -l "$m" 2>/dev/null
		done
		rm -rf "$SCRATCH"
	fi
	return 0
}

_on_exit() {
	local rc=$?
	# Finish the cleanup even if a time limit strikes now (timeout -k
	# still has the last word).
	trap - EXIT
	trap '' INT TERM
	cleanup
	if [ "$rc" -ne 0 ] && [ "$FAIL" -eq 0 ]; then
		fail "script" "exited early with status $rc"
	fi
	echo "$PASS passed, $FAIL failed"
	[ "$FAIL" -eq 0 ] && exit 0
	exit 1
}

_on_signal() {
	fail "script" "interrupted by SIG$1"
	exit 1
}

# finish: end the script; the EXIT trap cleans up and prints the summary.
finish() { exit 0; }

trap _on_exit EXIT
trap '_on_signal INT' INT
trap '_on_signal TERM' TERM

# ---------------------------------------------------------------------------
# setup

if [ "$(id -u)" -ne 0 ]; then
	echo "$TEST_NAME: needs root (FUSE, network namespaces, taps)" >&2
	FAIL=1
	exit 1
fi
for _tool in vde_plug fusermount ip ping timeout pgrep python3; do
	if ! command -v "$_tool" >/dev/null 2>&1; then
		echo "$TEST_NAME: $_tool is missing (apt-get install vdeplug fuse3 iproute2 iputils-ping psmisc)" >&2
		FAIL=1
		exit 1
	fi
done
if [ ! -x "$MULTIFS" ] || [ ! -x "$VDEPROBE" ]; then
	mkdir -p "$(dirname "$MULTIFS")" "$(dirname "$VDEPROBE")"
	if [ ! -x "$MULTIFS" ] && ! (cd "$ROOT" && go build -o "$MULTIFS" ./cmd/multifs); then
		echo "$TEST_NAME: cannot build $MULTIFS" >&2
		FAIL=1
		exit 1
	fi
	if [ ! -x "$VDEPROBE" ] && ! (cd "$ROOT" && go build -o "$VDEPROBE" ./test/vdeprobe); then
		echo "$TEST_NAME: cannot build $VDEPROBE" >&2
		FAIL=1
		exit 1
	fi
fi

# PY: the python3 the helpers in test/hostile run with.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)

SCRATCH=/tmp/mft.$$.${TEST_NAME#t_}
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
: >"$SCRATCH/bg.log"
