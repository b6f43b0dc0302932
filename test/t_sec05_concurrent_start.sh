#!/bin/bash
# t_sec05_concurrent_start.sh: two multifs started at the same instant for
# the same multilink: exactly one wins, and the winner serves (neither
# can take over or unlink the other's sockets).
#
# limit: 240
# ROUNDS rounds (default 20) each of:
#  - two `multifs PATH` with the same PATH,
#  - two `multifs --sockdir D PATHa` / `PATHb` with different PATHs and the
#    same socket directory D,
# released at once by race_start.py. In every round exactly one exits 0 and
# the other exits non-zero with one line on stderr (and, in the second kind,
# leaves nothing: its PATH not mounted and not left behind); the one that
# exited 0 serves: a link joins and `ls PATH/links` lists it. The survivor
# is then stopped (fusermount -u) and nothing may be left: no mount, no
# socket directory, no daemon.
#
# Before the fix the loser's clean-up of what it took for a stale socket
# directory deleted the winner's sockets (12 of 40 rounds in the issue).
. "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-20}
RACE=$ROOT/test/hostile/race_start.py

# stop_path P: stop whatever daemon serves P and detach what is left.
stop_path() {
	local d
	d=$(daemon_pid "$1")
	mounted_at "$1" && timeout 5 fusermount -u "$1" 2>/dev/null
	[ -n "$d" ] && { wait_exit "$d" 3 || kill -KILL "$d" 2>/dev/null; }
	return 0
}

# scrub P SD: after a failed round, leave nothing for the next one.
scrub() {
	local d i
	d=$(daemon_pid "$1") && kill -KILL "$d" 2>/dev/null
	for i in 1 2 3; do mounted_at "$1" && umount -l "$1" 2>/dev/null; done
	rm -rf "$2"
	rmdir "$1" 2>/dev/null
	return 0
}

# judge KIND R RCS ERRPREFIX PATHS...: the verdict on one round, as a
# reason ("" when it held). PATHS are the PATH of command 1 and 2.
BAD_SAME=0 BAD_SOCK=0
judge() {
	local kind=$1 r=$2 rcs=$3 ep=$4 pa=$5 pb=$6 sd=$7 rc1 rc2 win lose werr why=
	rc1=${rcs% *}
	rc2=${rcs#* }
	if [ "$rc1" = 0 ] && [ "$rc2" != 0 ]; then
		win=$pa lose=$pb werr=$ep.2.err
	elif [ "$rc2" = 0 ] && [ "$rc1" != 0 ]; then
		win=$pb lose=$pa werr=$ep.1.err
	else
		why="exit statuses $rc1 and $rc2, want one 0 ($(cat "$ep.1.err" "$ep.2.err" 2>/dev/null | head -c 300 | tr '\n' '|'))"
		echo "$why"
		return
	fi
	one_line "$werr" || why="$why; the loser's stderr is not one line: '$(head -c 200 "$werr" | tr '\n' '|')'"
	if ! joinable "$win"; then
		why="$why; the winner does not serve (links: '$(ls "$win/links" 2>&1 | tr '\n' ' ')'; socket dir: $(ls "$sd" 2>&1 | tr '\n' ' '))"
	fi
	if [ "$lose" != "$win" ]; then
		mounted_at "$lose" && why="$why; the loser's PATH is mounted"
		[ -e "$lose" ] && why="$why; the loser's PATH is left behind"
		[ -n "$(daemon_pid "$lose")" ] && why="$why; the loser's daemon runs"
	fi
	stop_path "$win"
	mounted_at "$win" && why="$why; after the stop PATH is still mounted"
	[ -e "$sd" ] && why="$why; after the stop the socket dir is left ($(ls "$sd" 2>&1 | tr '\n' ' '))"
	[ -n "$(daemon_pid "$win")" ] && why="$why; after the stop a daemon runs"
	echo "${why#; }"
}

# -----------------------------------------------------------------------------
# 1. the same PATH
for r in $(seq 1 "$ROUNDS"); do
	P=$SCRATCH/s$r
	SD=$(sockdir_of "$P")
	RCS=$(timeout 30 "$PY" "$RACE" "$SCRATCH/s$r" 20 \
		-- "$MULTIFS" --log-file "$SCRATCH/s$r.1.log" "$P" \
		-- "$MULTIFS" --log-file "$SCRATCH/s$r.2.log" "$P")
	WHY=$(judge same "$r" "$RCS" "$SCRATCH/s$r" "$P" "$P" "$SD")
	if [ -z "$WHY" ]; then
		pass "same PATH, round $r: one start won ($RCS) and served; nothing left after the stop"
	else
		BAD_SAME=$((BAD_SAME + 1))
		fail "same PATH, round $r" "$WHY"
	fi
	scrub "$P" "$SD"
done

# -----------------------------------------------------------------------------
# 2. different PATHs, the same --sockdir
for r in $(seq 1 "$ROUNDS"); do
	PA=$SCRATCH/a$r
	PB=$SCRATCH/b$r
	SD=$SCRATCH/sd$r
	RCS=$(timeout 30 "$PY" "$RACE" "$SCRATCH/d$r" 20 \
		-- "$MULTIFS" --log-file "$SCRATCH/a$r.log" --sockdir "$SD" "$PA" \
		-- "$MULTIFS" --log-file "$SCRATCH/b$r.log" --sockdir "$SD" "$PB")
	WHY=$(judge sockdir "$r" "$RCS" "$SCRATCH/d$r" "$PA" "$PB" "$SD")
	if [ -z "$WHY" ]; then
		pass "same --sockdir, round $r: one start won ($RCS) and served; nothing left after the stop"
	else
		BAD_SOCK=$((BAD_SOCK + 1))
		fail "same --sockdir, round $r" "$WHY"
	fi
	scrub "$PA" "$SD"
	scrub "$PB" "$SD"
done
note "rounds that failed: same PATH $BAD_SAME of $ROUNDS, same --sockdir $BAD_SOCK of $ROUNDS"

finish
