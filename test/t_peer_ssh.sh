#!/bin/bash
# t_peer_ssh.sh: the seed's own hand-off with real ssh. Two sshd of the
# test's own (key-only, their own config) listen on 127.0.0.2 and
# 127.0.0.3; two multifs, A and B, each have a network namespace as host.
# Link 1 is `vde_plug -- A = ssh ...127.0.0.2... vde_plug B`, link 2 the
# same over 127.0.0.3. Under 100 pings a second from A's namespace to B's,
# link 2 comes up (both carry every frame; each multilink gives its host the
# first copy only: no DUP!), link 1 is closed through
# A/links/1/close: no ping is lost, link 1's local vde_plug and its ssh
# client exit, B's side of link 1 leaves B/links (the remote vde_plug exits
# once its ssh session ends), and link 2 alone still carries the traffic.
# It also records the descriptions both ends send, and that without `--`
# vde_plug takes ssh's options as its own.
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

. "$(dirname "$0")/sshd_pair.sh"

# --- without `--`, vde_plug parses ssh's options ----------------------------------
out=$(timeout 5 vde_plug "$SCRATCH/none" = "${SSH[@]}" "root@$ADDR1" true 2>&1)
rc=$?
if [ "$rc" != 0 ] && [ "$rc" != 124 ] && printf '%s' "$out" | grep -q "invalid option -- 'F'"; then
	pass "without --, vde_plug refuses ssh's -F as its own option (exit $rc)"
else
	fail "without --, vde_plug refuses ssh's -F" "exit $rc: $(printf '%s' "$out" | head -n 1)"
fi

# --- the multilinks and their namespace hosts (as t_handoff_netns) ---------------
start_multifs "$PA" || finish
start_multifs "$PB" || finish

netns_host "$NSA" "$TAPA" "$PA/host" "$IPA" || finish
netns_host "$NSB" "$TAPB" "$PB/host" "$IPB" || finish

# ssh_link ADDR: start `vde_plug -- A = ssh ... root@ADDR vde_plug B`; its
# pid in $LASTPID.
ssh_link() { bg vde_plug -- "$PA" = "${SSH[@]}" "root@$1" vde_plug "$PB"; }

# ssh_child PID: the ssh client vde_plug PID runs.
ssh_child() { pgrep -P "$1" -x ssh | head -n 1; }

# ssh_from I: the client address sshd I logged for its last login (the
# kernel picks 127.0.0.1 as the source towards 127.0.0.2 and .3).
ssh_from() { sed -n 's/^Accepted publickey for root from \([^ ]*\) port .*/\1/p' "$SCRATCH/sshd$1.log" | tail -n 1; }

# ping_ok FILE N: FILE is a ping summary with N sent, N received, 0 % loss.
ping_ok() { grep -Eq "^$2 packets transmitted, $2 received,.* 0% packet loss" "$1"; }

# --- link 1 over 127.0.0.2 ---------------------------------------------------------
t0=$(now_ms)
ssh_link "$ADDR1"
L1=$LASTPID
check_within "link 1 over ssh to $ADDR1 joins A and B" 10 \
	"[ \"\$(links_of '$PA')\" = 1 ] && [ \"\$(links_of '$PB')\" = 1 ]" \
	eval "show_links '$PA'; show_links '$PB'; tail -n 3 '$SCRATCH/bg.log'" || finish
note "link 1 listed on both sides $(($(now_ms) - t0)) ms after vde_plug started"
S1=$(ssh_child "$L1")
R1=$(stat_key "$PB/links/1/stats" pid)
check "link 1: vde_plug runs an ssh client (pid ${S1:-none})" test -n "$S1"
check "link 1: B's side is a vde_plug under sshd (pid ${R1:-none})" \
	test "$(cat "/proc/$R1/comm" 2>/dev/null)" = vde_plug
check_eq "link 1: A's side is the local vde_plug" "$L1" "$(stat_key "$PA/links/1/stats" pid)"

DA1=$(stat_key "$PA/links/1/stats" description)
DB1=$(stat_key "$PB/links/1/stats" description)
note "A/links/1 description: '$DA1'"
note "B/links/1 description: '$DB1'"
check_eq "A/links/1 description: the local vde_plug's" "vdeplug: user=root pid=$L1" "$DA1"
check_eq "B/links/1 description: the remote vde_plug's, with SSH=" \
	"vdeplug: user=root pid=$R1 SSH=$(ssh_from 1)" "$DB1"

ip netns exec "$NSA" ping -c 3 -i 0.2 -W 2 "$IPB" >"$SCRATCH/ping1" 2>&1
if ping_ok "$SCRATCH/ping1" 3; then
	pass "ping A -> B through link 1"
else
	fail "ping A -> B through link 1" "$(grep -E 'transmitted|rror' "$SCRATCH/ping1" | tr '\n' ' ')"
fi

# --- the hand-off under 100 pings a second ------------------------------------------
# 1600 pings 5 ms apart (iputils' -i 0.01 sends only about 61 a second
# here, -i 0.005 about 200): link 2 comes up after 1 s (ssh takes well
# under a second here, 4 s allowed), both carry for 1 s, then link 1 is
# closed; at least 1 s of pings is left for link 2 alone.
COUNT=1600
ip netns exec "$NSA" ping -D -i 0.005 -c $COUNT -W 2 "$IPB" >"$SCRATCH/ping2" 2>&1 &
PING=$!
track "$PING"
sleep 1 # a pace: link 1 alone for a second (above)
t0=$(now_ms)
ssh_link "$ADDR2"
L2=$LASTPID
L2_AT=$t0
check_within "link 2 over ssh to $ADDR2 joins: links 1 2 on A and B" 4 \
	"[ \"\$(links_of '$PA')\" = '1 2' ] && [ \"\$(links_of '$PB')\" = '1 2' ]" \
	eval "show_links '$PA'; show_links '$PB'; tail -n 3 '$SCRATCH/bg.log'"
note "link 2 listed on both sides $(($(now_ms) - t0)) ms after vde_plug started"
S2=$(ssh_child "$L2")
R2=$(stat_key "$PB/links/2/stats" pid)
DB2=$(stat_key "$PB/links/2/stats" description)
note "B/links/2 description: '$DB2'"
check_eq "B/links/2 description" "vdeplug: user=root pid=$R2 SSH=$(ssh_from 2)" "$DB2"
sleep 1 # the overlap: both links carry the pings for a second

close_link "$PA/links/1/close" "echo 1 > A/links/1/close during the ping flood"
exits_after_close "$L1" "link 1's local vde_plug"
check_within "link 1's ssh client exits" 5 "! alive $S1" echo "ssh $S1 still running"
note "link 1's ssh client gone $(($(now_ms) - CLOSED_AT)) ms after the close"
check_within "link 1's remote vde_plug exits" 5 "! alive $R1" echo "vde_plug $R1 still running"
check_links "B's side of link 1 leaves B/links" "$PB" 2 5
note "B/links reads '2' $(($(now_ms) - CLOSED_AT)) ms after the close"
check_links "A/links after the close" "$PA" 2 1

if wait_exit "$PING" 20; then
	note "ping: $(grep transmitted "$SCRATCH/ping2")"
	note "ping: $(grep rtt "$SCRATCH/ping2")"
else
	fail "ping -c $COUNT ends" "still running after 20 s"
fi
if ping_ok "$SCRATCH/ping2" $COUNT; then
	pass "hand-off: $COUNT pings, $COUNT received, 0% packet loss"
else
	fail "hand-off: $COUNT pings, 0% packet loss" "$(grep transmitted "$SCRATCH/ping2")"
fi
ms=$(sed -n 's/^[0-9]* packets transmitted.*, time \([0-9]*\)ms$/\1/p' "$SCRATCH/ping2")
if [ -n "$ms" ] && [ $((COUNT * 1000)) -ge $((100 * ms)) ]; then
	pass "the pings went at 100/s or more ($((COUNT * 1000 / ms))/s)"
else
	fail "the pings went at 100/s or more" "$COUNT in ${ms:-?} ms"
fi
# -D stamps each reply with its arrival: every DUP! must fall between
# link 2's start and the close (plus 100 ms for replies already in flight).
read -r dups late first last <<<"$(awk -v from="$L2_AT" -v to="$CLOSED_AT" '
	/DUP!/ && match($0, /^\[[0-9.]+\]/) {
		t = int(substr($0, 2, RLENGTH - 2) * 1000)
		n++
		if (t < from || t > to + 100) bad++
		if (!f) f = t - from
		l = t - to
	} END { print n + 0, bad + 0, f + 0, l + 0 }' "$SCRATCH/ping2")"
note "DUP!s: $dups, the first ${first} ms after link 2 started, the last ${last} ms after the close"
# Both links carried every frame while they overlapped; each multilink gave
# its host the first copy only (duplicate suppression, the default), so ping
# saw no DUP!, and the copies it was spared are counted.
check_eq "no DUP! at either host (the duplicates were suppressed)" 0 "$dups"
for side in "$PA" "$PB"; do
	d=$(stat_key "$side/stats" dup_dropped)
	check "$(basename "$side"): the overlap's copies were dropped, not delivered (dup_dropped $d)" [ "${d:-0}" -gt 0 ]
done

rx0=$(stat_key "$PA/links/2/stats" rx_packets)
ip netns exec "$NSA" ping -c 5 -i 0.1 -W 2 "$IPB" >"$SCRATCH/ping3" 2>&1
rx1=$(stat_key "$PA/links/2/stats" rx_packets)
if ping_ok "$SCRATCH/ping3" 5 && ! grep -q 'DUP!' "$SCRATCH/ping3"; then
	pass "ping through link 2 alone: no loss, no duplicates"
else
	fail "ping through link 2 alone" "$(grep -c 'DUP!' "$SCRATCH/ping3") DUP!s; $(grep transmitted "$SCRATCH/ping3")"
fi
if [ "${rx1:-0}" -ge $((${rx0:-0} + 5)) ]; then
	pass "A/links/2 rx_packets grew by $((rx1 - rx0)) (the replies came over link 2)"
else
	fail "A/links/2 rx_packets grew by 5 or more" "$rx0 -> $rx1"
fi
check "link 2's local vde_plug still runs" alive "$L2"
check "link 2's ssh client still runs" alive "${S2:-0}"
check "link 2's remote vde_plug still runs" alive "${R2:-0}"

finish
