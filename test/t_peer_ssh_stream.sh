#!/bin/bash
# t_peer_ssh_stream.sh: a hand-off across two paths with no VDE program
# anywhere: two sshd of the test's own (as t_peer_ssh.sh's, on 127.0.0.2
# and 127.0.0.3); two multifs, A and B, whose hosts are taps multifs opens
# itself (--host tap://), moved into two network namespaces. Each link is a
# byte pipe between the stream entries:
#   socat UNIX-CONNECT:A/stream "EXEC:'ssh ... root@ADDR socat STDIO UNIX-CONNECT:B/stream'"
# Under 200 pings a second from A's namespace to B's, `multifs handoff A 1
# -- socat ...` over the second address takes over from link 1: it finds
# the new link by socat's pid, the ping says 0% loss and no DUP!, B's
# namespace received each echo request once, link 1's socat and ssh exit,
# B's side of link 1 leaves B/links, and link 2 alone carries the traffic.
. "$(dirname "$0")/lib.sh"

PA=$SCRATCH/A
PB=$SCRATCH/B
NSA=mfs$$a
NSB=mfs$$b
TAPA=mfs$$ta
TAPB=mfs$$tb
NET=169.254.$(($$ % 250 + 1))
IPA=$NET.1
IPB=$NET.2
ADDR1=127.0.0.2
ADDR2=127.0.0.3

SSHD_ALSO=socat
SSHD_ALSO_PKG=socat
. "$(dirname "$0")/sshd_pair.sh"


# --- the multilinks, their tap hosts in namespaces (no vde_plug) ----------------
ip netns add "$NSA" && track_netns "$NSA" || { fail "ip netns add" "failed"; finish; }
ip netns add "$NSB" && track_netns "$NSB" || { fail "ip netns add" "failed"; finish; }
# The default window (1s): a new path's first frames wait in socat's and
# ssh's pipes until ssh has logged in (2 s below), and the multilink
# still knows them for what they are (the sole link's latest frames are
# taken in as delivered when the second opens).
start_multifs "$PA" --host "tap://$TAPA" || finish
start_multifs "$PB" --host "tap://$TAPB" || finish
ip link set "$TAPA" netns "$NSA" && ip link set "$TAPB" netns "$NSB" &&
	ip -n "$NSA" link set lo up && ip -n "$NSB" link set lo up &&
	ip -n "$NSA" addr add "$IPA/24" dev "$TAPA" && ip -n "$NSB" addr add "$IPB/24" dev "$TAPB" &&
	ip -n "$NSA" link set "$TAPA" up && ip -n "$NSB" link set "$TAPB" up ||
	{ fail "taps into the namespaces" "ip failed"; finish; }
pass "tap hosts $TAPA ($IPA) and $TAPB ($IPB) in their namespaces"

# stream_link ADDR [SETUP]: the socat + ssh + socat pipe over ADDR, as a
# command; with SETUP, the far side waits that many seconds before it
# reaches B (a slow login: A's frames wait in the pipe meanwhile).
# socat 1.7.4 reads a ':' in EXEC's command as its own separator unless
# the command is quoted for socat itself (the single quotes it is given).
stream_link() {
	local far="socat STDIO UNIX-CONNECT:$PB/stream"
	[ $# -gt 1 ] && far="sleep $2; $far"
	STREAM_LINK=(socat "UNIX-CONNECT:$PA/stream" "EXEC:'${SSH[*]} root@$1 $far'")
}
# ping_ok FILE N: FILE is a ping summary with N sent, N received, 0 % loss.
ping_ok() { grep -Eq "^$2 packets transmitted, $2 received, 0% packet loss" "$1"; }
# echos NS: the echo requests NS's kernel has received.
echos() { ip netns exec "$1" nstat -az IcmpInEchos | awk '$1 == "IcmpInEchos" { print $2 }'; }

# --- link 1 over 127.0.0.2 ---------------------------------------------------------
stream_link "$ADDR1"
bg "${STREAM_LINK[@]}"
L1=$LASTPID
check_within "link 1 (socat, ssh to $ADDR1, socat) joins A and B" 10 \
	"[ \"\$(links_of '$PA')\" = 1 ] && [ \"\$(links_of '$PB')\" = 1 ]" \
	eval "show_links '$PA'; show_links '$PB'; tail -n 3 '$SCRATCH/bg.log'" || finish
check_eq "A/links/1: transport stream, the local socat's pid" "stream $L1" \
	"$(stat_key "$PA/links/1/stats" transport) $(stat_key "$PA/links/1/stats" pid)"
R1=$(stat_key "$PB/links/1/stats" pid)
check_eq "B/links/1: transport stream, a socat under sshd" "stream socat" \
	"$(stat_key "$PB/links/1/stats" transport) $(cat "/proc/$R1/comm" 2>/dev/null)"
S1=$(pgrep -P "$L1" -x ssh | head -n 1)
ip netns exec "$NSA" ping -c 3 -i 0.2 -W 2 "$IPB" >"$SCRATCH/ping1" 2>&1
if ping_ok "$SCRATCH/ping1" 3; then
	pass "ping A -> B through link 1"
else
	fail "ping A -> B through link 1" "$(grep -E 'transmitted|rror' "$SCRATCH/ping1" | tr '\n' ' ')"
fi

# --- multifs handoff to the second path, under the ping flood ------------------------
COUNT=1600
E0=$(echos "$NSB")
ip netns exec "$NSA" ping -i 0.005 -c $COUNT -W 2 "$IPB" >"$SCRATCH/ping2" 2>&1 &
PING=$!
track "$PING"
sleep 1 # a pace: link 1 alone for a second
# A login that takes 2 s, twice the duplicate window: A's frames wait in
# the new pipe that long before they reach B, behind link 1's copies.
stream_link "$ADDR2" 2
timeout 40 "$MULTIFS" handoff --overlap 1s "$PA" 1 -- "${STREAM_LINK[@]}" \
	>"$SCRATCH/handoff.out" 2>"$SCRATCH/handoff.err"
RC=$?
note "multifs handoff: $(cat "$SCRATCH/handoff.out") $(head -c 300 "$SCRATCH/handoff.err")"
check_eq "multifs handoff A 1 -- socat ... ssh $ADDR2 ... exits 0" 0 "$RC"
check "it found the new link (socat's) and closed link 1" grep -q '^new=2 closed=1 ' "$SCRATCH/handoff.out"
check_exits "link 1's local socat exits" "$L1" 5
check_within "link 1's ssh client exits" 5 "! alive ${S1:-0}" echo "ssh $S1 still running"
check_within "link 1's remote socat exits" 5 "! alive ${R1:-0}" echo "socat $R1 still running"
check_links "B's side of link 1 leaves B/links" "$PB" 2 5
check_links "A/links after the hand-off" "$PA" 2 1

if wait_exit "$PING" 20; then
	note "ping: $(grep transmitted "$SCRATCH/ping2")"
else
	fail "ping -c $COUNT ends" "still running after 20 s"
fi
if ping_ok "$SCRATCH/ping2" $COUNT; then
	pass "hand-off: $COUNT pings, $COUNT received, no DUP!, 0% packet loss"
else
	fail "hand-off: $COUNT pings, no DUP!, 0% packet loss" "$(grep transmitted "$SCRATCH/ping2")"
fi
check_eq "no DUP! at A's host" 0 "$(grep -c 'DUP!' "$SCRATCH/ping2")"
check_eq "B's host received each echo request once (IcmpInEchos)" "$COUNT" "$(($(echos "$NSB") - E0))"
for side in "$PA" "$PB"; do
	d=$(stat_key "$side/stats" dup_dropped)
	check "$(basename "$side"): the overlap's copies were dropped, not delivered (dup_dropped $d)" [ "${d:-0}" -gt 0 ]
done

rx0=$(stat_key "$PA/links/2/stats" rx_packets)
ip netns exec "$NSA" ping -c 5 -i 0.1 -W 2 "$IPB" >"$SCRATCH/ping3" 2>&1
rx1=$(stat_key "$PA/links/2/stats" rx_packets)
if ping_ok "$SCRATCH/ping3" 5 && [ "${rx1:-0}" -ge $((${rx0:-0} + 5)) ]; then
	pass "ping through link 2 alone: no loss, the replies over link 2 (rx_packets +$((rx1 - rx0)))"
else
	fail "ping through link 2 alone" "$(grep transmitted "$SCRATCH/ping3"); rx_packets $rx0 -> $rx1"
fi
check_log_clean "no error in A's log" "$SCRATCH/A.log"
check_log_clean "no error in B's log" "$SCRATCH/B.log"
finish
