#!/bin/bash
# t_dedup.sh: duplicate suppression towards the host, and idle_ms.
#
# (a) Frames: a far multilink F whose host (vdeprobe send) reaches
#     multilink M over two vde_plug links, so every frame comes to M twice.
#     With dedup (the default) M's host (vdeprobe recv) gets each frame
#     once, and M counts the other copies (rx_dup_dropped per link, the
#     root's dup_dropped); with dedup=off (here through a multi:// URL) it
#     gets each twice and counts none.
# (b) Ping: two network namespaces behind two multilinks, a hand-off from
#     link 1 to link 2 under 100 pings a second (link 2 joins, then link 1
#     is closed through its close file): with dedup on both, 0% loss and
#     no DUP! line; with dedup=off on both, DUP!s.
# (c) idle_ms: growing on a quiet link and on a quiet host, small on a
#     busy link, growing again once it is quiet.
# Addresses are link-local (169.254.X.0/24), inside namespaces this test
# makes.
. "$(dirname "$0")/lib.sh"

# field LINE KEY: the value of KEY=value in a vdeprobe result line.
field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# sum_links PATH KEY: the sum of KEY over PATH's open links.
sum_links() {
	local s=0 id
	for id in $(links_of "$1"); do s=$((s + $(stat_key "$1/links/$id/stats" "$2"))); done
	echo "$s"
}

# start_url PATH OPTS: a daemonized multifs on multi://PATH[OPTS], tracked.
start_url() {
	if "$MULTIFS" --log-file "$SCRATCH/$(basename "$1").log" "multi://$1[$2]"; then
		track_mount "$1" "$(daemon_pid "$1")"
		return 0
	fi
	fail "start multifs multi://$1[$2]" "exit status $?"
	return 1
}

# =============================================================================
# (a) frames over two links

COUNT=3000
# frames NAME F M DUPS_WANTED: F's host sends COUNT frames; M's host must get
# each once (DUPS_WANTED 0) or twice (DUPS_WANTED = COUNT).
frames() {
	local name=$1 f=$2 m=$3 want=$4 r out=$SCRATCH/$1.out res rx dd tx
	bg vde_plug "$m" "$f"
	bg vde_plug "$m" = vde_plug "$f"
	check_links "$name: two links join M" "$m" "1 2" 3
	check_links "$name: two links join F" "$f" "1 2" 3
	rm -f "$SCRATCH/$name.ready"
	"$VDEPROBE" recv -dir "$m/host" -count "$COUNT" -idle 3s -max 30s -ready "$SCRATCH/$name.ready" >"$out" 2>&1 &
	r=$!
	track "$r"
	wait_for "[ -e '$SCRATCH/$name.ready' ]" 3 || fail "$name: vdeprobe recv joins M's host" "$(cat "$out")"
	"$VDEPROBE" send -dir "$f/host" -count "$COUNT" -rate 3000 >"$SCRATCH/$name.send" 2>&1
	check_eq "$name: vdeprobe send exit status" 0 "$?"
	if wait_exit "$r" 35; then
		wait "$r"
		check_eq "$name: vdeprobe recv exit status (nothing lost or corrupt)" 0 "$?"
	else
		fail "$name: vdeprobe recv ends" "still running"
	fi
	res=$(grep '^received=' "$out" | tail -n 1)
	note "$name: $res"
	check_eq "$name: every frame, intact" "$COUNT 0 0" "$(field "$res" unique) $(field "$res" lost) $(field "$res" corrupt)"
	check_eq "$name: duplicates at M's host" "$want" "$(field "$res" dups)"
	# The counters: what the links brought is what the host got plus the
	# copies dropped, and the root's count is the links' sum. The receiver
	# has left: its counters are in its closing log line.
	check_stat "$name: M's host (the receiver) detached" "$m/host/stats" attached no 3
	tx=$(grep 'msg="host detached"' "$SCRATCH/$(basename "$m").log" | tail -n 1 | sed -n 's/.* tx_packets=\([0-9]*\).*/\1/p')
	check_eq "$name: M's host got $((COUNT + want)) frames (tx_packets at its detach)" $((COUNT + want)) "$tx"
	rx=$(sum_links "$m" rx_packets)
	dd=$(stat_key "$m/stats" dup_dropped)
	check_eq "$name: links' rx_packets ($rx) = host's tx_packets + dup_dropped" "$rx" $((${tx:-0} + dd))
	check_eq "$name: dup_dropped = the links' rx_dup_dropped" "$dd" "$(sum_links "$m" rx_dup_dropped)"
	if [ "$want" = 0 ]; then
		# Each frame came twice unless a link lost one on the way.
		if [ "$dd" -gt $((COUNT * 9 / 10)) ] && [ "$dd" -le "$COUNT" ]; then
			pass "$name: M dropped the second copies (dup_dropped $dd of $COUNT)"
		else
			fail "$name: M drops the second copies" "dup_dropped $dd of $COUNT"
		fi
	else
		check_eq "$name: dedup=off drops nothing (dup_dropped)" 0 "$dd"
	fi
	check_eq "$name: F's host's frames went to both links, none dropped" 0 "$(sum_links "$f" tx_dropped)"
}

F1=$SCRATCH/f1
M1=$SCRATCH/m1
start_multifs "$F1" || finish
start_multifs "$M1" || finish
frames "dedup default" "$F1" "$M1" 0

F2=$SCRATCH/f2
M2=$SCRATCH/m2
start_multifs "$F2" -o dedup=off || finish
start_url "$M2" "dedup=off/mode=0600" || finish
check "dedup=off in M's log" grep -q 'dedup=off' "$SCRATCH/m2.log"
frames "dedup=off" "$F2" "$M2" "$COUNT"

# =============================================================================
# (b) a ping hand-off between two namespaces

# replies FILE: how many replies a ping has printed so far.
replies() { grep -c 'icmp_seq=' "$1"; }

# handoff TAG OPTS: TAG names the run (a letter), OPTS the multilinks'
# -o. Leaves the ping's output in $SCRATCH/ping.TAG.
handoff() {
	local tag=$1 opts=$2 p1=$SCRATCH/vm1$1 p2=$SCRATCH/vm2$1 l1 l2 ping n0 out=$SCRATCH/ping.$1
	local nsa=mfd$$$1a nsb=mfd$$$1b net=169.254.$(($$ % 120 + 1))
	[ "$tag" = b ] && net=169.254.$(($$ % 120 + 121))
	start_multifs "$p1" -o "$opts" || return 1
	start_multifs "$p2" -o "$opts" || return 1
	netns_host "$nsa" "mfd$$$1ta" "$p1/host" "$net.1" || return 1
	netns_host "$nsb" "mfd$$$1tb" "$p2/host" "$net.2" || return 1
	bg vde_plug "$p1" "$p2"
	l1=$LASTPID
	check_within "$tag: link 1 joins vm1 and vm2" 3 "[ -d '$p1/links/1' ] && [ -d '$p2/links/1' ]" show_links "$p1"
	ip netns exec "$nsa" ping -i 0.01 -c 500 -W 2 "$net.2" >"$out" 2>&1 &
	ping=$!
	track "$ping"
	check_within "$tag: 50 pings answered through link 1" 5 "[ \$(replies '$out') -ge 50 ]" replies "$out"
	bg vde_plug "$p1" = vde_plug "$p2"
	l2=$LASTPID
	check_within "$tag: link 2 joins vm1 and vm2" 3 "[ \"\$(links_of '$p1')\" = '1 2' ] && [ \"\$(links_of '$p2')\" = '1 2' ]" show_links "$p1"
	n0=$(replies "$out")
	check_within "$tag: 50 more pings with both links up" 5 "[ \$(replies '$out') -ge $((n0 + 50)) ]" replies "$out"
	close_link "$p1/links/1/close" "$tag: echo 1 > vm1/links/1/close during the pings"
	exits_after_close "$l1" "$tag: link 1's vde_plug"
	if wait_exit "$ping" 15; then
		note "$tag ($opts): $(grep transmitted "$out")"
	else
		fail "$tag: ping -c 500 ends" "still running after 15 s"
	fi
	check_links "$tag: vm2's links after the hand-off: 2" "$p2" 2 2
	check "$tag: link 2's vde_plug still runs" alive "$l2"
	HANDOFF_DUPS=$(stat_key "$p2/stats" dup_dropped)/$(stat_key "$p1/stats" dup_dropped)
}

handoff a dedup=1s
if grep -Eq '^500 packets transmitted, 500 received, 0% packet loss' "$SCRATCH/ping.a" && ! grep -q 'DUP!' "$SCRATCH/ping.a"; then
	pass "dedup: 500 pings across the hand-off, 0% packet loss, no DUP! line"
else
	fail "dedup: 500 pings, 0% packet loss, no DUP! line" "$(grep -c 'DUP!' "$SCRATCH/ping.a") DUP!s ($(grep 'DUP!' "$SCRATCH/ping.a" | head -n 3 | cut -d' ' -f5 | tr '\n' ' ')); $(grep transmitted "$SCRATCH/ping.a")"
fi
# The requests' copies were dropped at vm2, the replies' at vm1.
if [[ $HANDOFF_DUPS =~ ^[1-9][0-9]*/[1-9][0-9]*$ ]]; then
	pass "dedup: vm2 and vm1 dropped the overlap's copies (dup_dropped $HANDOFF_DUPS)"
else
	fail "dedup: vm2 and vm1 drop the overlap's copies" "dup_dropped $HANDOFF_DUPS"
fi

handoff b dedup=off
dups=$(grep -c 'DUP!' "$SCRATCH/ping.b")
if [ "$dups" -gt 0 ] && grep -Eq '^500 packets transmitted, 500 received, \+[0-9]+ duplicates, 0% packet loss' "$SCRATCH/ping.b"; then
	pass "dedup=off: 500 pings, 0% packet loss, $dups DUP! lines (the reference's behaviour)"
else
	fail "dedup=off: DUP! lines while both links were up" "$dups DUP!s; $(grep transmitted "$SCRATCH/ping.b")"
fi
check_eq "dedup=off: nothing counted as a duplicate" "0/0" "$HANDOFF_DUPS"

# =============================================================================
# (c) idle_ms

Q=$SCRATCH/q
start_multifs "$Q" || finish
bg vde_plug "$Q/host" null://
check_stat "idle: a host attached" "$Q/host/stats" attached yes 3
bg vde_plug "$Q" null://
QUIET=$LASTPID
check_links "idle: the quiet link joins" "$Q" 1 3
T0=$(now_ms)
"$VDEPROBE" send -dir "$Q" -count 4000 -rate 1000 >"$SCRATCH/busy.out" 2>&1 &
BUSY=$!
track "$BUSY"
check_links "idle: the busy link joins" "$Q" "1 2" 3
check_within "idle: the quiet link's idle_ms passes 1000" 3 "[ \"\$(stat_key '$Q/links/1/stats' idle_ms)\" -ge 1000 ]" show_key "$Q/links/1/stats" idle_ms
q=$(stat_key "$Q/links/1/stats" idle_ms)
age=$(($(now_ms) - T0))
check "idle: a link that never sent: idle_ms ($q) is the time since it joined (at least $age ms less a second)" test "$q" -ge $((age - 1000))
# The busy link, sampled while it sends a frame a millisecond.
worst=0
for i in 1 2 3 4 5; do
	b=$(stat_key "$Q/links/2/stats" idle_ms)
	[ "${b:-99999}" -gt "$worst" ] && worst=${b:-99999}
	sleep 0.1
done
if alive "$BUSY" && [ "$worst" -lt 200 ]; then
	pass "idle: the busy link's idle_ms stays small (at most $worst in 5 reads)"
else
	fail "idle: the busy link's idle_ms stays under 200" "at most $worst; sender alive: $(alive "$BUSY" && echo yes || echo no)"
fi
h1=$(stat_key "$Q/host/stats" idle_ms)
check_within "idle: the quiet host's idle_ms grows" 2 "[ \"\$(stat_key '$Q/host/stats' idle_ms)\" -ge $((h1 + 300)) ]" show_key "$Q/host/stats" idle_ms
if wait_exit "$BUSY" 10; then
	wait "$BUSY"
	check_eq "idle: the busy sender's exit status" 0 "$?"
else
	fail "idle: the busy sender ends" "still running"
fi
# Its link has left with it; a link that sent, then went quiet, grows.
bg vde_plug "$Q" = vde_plug "$F1"
check_links "idle: a link between Q and F1 joins" "$Q" "1 3" 3
"$VDEPROBE" send -dir "$F1/host" -count 50 -rate 1000 >/dev/null 2>&1
check_within "idle: its frames arrived (rx_packets 50)" 2 "[ \"\$(stat_key '$Q/links/3/stats' rx_packets)\" -ge 50 ]" show_key "$Q/links/3/stats" rx_packets
i1=$(stat_key "$Q/links/3/stats" idle_ms)
check "idle: just after its frames idle_ms is small ($i1)" test "$i1" -lt 500
check_within "idle: then it grows past 700" 3 "[ \"\$(stat_key '$Q/links/3/stats' idle_ms)\" -ge 700 ]" show_key "$Q/links/3/stats" idle_ms
check "idle: the quiet vde_plug still runs" alive "$QUIET"

for l in "$SCRATCH"/*.log; do
	check_log_clean "no error in $(basename "$l")" "$l"
done
finish
