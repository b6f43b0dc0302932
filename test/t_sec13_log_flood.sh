#!/bin/bash
# t_sec13_log_flood.sh: what a peer or a local user can make the daemon
# log cannot fill the disk. A throw-away user, as fast
# as it can and bounded in time and count:
#   a. at --log-level debug, joins as a link and sends 1-byte datagrams
#      for 5 s (each a frame of bad size, once one debug line apiece): the
#      log grows by less than 1 MiB, the frames are all counted
#      (rx_dropped), and the log says how many lines it held back
#      (repeated=N);
#   b. at info level, sends bad handshakes for 4 s (up to 50000);
#   c. at info level, writes "2" to a link's close file: 2000 times with
#      `echo 2 >`, then for 4 s as fast as it can (up to 200000).
# b and c each grow the log by less than 256 KiB, with repeated=N.
# Afterwards both daemons still serve (a vde_plug joins) and logged no
# error. The limit is a burst of 300 lines, then 5 a second, per level
# and message: 5 s of flood let ~325 lines of ~250 bytes through.
# A throw-away user mfu_b3 is created and removed at exit.
. "$(dirname "$0")/lib.sh"

hostile_copy
public_dir

U=mfu_b3
throwaway_user "$U"
as_user() { runuser -u "$U" -- "$@"; }

size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# grown NAME LOG BEFORE LIMIT MSG: LOG grew by less than LIMIT bytes since
# it was BEFORE bytes long, and its lines with MSG say repeated=N.
grown() {
	local name=$1 log=$2 before=$3 limit=$4 msg=$5 now lines
	now=$(size "$log")
	lines=$(tail -c +"$((before + 1))" "$log" | grep -c '')
	check "$name: the log grew by $((now - before)) bytes ($lines lines), under $limit" \
		[ $((now - before)) -lt "$limit" ]
	check "$name: held-back lines are counted ($(grep -F "$msg" "$log" | grep -o 'repeated=[0-9]*' | tail -n 1))" \
		grep -Eq "$msg.* repeated=[1-9]" "$log"
}

# serves NAME PATH: a vde_plug joins PATH.
serves() {
	local before
	before=$(stat_key "$2/stats" links_total)
	bg vde_plug "$2" null://
	check_stat "$1: afterwards a vde_plug joins" "$2/stats" links_total "$((${before:-0} + 1))" 3
	kill "$LASTPID" 2>/dev/null
}

# ------------------------------------------------- a. runts at debug level
P1=$SCRATCH/dbg
LOG1=$SCRATCH/dbg.log
start_multifs "$P1" --log-level debug -o mode=0666 || finish
D1=$LASTPID
# What the start logs is not the flood's.
check_within "a. the start is logged" 2 "grep -q 'msg=serving' '$LOG1'" cat "$LOG1"
S0=$(size "$LOG1")
OUT=$SCRATCH/runts.out
as_user timeout 30 "$PY" "$HD/log_flood.py" runts "$P1/ctl" --seconds 5 --max 20000000 \
	--sockdir "$PUB" --hold 3 >"$OUT" 2>&1 &
RP=$!
track $RP
check_within "a. the flooding link sent for 5 s" 12 "grep -q '^sent=' '$OUT'" cat "$OUT"
SENT=$(sed -n 's/^sent=//p' "$OUT")
LNK=$(links_of "$P1" | cut -d' ' -f1)
check_stat "a. every one of the ${SENT:-?} runts counted as rx_dropped" "$P1/links/${LNK:-none}/stats" rx_dropped "${SENT:-x}" 2
grown "a. ${SENT:-?} 1-byte frames at debug level" "$LOG1" "$S0" $((1 << 20)) "dropping frame of bad size"
wait $RP 2>/dev/null
check "a. daemon alive" alive "$D1"
serves "a." "$P1"
check_log_clean "a. no error in the log" "$LOG1"

# ------------------------------------- b. bad handshakes, at info level
P2=$SCRATCH/inf
LOG2=$SCRATCH/inf.log
start_multifs "$P2" -o mode=0666 || finish
D2=$LASTPID
check_within "b. the start is logged" 2 "grep -q 'msg=serving' '$LOG2'" cat "$LOG2"
S0=$(size "$LOG2")
OUT=$SCRATCH/hs.out
as_user timeout 30 "$PY" "$HD/log_flood.py" handshakes "$P2/ctl" --seconds 4 --max 50000 >"$OUT" 2>&1
N=$(sed -n 's/^sent=//p' "$OUT")
check "b. the user sent bad handshakes for 4 s (${N:-?}: $(tail -n 1 "$OUT"))" [ "${N:-0}" -gt 1000 ]
# Each connection is closed once its refusal is logged: none may be left
# open or waiting in the backlog of ctl.
handshakes_left() {
	echo "backlog $(ss -xlpH 2>/dev/null | grep "pid=$D2," | awk '$1 == "u_str" && $5 ~ /\/ctl$/ { print $3 }')," \
		"open $(ss -xpH state established 2>/dev/null | grep -c "pid=$D2,")"
}
check_within "b. the last refusals are logged" 5 "[ \"\$(handshakes_left)\" = 'backlog 0, open 0' ]" handshakes_left
grown "b. ${N:-?} bad handshakes" "$LOG2" "$S0" $((256 << 10)) "refused: bad handshake"

# ------------------------------------------ c. bad close writes, info level
OUT=$SCRATCH/link.out
as_user timeout 60 "$PY" "$HD/vde_desc.py" "$P2/ctl" --sockdir "$PUB" --hold 40 >"$OUT" 2>&1 &
track $!
disown $!
check_within "c. the user's link joins" 5 "grep -q '^result=reply' '$OUT'" cat "$OUT"
LNK=$(links_of "$P2" | cut -d' ' -f1)
CLOSE=$P2/links/${LNK:-none}/close
S0=$(size "$LOG2")
# shellcheck disable=SC2016
as_user timeout 30 bash -c 'for i in $(seq 2000); do echo 2 >"$1"; done 2>/dev/null; echo done' _ "$CLOSE" >"$SCRATCH/echo.out" 2>&1
check_eq "c. 2000 times echo 2 > links/$LNK/close" done "$(cat "$SCRATCH/echo.out")"
as_user timeout 30 "$PY" "$HD/log_flood.py" close "$CLOSE" --seconds 4 --max 200000 >"$SCRATCH/cw.out" 2>&1
N=$(sed -n 's/^sent=//p' "$SCRATCH/cw.out")
check "c. then ${N:-?} writes in 4 s ($(tail -n 1 "$SCRATCH/cw.out"))" [ "${N:-0}" -gt 1000 ]
grown "c. 2000 + ${N:-?} bad close writes" "$LOG2" "$S0" $((256 << 10)) "close: refused write"
check "c. the link is still there: bad writes close nothing" test -e "$CLOSE"
check "b, c. daemon alive" alive "$D2"
serves "b, c." "$P2"
check_log_clean "b, c. no error in the log" "$LOG2"

finish
