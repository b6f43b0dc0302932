#!/bin/bash
# t_stop.sh: SIGTERM, SIGINT, `fusermount -u PATH` and `umount PATH` each stop
# multifs cleanly, in the foreground (-f) and daemonized: exit status 0, every
# vde_plug peer exits, the socket dir and the mount are gone, a mountpoint
# multifs created is removed and a pre-existing one is kept.
. "$(dirname "$0")/lib.sh"

# stop_case METHOD MODE PREEXISTING [EXTRA MULTIFS ARGS...]
#   METHOD: TERM | INT | fusermount | umount
#   MODE:   fg (multifs -f in the background) | daemon
stop_case() {
	local method=$1 mode=$2 pre=$3 name path sd d h l rc t0
	shift 3
	name="$method/$mode/$([ "$pre" = 1 ] && echo pre-existing || echo created)${1:+ $*}"
	path=$SCRATCH/$method-$mode-$pre
	sd=$(sockdir_of "$path")
	[ "${1:-}" = --sockdir ] && sd=$2
	[ "$pre" = 1 ] && mkdir -p "$path"

	if [ "$mode" = fg ]; then
		start_multifs_fg "$path" "$@" || return
	else
		start_multifs "$path" "$@" || return
	fi
	d=$LASTPID
	if [ -z "$d" ] || ! alive "$d"; then
		fail "$name: daemon pid" "not found"
		return
	fi
	bg vde_plug "$path/host" null://
	h=$LASTPID
	bg vde_plug "$path" null://
	l=$LASTPID
	if ! wait_for "[ -d '$path/links/1' ] && grep -q '^attached: yes' '$path/host/stats'" 2; then
		fail "$name: host and link join" "links '$(links_of "$path")', $(head -n 1 "$path/host/stats")"
	fi
	check "$name: socket dir exists while serving" test -d "$sd"

	t0=$(now_ms)
	case $method in
	TERM | INT) kill -s "$method" "$d" ;;
	fusermount) fusermount -u "$path" || fail "$name: fusermount -u" "exit status $?" ;;
	umount) umount "$path" || fail "$name: umount" "exit status $?" ;;
	esac

	if [ "$mode" = fg ]; then
		if wait_exit "$d" 5; then
			wait "$d"
			rc=$?
			check_eq "$name: multifs exit status 0 (exited after $(($(now_ms) - t0)) ms)" 0 "$rc"
		else
			fail "$name: multifs exits within 5 s" "pid $d still runs"
		fi
	else
		if wait_exit "$d" 5; then
			pass "$name: daemon exited ($(($(now_ms) - t0)) ms)"
		else
			fail "$name: daemon exits within 5 s" "pid $d still runs"
		fi
	fi
	if wait_exit "$h" 2 && wait_exit "$l" 2; then
		pass "$name: both vde_plug peers exited ($(($(now_ms) - t0)) ms)"
	else
		fail "$name: both vde_plug peers exit within 2 s" "host alive: $(alive "$h" && echo yes || echo no), link alive: $(alive "$l" && echo yes || echo no)"
	fi
	check_fails "$name: socket dir gone" test -e "$sd"
	check_fails "$name: PATH not in /proc/mounts" is_mounted "$path"
	if [ "$pre" = 1 ]; then
		check "$name: pre-existing mountpoint kept" test -d "$path"
		check_eq "$name: pre-existing mountpoint still empty" "" "$(ls -A "$path" 2>&1)"
	else
		check_fails "$name: created mountpoint removed" test -e "$path"
	fi
}

stop_case TERM fg 0
stop_case TERM daemon 1
stop_case INT fg 1
stop_case INT daemon 0
stop_case fusermount fg 0
stop_case fusermount daemon 1
stop_case umount fg 1
stop_case umount daemon 0
# A socket dir given with --sockdir goes too.
stop_case TERM fg 0 --sockdir "$SCRATCH/sockets"

finish
