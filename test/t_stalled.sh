#!/bin/bash
# t_stalled.sh: peers that stop reading, die, or lose their socket file.
#
#  - links that never read (a vde-2 one and a seqpacket one) while the host
#    sends fast and a healthy link receives: the healthy link loses nothing,
#    the host is not slowed, the stuck links' tx_dropped grows;
#  - a host that never reads while links send at a high rate: the links are
#    not slowed, the daemon keeps serving, the host's tx_dropped grows;
#  - a link killed with SIGKILL mid-stream: gone from links/ within 2 s,
#    the counters add up, the other links lose nothing;
#  - a link (and a host) whose data socket file is deleted from SOCKDIR:
#    frames still flow both ways, and closing it still works.
. "$(dirname "$0")/lib.sh"

HD=$ROOT/test/hostile

P=$SCRATCH/st
start_multifs "$P" || finish
D=$LASTPID
LOG=$SCRATCH/st.log
SD=$(sockdir_of "$P")

# link_of PID: the id of the open link whose peer is PID.
link_of() {
	local f
	for f in "$P"/links/*/stats; do
		[ "$(stat_key "$f" pid 2>/dev/null)" = "$1" ] && basename "$(dirname "$f")" && return 0
	done
	return 1
}

# closed KEY PID [MSG]: KEY=value from the log line that closed PID's port
# (MSG "link closed" by default, or "host detached").
closed() {
	grep "msg=\"${3:-link closed}\"" "$LOG" | grep -E " pid=$2( |\$)" | tail -n 1 |
		sed -n "s/.* $1=\\([0-9]*\\).*/\\1/p"
}

# A link's outbound queue, in 64-byte frames: QueueBytes in
# multilink/port.go (the daemon under test is built from this tree), 1 MiB
# if it cannot be read there.
QB=$(sed -n 's/^[[:space:]]*QueueBytes[[:space:]]*=[[:space:]]*\([0-9]*\)[[:space:]]*<<[[:space:]]*\([0-9]*\).*/\1 \2/p' "$ROOT/multilink/port.go" | head -n 1)
if [ -n "$QB" ]; then
	QB=$((${QB% *} << ${QB#* }))
else
	QB=$(sed -n 's/^[[:space:]]*QueueBytes[[:space:]]*=[[:space:]]*\([0-9][0-9]*\)[[:space:]]*$/\1/p' "$ROOT/multilink/port.go" | head -n 1)
fi
QF=$((${QB:-1048576} / 64))
note "a link's queue: ${QB:-1048576} bytes, $QF frames of 64 bytes"

# stuck_drops LABEL STATS [DUPS]: a port (its stats file) that could not
# take the 40000 frames sent towards it counted drops, and each frame was
# sent, dropped, a duplicate not for it (DUPS: the host's), or is still
# queued for it: at most a queue's worth (QF).
stuck_drops() {
	local label=$1 tx dr dup=${3:-0}
	tx=$(stat_key "$2" tx_packets)
	dr=$(stat_key "$2" tx_dropped)
	if [ "${dr:-0}" -gt 0 ]; then
		pass "$label: tx_dropped grew ($dr; tx_packets $tx)"
	else
		fail "$label: tx_dropped grows" "tx_packets=$tx tx_dropped=$dr"
	fi
	if [ -n "$tx" ] && [ $((tx + dr + dup)) -le 40000 ] && [ $((tx + dr + dup)) -ge $((40000 - QF)) ]; then
		pass "$label: tx_packets + tx_dropped + duplicates = $((tx + dr + dup)), 40000 less at most a queue ($QF)"
	else
		fail "$label: tx_packets + tx_dropped + duplicates between $((40000 - QF)) and 40000" "$tx + $dr + $dup"
	fi
}

# start_recv NAME DIR COUNT [ARGS...]: a vdeprobe recv in the background,
# joined once it returns; its pid in $LASTPID, output in $SCRATCH/NAME.out.
start_recv() {
	local name=$1 dir=$2 count=$3
	shift 3
	rm -f "$SCRATCH/$name.ready"
	# Niced: a receiver that must lose nothing should not lose because a
	# busy machine (a benchmark next door) left it no CPU.
	nice -n -10 "$VDEPROBE" recv -dir "$dir" -count "$count" -idle 5s -max 60s -ready "$SCRATCH/$name.ready" "$@" >"$SCRATCH/$name.out" 2>&1 &
	LASTPID=$!
	track "$LASTPID"
	check_within "$name: the receiver joins" 5 "[ -e '$SCRATCH/$name.ready' ]" cat "$SCRATCH/$name.out"
}

# =============================================================================
# 1. links that never read
bg "$VDEPROBE" hold -dir "$P" -ready "$SCRATCH/stuck1" -max 90s
STUCK1=$LASTPID
bg "$PY" "$HD/stuck_seq.py" "$P/seqpacket" "$SCRATCH/stuck2" 90
STUCK2=$LASTPID
wait_for "[ -e '$SCRATCH/stuck1' ] && [ -e '$SCRATCH/stuck2' ]" 5
S1=$(link_of "$STUCK1")
S2=$(link_of "$STUCK2")
check "a stuck vde-2 link and a stuck seqpacket link joined" test -n "$S1" -a -n "$S2"

# 1a. 40000 frames at 20000/s: well within what a healthy reader keeps up
# with, far beyond what the stuck links' sockets and queues can hold.
start_recv healthy "$P" 40000
HEALTHY=$LASTPID
T0=$(now_ms)
"$VDEPROBE" send -dir "$P/host" -count 40000 -rate 20000 >"$SCRATCH/send1.out" 2>&1
DT=$(($(now_ms) - T0))
# 2 s at that rate; 8 s leaves room for a busy machine, yet a host held
# back by the stuck links (blocked, or paced by their sockets) fails.
if [ "$DT" -lt 8000 ]; then
	pass "the host sent 40000 frames at 20000/s unhindered by the stuck links ($DT ms)"
else
	fail "the host sends 40000 frames at 20000/s within 8 s" "$DT ms: $(cat "$SCRATCH/send1.out")"
fi
if wait "$HEALTHY"; then
	pass "the healthy link got every frame: $(cat "$SCRATCH/healthy.out")"
else
	fail "the healthy link gets every frame" "$(cat "$SCRATCH/healthy.out")"
fi
check_stat "1a's host detached" "$P/stats" host detached 3
for s in "$S1" "$S2"; do
	stuck_drops "stuck link $s ($(stat_key "$P/links/$s/stats" transport))" "$P/links/$s/stats"
done

# 1b. Full rate (as fast as the daemon takes them): the host must still
# not be held back by the stuck links. A healthy reader may lose frames
# here (a reader slower than the sender does, by design); what it gets
# must be intact.
start_recv fast "$P" 100000
FAST=$LASTPID
D1=$(stat_key "$P/links/$S1/stats" tx_dropped)
T0=$(now_ms)
"$VDEPROBE" send -dir "$P/host" -count 100000 -rate 10000000 >"$SCRATCH/send2.out" 2>&1
DT=$(($(now_ms) - T0))
if [ "$DT" -lt 15000 ]; then
	pass "the host sent 100000 frames at full rate past the stuck links ($DT ms)"
else
	fail "the host sends 100000 frames at full rate within 15 s" "$DT ms"
fi
wait "$FAST"
check "at full rate the healthy link's frames are intact: $(head -n 1 "$SCRATCH/fast.out")" grep -q 'corrupt=0' "$SCRATCH/fast.out"
D2=$(stat_key "$P/links/$S1/stats" tx_dropped)
if [ "${D2:-0}" -gt "${D1:-0}" ]; then
	pass "stuck link $S1: tx_dropped grew again ($D1 -> $D2)"
else
	fail "stuck link $S1: tx_dropped grows again" "$D1 -> $D2"
fi
check "daemon alive" alive "$D"
kill "$STUCK1" "$STUCK2" 2>/dev/null
check_links "the stuck links leave when their peers die" "$P" '' 3
# What was still queued for them counts as dropped once they are gone.
for pid in "$STUCK1" "$STUCK2"; do
	tx=$(closed tx_packets "$pid")
	dr=$(closed tx_dropped "$pid")
	check_eq "stuck peer $pid: its final counters cover all 140000 frames (tx_packets $tx + tx_dropped $dr)" 140000 "$((${tx:-0} + ${dr:-0}))"
done

# =============================================================================
# 2. a host that never reads
bg "$VDEPROBE" hold -dir "$P/host" -ready "$SCRATCH/stuckhost" -max 90s
STUCKH=$LASTPID
wait_for "[ -e '$SCRATCH/stuckhost' ]" 5
check_eq "a stuck host attached" "$STUCKH" "$(stat_key "$P/host/stats" pid)"
T0=$(now_ms)
"$VDEPROBE" send -dir "$P" -count 20000 -rate 20000 >"$SCRATCH/ls1.out" 2>&1 &
LS1=$!
"$VDEPROBE" send -dir "$P" -count 20000 -rate 20000 -transport seqpacket >"$SCRATCH/ls2.out" 2>&1 &
LS2=$!
track $LS1 $LS2
check_within "the links' frames fill the stuck host's socket (tx_dropped grows)" 3 \
	"[ \"\$(stat_key '$P/host/stats' tx_dropped)\" -gt 0 ] 2>/dev/null" show_key "$P/host/stats" tx_dropped
# Meanwhile the daemon serves: stats answer, a link joins.
check "stats answer while the host is stuck" grep -q '^host: attached' "$P/stats"
bg vde_plug "$P" null://
JOINER=$LASTPID
check_within "a vde_plug joins while the host is stuck" 2 "link_of $JOINER" show_links "$P"
wait "$LS1"
R1=$?
wait "$LS2"
R2=$?
DT=$(($(now_ms) - T0))
if [ "$R1" = 0 ] && [ "$R2" = 0 ] && [ "$DT" -lt 8000 ]; then
	pass "two links sent 20000 frames each at 20000/s to the stuck host unhindered ($DT ms)"
else
	fail "two links send 20000 frames each to the stuck host within 8 s (1 s at that rate)" "$DT ms, exit $R1 $R2"
fi
wait_for "[ -n \"\$(closed rx_packets $LS1)\" ] && [ -n \"\$(closed rx_packets $LS2)\" ]" 3
check_eq "the daemon read every frame of both links (rx_packets at their close)" "20000 20000" \
	"$(closed rx_packets $LS1) $(closed rx_packets $LS2)"
# The two links send the same frames: what one brought just after the
# other is a duplicate (dup_dropped), counted with the drops here.
stuck_drops "the stuck host" "$P/host/stats" "$(stat_key "$P/stats" dup_dropped)"
check_eq "dropped_no_host: none (the host was there all along)" 0 "$(stat_key "$P/stats" dropped_no_host)"
kill "$STUCKH" "$JOINER" 2>/dev/null
check_within "the stuck host and the joiner left" 3 "[ \"\$(stat_key '$P/stats' host)\" = detached ] && [ -z \"\$(links_of '$P')\" ]" \
	eval "show_key '$P/stats' host; show_links '$P'"
# The two senders send the same frames: whatever one brought that the
# other had just brought too was a duplicate (dup_dropped), not for the host.
check_eq "the stuck host's final counters cover all 40000 frames (with dup_dropped $(stat_key "$P/stats" dup_dropped))" 40000 \
	"$(($(closed tx_packets "$STUCKH" "host detached") + 0 + $(closed tx_dropped "$STUCKH" "host detached") + 0 + $(stat_key "$P/stats" dup_dropped)))"

# =============================================================================
# 3. SIGKILL mid-stream
start_recv killA "$P" 30000
A=$LASTPID
start_recv killB "$P" 30000
B=$LASTPID
disown "$B" 2>/dev/null # it gets SIGKILL: no job report
bg vde_plug "$P" null://
C=$LASTPID
wait_for "link_of $C" 3
LA=$(link_of "$A")
LB=$(link_of "$B")
LC=$(link_of "$C")
check "three links: A, B and a vde_plug" test -n "$LA" -a -n "$LB" -a -n "$LC"
DNL0=$(stat_key "$P/stats" dropped_no_link)
"$VDEPROBE" send -dir "$P/host" -count 30000 -rate 10000 >"$SCRATCH/ks.out" 2>&1 &
KS=$!
track $KS
sleep 1 # a pace: a second of the stream before the kill
kill -KILL "$B"
T0=$(now_ms)
if wait_for "[ ! -e '$P/links/$LB' ]" 2; then
	pass "link $LB vanished $(($(now_ms) - T0)) ms after its peer got SIGKILL mid-stream"
else
	fail "link $LB vanishes within 2 s of SIGKILL" "still listed"
fi
check_eq "links: 2 after the kill" 2 "$(stat_key "$P/stats" links)"
wait "$KS"
check "the host sent its 30000 frames" grep -q 'sent=30000' "$SCRATCH/ks.out"
if wait "$A"; then
	pass "link A lost nothing: $(cat "$SCRATCH/killA.out")"
else
	fail "link A loses nothing" "$(cat "$SCRATCH/killA.out")"
fi
wait_for "[ \"\$(stat_key '$P/stats' host)\" = detached ]" 3
wait_for "grep -q 'msg=\"host detached\".*rx_packets=30000' '$LOG'" 2
check_eq "the host's rx_packets: 30000" 30000 "$(grep 'msg="host detached"' "$LOG" | tail -n 1 | sed -n 's/.* rx_packets=\([0-9]*\).*/\1/p')"
wait_for "[ -n \"\$(closed tx_packets $A)\" ]" 3
check_eq "link A's final counters: tx_packets 30000, tx_dropped 0" "30000 0" "$(closed tx_packets "$A") $(closed tx_dropped "$A")"
btx=$(closed tx_packets "$B")
bdr=$(closed tx_dropped "$B")
if [ "${btx:-0}" -gt 0 ] && [ $((btx + bdr)) -lt 30000 ]; then
	pass "killed link B's final counters: tx_packets $btx + tx_dropped $bdr, fewer than 30000"
else
	fail "killed link B's final counters: some sent, fewer than 30000 in all" "tx_packets=$btx tx_dropped=$bdr"
fi
if wait_for "[ \$((\$(stat_key '$P/links/$LC/stats' tx_packets) + \$(stat_key '$P/links/$LC/stats' tx_dropped))) = 30000 ]" 3; then
	pass "the vde_plug link: tx_packets + tx_dropped = 30000 (tx_dropped $(stat_key "$P/links/$LC/stats" tx_dropped))"
else
	fail "the vde_plug link: tx_packets + tx_dropped = 30000" "$(grep tx_ "$P/links/$LC/stats" | tr '\n' ' ')"
fi
check_eq "dropped_no_link unchanged" "$DNL0" "$(stat_key "$P/stats" dropped_no_link)"
check "the vde_plug still runs" alive "$C"
kill "$C" 2>/dev/null
check_links "the vde_plug link left" "$P" "" 3

# =============================================================================
# 4. data socket files deleted from SOCKDIR
Q=$SCRATCH/stq
start_multifs "$Q" || finish
bg nice -n -10 "$VDEPROBE" bridge -a "$P" -a-transport vde -b "$Q" -b-transport vde -ready "$SCRATCH/br.ready" -max 60s
BR=$LASTPID
wait_for "[ -e '$SCRATCH/br.ready' ] && link_of $BR" 3
LBR=$(link_of "$BR")
SOCKF=$(ls "$SD" | grep '^link\.')
if [ -n "$LBR" ] && [ "$(echo "$SOCKF" | wc -w)" = 1 ]; then
	pass "the bridge is link $LBR; its data socket is $SD/$SOCKF"
else
	fail "the bridge's link and data socket" "link '$LBR', sockets '$SOCKF'"
fi
rm -f "$SD/$SOCKF"
check_fails "its data socket file is gone" test -e "$SD/$SOCKF"
# send3000 DIR NAME DESC: 3000 frames at 3000/s into DIR; the receiver
# started as NAME (pid $R) must get them all.
send3000() {
	"$VDEPROBE" send -dir "$1" -count 3000 -rate 3000 >/dev/null 2>&1
	if wait "$R"; then
		pass "$3: $(cat "$SCRATCH/$2.out")"
	else
		fail "$3" "$(cat "$SCRATCH/$2.out")"
	fi
}
start_recv del1 "$Q/host" 3000
R=$LASTPID
send3000 "$P/host" del1 "host -> the link whose socket file is gone"
check_within "both hosts detached" 3 "[ \"\$(stat_key '$P/stats' host)\" = detached ] && [ \"\$(stat_key '$Q/stats' host)\" = detached ]" \
	eval "show_key '$P/stats' host; show_key '$Q/stats' host"
start_recv del2 "$P/host" 3000
R=$LASTPID
send3000 "$Q/host" del2 "the link whose socket file is gone -> host"
check_stat "the receiver host detached" "$P/stats" host detached 3
# The host's socket file too.
start_recv del3 "$P/host" 3000
R=$LASTPID
HSOCK=$(ls "$SD" | grep '^host\.[0-9]')
rm -f "$SD/$HSOCK"
check "the host's data socket file ($HSOCK) is gone" test -n "$HSOCK" -a ! -e "$SD/$HSOCK"
send3000 "$Q/host" del3 "-> the host whose socket file is gone"
close_link "$P/links/$LBR/close" "closing that link through links/$LBR/close works"
check_fails "link $LBR is gone at once" test -e "$P/links/$LBR"
check_exits "the bridge saw the close and ended" "$BR" 2
check "the bridge reported the end of its control stream" grep -q 'ended a: control stream closed' "$SCRATCH/bg.log"
check_eq "the socket dir holds only the five entries" "ctl host.ctl host.seqpacket host.vhost-user seqpacket" \
	"$(ls "$SD" | sort | tr '\n' ' ' | sed 's/ $//')"
check "daemon alive at the end" alive "$D"
check_log_clean "no error or panic in the log" "$LOG"

finish
