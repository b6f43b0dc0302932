#!/bin/bash
# t_handoff_frames.sh: a hand-off under a steady stream of numbered frames
# loses nothing and damages nothing (vdeprobe), and the duplicates of the
# overlap are suppressed at the far side (dedup, on by default; the
# frames of both settings are t_dedup's); frames of every size up to 9234 bytes pass intact;
# every frame a host sends reaches the links, even just before it leaves.
. "$(dirname "$0")/lib.sh"

A=$SCRATCH/A
B=$SCRATCH/B
start_multifs "$A" || finish
start_multifs "$B" || finish

# field LINE KEY: the value of KEY=value in a vdeprobe result line.
field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# start_recv DIR COUNT: a vdeprobe receiver on DIR, joined when this returns;
# its pid in $RECV, its output in $SCRATCH/recv.out.
start_recv() {
	rm -f "$SCRATCH/ready"
	"$VDEPROBE" recv -dir "$1" -count "$2" -idle 2s -max 40s -ready "$SCRATCH/ready" >"$SCRATCH/recv.out" 2>&1 &
	RECV=$!
	track "$RECV"
	if ! wait_for "[ -e '$SCRATCH/ready' ]" 3; then
		fail "vdeprobe recv joins $1" "$(cat "$SCRATCH/recv.out")"
		return 1
	fi
}

# wait_recv NAME: wait for the receiver (bounded), leave its line in $RESULT
# and its exit status in $RECV_RC.
wait_recv() {
	RECV_RC=124
	if wait_exit "$RECV" 45; then
		wait "$RECV"
		RECV_RC=$?
	else
		fail "$1: vdeprobe recv ends" "still running"
	fi
	RESULT=$(grep '^received=' "$SCRATCH/recv.out" | tail -n 1)
	note "$1: $RESULT"
}

# --- the hand-off ------------------------------------------------------------------
COUNT=20000
start_recv "$B/host" "$COUNT" || finish
bg vde_plug "$A" "$B"
L1=$LASTPID
wait_for "[ -d '$A/links/1' ] && [ -d '$B/links/1' ]" 2 || fail "link 1 joins A and B" "A: '$(links_of "$A")' B: '$(links_of "$B")'"

"$VDEPROBE" send -dir "$A/host" -count "$COUNT" -rate 5000 >"$SCRATCH/send.out" 2>&1 &
SEND=$!
track "$SEND"
sleep 1 # a pace: frames flow through link 1 alone for a second
bg vde_plug "$A" = vde_plug "$B"
L2=$LASTPID
check_within "link 2 joins A and B while frames flow" 2 "[ -d '$A/links/2' ] && [ -d '$B/links/2' ]" \
	ls "$A/links" "$B/links"
sleep 1 # the overlap: both links carry the stream for a second
close_link "$A/links/1/close" "close link 1 through A/links/1/close"
exits_after_close "$L1" "link 1's vde_plug"
check_eq "A's links after the close" 2 "$(links_of "$A")"
check_links "B's links after the close: 2" "$B" 2 1

if wait_exit "$SEND" 20; then
	wait "$SEND"
	check_eq "vdeprobe send exit status" 0 "$?"
else
	fail "vdeprobe send ends" "still running after 20 s"
fi
wait_recv "hand-off"
check_eq "hand-off: vdeprobe recv exit status (nothing lost or corrupt)" 0 "$RECV_RC"
check_eq "hand-off: unique frames" "$COUNT" "$(field "$RESULT" unique)"
check_eq "hand-off: lost" 0 "$(field "$RESULT" lost)"
check_eq "hand-off: corrupt" 0 "$(field "$RESULT" corrupt)"
check_eq "hand-off: no duplicate reached B's host (dedup)" 0 "$(field "$RESULT" dups)"
dd=$(stat_key "$B/stats" dup_dropped)
if [ "${dd:-0}" -gt 0 ]; then
	pass "hand-off: B suppressed the overlap's duplicates (dup_dropped $dd)"
else
	fail "hand-off: B suppressed the overlap's duplicates" "dup_dropped=${dd:-?}"
fi
check "link 2's vde_plug still runs" alive "$L2"

# --- frame sizes, through the one link left (link 2) --------------------------------
for size in 9234 26; do
	start_recv "$B/host" 200 || continue
	"$VDEPROBE" send -dir "$A/host" -count 200 -rate 1000 -size "$size" >"$SCRATCH/send.out" 2>&1
	check_eq "size $size: vdeprobe send exit status" 0 "$?"
	wait_recv "size $size"
	check_eq "size $size: all 200 frames intact" "0 0 200" \
		"$(field "$RESULT" lost) $(field "$RESULT" corrupt) $(field "$RESULT" unique)"
done
check_eq "no frame of A's host dropped as oversized or short (A/links/2 rx_dropped)" 0 "$(stat_key "$A/links/2/stats" rx_dropped)"

# --- every frame a peer sends reaches the multilink, even right before it leaves ----
# Sixty short-lived senders, one after the other, each leaving right after
# its last frame. Every frame must be handed on: sent, or counted as dropped.

# last_frames NAME JOIN_DIR DEST_STATS DROP_KEY: 60 senders join JOIN_DIR one
# after the other, send 10 frames each and leave; every frame must show up
# at DEST_STATS as tx_packets or tx_dropped, or in the root's DROP_KEY, or
# in its dup_dropped: the senders all send the same 10 frames, and while
# link 2 is open too a sender's frames within a second of the last one's
# are duplicates to A's host.
# accounted STATS DROP_KEY: frames handed on towards STATS, or dropped for DROP_KEY.
accounted() { echo $(($(stat_key "$1" tx_packets) + $(stat_key "$1" tx_dropped) + $(stat_key "$A/stats" "$2") + $(stat_key "$A/stats" dup_dropped))); }
last_frames() {
	local name=$1 dir=$2 dest=$3 key=$4 before failed=0 i
	before=$(accounted "$dest" "$key")
	for i in $(seq 60); do
		"$VDEPROBE" send -dir "$dir" -count 10 -rate 100000 >>"$SCRATCH/senders.log" 2>&1 || failed=$((failed + 1))
	done
	check_eq "all 60 senders joining as $name ran to the end" 0 "$failed"
	# The last sender's frames may still be on their way through.
	check_within "$name: last frames before leaving are all accounted for (600 sent by 60 senders; tx_packets+tx_dropped at $dest, $key, dup_dropped)" 2 \
		"[ \$((\$(accounted '$dest' $key) - $before)) = 600 ]" since "$dest" "$key" "$before"
}
# since STATS DROP_KEY BEFORE: how many were accounted for, for failure details.
since() { echo "$(($(accounted "$1" "$2") - $3)) accounted for"; }

# The host side: A's link 2 gets every frame of senders joining as A's host.
last_frames "the host" "$A/host" "$A/links/2/stats" dropped_no_link

# The link side: a host on A gets every frame of senders joining as links.
bg vde_plug "$A/host" null://
wait_for "[ \"\$(stat_key '$A/host/stats' attached)\" = yes ]" 2 || fail "a vde_plug attaches as A's host" "$(head -n 1 "$A/host/stats")"
last_frames "links" "$A" "$A/host/stats" dropped_no_host

finish
