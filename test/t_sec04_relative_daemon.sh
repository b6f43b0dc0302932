#!/usr/bin/env bash
# t_sec04_relative_daemon.sh: relative paths given to a daemonized multifs
# must keep meaning what they meant to the caller, never files under /.
# The daemon child runs in /, so every relative path on the command line (PATH, a multi:// URL, --sockdir, --log-file) must be made
# absolute against the caller's working directory before the re-exec:
#
#   cd WD && multifs vm1 --log-file x.log --sockdir .s
#   cd WD && multifs 'multi://vm2[mode=0660]'
#
# must mount WD/vm1 and WD/vm2, log to WD/x.log, put the sockets in WD/.s
# and WD/.vm2.multifs, and create nothing at / (/vm1, /x.log, /.s, /vm2,
# /.vm2.multifs); links join, the daemon still runs in /, and an unmount
# removes what multifs created.
#
# What a wrong daemon creates at / is removed at exit, but only those exact
# names, only if they did not exist before the test, and a socket directory
# only if it holds nothing but sockets.
. "$(dirname "$0")/lib.sh"

WD=$SCRATCH/wd
mkdir -p "$WD"
WD=$(cd "$WD" && pwd -P)

# The daemons carry this in their environment (the child inherits it), so
# they can be found whatever their command line turns into.
MARK="MFT_SEC04=$$"

# marked_pids: the live multifs processes started by this test.
marked_pids() {
	local d p exe want
	want=$(readlink -f "$MULTIFS")
	for d in /proc/[0-9]*; do
		p=${d#/proc/}
		exe=$(readlink "$d/exe" 2>/dev/null) || continue
		[ "${exe% (deleted)}" = "$want" ] && alive "$p" || continue
		tr '\0' '\n' 2>/dev/null <"$d/environ" | grep -Fxq -- "$MARK" && echo "$p"
	done
	return 0
}

# Names at / that a daemon running in / would create. Those that exist now
# belong to someone else and are never touched.
ROOT_NAMES="/vm1 /x.log /.s /vm2 /.vm2.multifs"
declare -A PREEXISTING=()
for n in $ROOT_NAMES; do
	if [ -e "$n" ] || [ -L "$n" ]; then
		PREEXISTING[$n]=1
		note "$n exists before the test: it is not checked and not cleaned"
	fi
done

# clean_root: stop our daemons, then remove what they left at /.
clean_root() {
	local p n
	for p in $(marked_pids); do kill -TERM "$p" 2>/dev/null; done
	for p in $(marked_pids); do wait_exit "$p" 3 || kill -KILL "$p" 2>/dev/null; done
	for n in /vm1 /vm2; do
		[ -n "${PREEXISTING[$n]:-}" ] && continue
		is_mounted "$n" && { fusermount -uz "$n" 2>/dev/null || umount -l "$n" 2>/dev/null; }
		[ -d "$n" ] && [ ! -L "$n" ] && rmdir "$n" 2>/dev/null
	done
	n=/x.log
	[ -z "${PREEXISTING[$n]:-}" ] && [ -f "$n" ] && [ ! -L "$n" ] && rm -f "$n"
	for n in /.s /.vm2.multifs; do
		[ -n "${PREEXISTING[$n]:-}" ] && continue
		[ -d "$n" ] && [ ! -L "$n" ] || continue
		# Only a socket directory: sockets and nothing else.
		[ -z "$(find "$n" -mindepth 1 ! -type s -print -quit 2>/dev/null)" ] && rm -rf "$n"
	done
	return 0
}
at_exit clean_root
for n in /vm1 /vm2; do
	[ -z "${PREEXISTING[$n]:-}" ] && track_mount "$n"
done

# not_at_root NAME: /NAME was not created (unless it existed before).
not_at_root() {
	if [ -n "${PREEXISTING[$1]:-}" ]; then
		note "$1 existed before: not checked"
		return 0
	fi
	if [ -e "$1" ] || [ -L "$1" ] || is_mounted "$1"; then
		fail "nothing created at $1" "$(ls -ld "$1" 2>&1)"
	else
		pass "nothing created at $1"
	fi
}

# start_in_wd LABEL ARGS...: start a daemonized multifs from WD; its exit
# status in $RC, its stderr in $SCRATCH/err.
start_in_wd() {
	local label=$1
	shift
	(cd "$WD" && env "$MARK" "$MULTIFS" "$@") 2>"$SCRATCH/err"
	RC=$?
	check_eq "$label: the start exits 0" 0 "$RC" || note "stderr: $(head -c 300 "$SCRATCH/err")"
}

# ------------------------------------------- PATH, --log-file, --sockdir
start_in_wd "vm1" vm1 --log-file x.log --sockdir .s
P=$WD/vm1
for p in $(marked_pids); do track_mount "$P" "$p"; done
check "vm1: $P is mounted" is_mounted "$P"
# The fix is to make the paths absolute, not to keep the caller's
# directory busy for the daemon's life.
D=$(marked_pids | head -n 1)
check_eq "vm1: the daemon runs in /" / "$(readlink "/proc/${D:-0}/cwd" 2>/dev/null)"
not_at_root /vm1
check_within "vm1: the log is $WD/x.log" 2 "grep -q 'msg=serving' '$WD/x.log'" ls -l "$WD"
not_at_root /x.log
check "vm1: the sockets are in $WD/.s" test -S "$WD/.s/ctl"
not_at_root /.s
check_fails "vm1: no default socket directory beside PATH either" test -e "$WD/.vm1.multifs"
bg vde_plug "$P" null://
check_links "vm1: a link joins through $P" "$P" 1 3
check_within "vm1: the join is logged in $WD/x.log" 2 "grep -q 'link joined' '$WD/x.log'" tail -n 2 "$WD/x.log"
bg vde_plug "$WD/.s" null://
check_links "vm1: a link joins through $WD/.s" "$P" "1 2" 3
fusermount -u "$P" 2>/dev/null
check_within "vm1: after the unmount, the mountpoint multifs created is gone" 5 "! is_mounted '$P' && [ ! -e '$P' ]" ls -la "$WD"
check_within "vm1: after the unmount, the socket directory is gone" 3 "[ ! -e '$WD/.s' ]" ls -la "$WD/.s"

# ------------------------------------------------ a relative multi:// URL
start_in_wd "vm2" "multi://vm2[mode=0660]" --log-file "$SCRATCH/vm2.log"
P=$WD/vm2
for p in $(marked_pids); do track_mount "$P" "$p"; done
check "vm2: $P is mounted" is_mounted "$P"
check_eq "vm2: the URL's mode applies (mount root 2770)" 2770 "$(stat -c %a "$P" 2>/dev/null)"
not_at_root /vm2
check "vm2: the default socket directory is $WD/.vm2.multifs" test -S "$WD/.vm2.multifs/ctl"
not_at_root /.vm2.multifs
bg vde_plug "$P" null://
check_links "vm2: a link joins" "$P" 1 3
fusermount -u "$P" 2>/dev/null
check_within "vm2: after the unmount, mountpoint and socket directory are gone" 5 \
	"! is_mounted '$P' && [ ! -e '$P' ] && [ ! -e '$WD/.vm2.multifs' ]" ls -la "$WD"

finish
