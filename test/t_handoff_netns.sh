#!/bin/bash
# t_handoff_netns.sh: the README's hand-off walk-through with real taps in two
# network namespaces: ping works through link 1, shows no duplicates once link 2
# is up (both multilinks suppress them: dedup, on by default; dedup=off is
# t_dedup's), and loses nothing while link 1 is closed under 100 pings a second.
# Addresses are link-local (169.254.X.0/24) and live only in namespaces this
# test creates.
. "$(dirname "$0")/lib.sh"

P1=$SCRATCH/vm1
P2=$SCRATCH/vm2
NSA=mft$$a
NSB=mft$$b
TAPA=mft$$ta
TAPB=mft$$tb
NET=169.254.$(($$ % 250 + 1))
IPA=$NET.1
IPB=$NET.2

start_multifs "$P1" || finish
start_multifs "$P2" || finish

# The hosts: a vde_plug per namespace, each making a tap there.
netns_host "$NSA" "$TAPA" "$P1/host" "$IPA" || finish
HA=$NSPID
netns_host "$NSB" "$TAPB" "$P2/host" "$IPB" || finish
HB=$NSPID
check_stat "vm1 host is the namespace's vde_plug" "$P1/host/stats" pid "$HA" 3
check_stat "vm2 host is the namespace's vde_plug" "$P2/host/stats" pid "$HB" 3

# ping_a ARGS...: ping IPB from namespace A.
ping_a() { ip netns exec "$NSA" ping "$@" "$IPB"; }

# --- link 1 -----------------------------------------------------------------------
bg vde_plug "$P1" "$P2"
L1=$LASTPID
wait_for "[ -d '$P1/links/1' ] && [ -d '$P2/links/1' ]" 2 ||
	fail "link 1 joins vm1 and vm2" "vm1 '$(links_of "$P1")' vm2 '$(links_of "$P2")'"
ping_a -c 3 -i 0.2 -W 2 >"$SCRATCH/ping1" 2>&1
if grep -q ' 3 received, 0% packet loss' "$SCRATCH/ping1"; then
	pass "ping through link 1"
else
	fail "ping through link 1" "$(grep -E 'transmitted|rror' "$SCRATCH/ping1" | tr '\n' ' ')"
fi

# --- link 2: duplicates, suppressed --------------------------------------------------
bg vde_plug "$P1" = vde_plug "$P2"
L2=$LASTPID
check_within "link 2 joins: ls links shows 1 2 on both" 2 \
	"[ \"\$(links_of '$P1')\" = '1 2' ] && [ \"\$(links_of '$P2')\" = '1 2' ]" ls "$P1/links" "$P2/links"
ping_a -c 5 -i 0.2 -W 2 >"$SCRATCH/ping2" 2>&1
dups=$(grep -c 'DUP!' "$SCRATCH/ping2")
if [ "$dups" = 0 ] && grep -q ' 5 received, 0% packet loss' "$SCRATCH/ping2"; then
	pass "ping with two links: 5 received, no DUP!s"
else
	fail "ping with two links: 5 received, no DUP!s" "$dups DUP!s; $(grep transmitted "$SCRATCH/ping2")"
fi
# The requests' copies at vm2, the replies' at vm1.
check "vm1 and vm2 each suppressed duplicates (dup_dropped: $(stat_key "$P1/stats" dup_dropped), $(stat_key "$P2/stats" dup_dropped))" \
	test "$(stat_key "$P1/stats" dup_dropped)" -gt 0 -a "$(stat_key "$P2/stats" dup_dropped)" -gt 0

# --- the hand-off under 100 pings a second ------------------------------------------
ip netns exec "$NSA" ping -i 0.01 -c 400 -W 2 "$IPB" >"$SCRATCH/ping3" 2>&1 &
PING=$!
track "$PING"
sleep 1.5 # a pace: link 1 carries the flood for 1.5 s before the close
close_link "$P1/links/1/close" "echo 1 > vm1/links/1/close during the ping flood"
exits_after_close "$L1" "link 1's vde_plug"
if wait_exit "$PING" 20; then
	wait "$PING"
	note "ping: $(grep transmitted "$SCRATCH/ping3")"
else
	fail "ping -c 400 ends" "still running after 20 s"
fi
if grep -Eq '^400 packets transmitted, 400 received, 0% packet loss' "$SCRATCH/ping3" && ! grep -q 'DUP!' "$SCRATCH/ping3"; then
	pass "hand-off: 400 pings, 400 received, 0% packet loss, no DUP!s"
else
	fail "hand-off: 400 pings, 0% packet loss, no DUP!s" "$(grep -c 'DUP!' "$SCRATCH/ping3") DUP!s; $(grep transmitted "$SCRATCH/ping3")"
fi
check_eq "vm1 links after the hand-off" 2 "$(links_of "$P1")"
check_eq "vm2 links after the hand-off" 2 "$(links_of "$P2")"
ping_a -c 3 -i 0.2 -W 2 >"$SCRATCH/ping4" 2>&1
if grep -q ' 3 received, 0% packet loss' "$SCRATCH/ping4" && ! grep -q 'DUP!' "$SCRATCH/ping4"; then
	pass "ping through link 2 alone: no loss, no duplicates"
else
	fail "ping through link 2 alone: no loss, no duplicates" "$(grep -c 'DUP!' "$SCRATCH/ping4") DUP!s; $(grep transmitted "$SCRATCH/ping4")"
fi
check "link 2's vde_plug still runs" alive "$L2"

# --- stopping while the hosts still run inside their namespaces -----------------------
# `ip netns exec` gives each host its own mount namespace, holding a copy of
# the mounts; stopping must still end every peer and the daemon.
D1=$(daemon_pid "$P1")
D2=$(daemon_pid "$P2")
kill -TERM "$D1"
if wait_exit "$D1" 3; then
	pass "vm1 stops on SIGTERM while its host runs in $NSA"
else
	fail "vm1 stops on SIGTERM while its host runs in $NSA" "daemon still runs after 3 s (mounted: $(is_mounted "$P1" && echo yes || echo no), host vde_plug alive: $(alive "$HA" && echo yes || echo no))"
fi
check_exits "SIGTERM: vm1's host vde_plug in $NSA exited" "$HA" 2
check_fails "SIGTERM: vm1's socket dir gone" test -e "$(sockdir_of "$P1")"
fusermount -u "$P2"
if wait_exit "$D2" 3; then
	pass "vm2 stops on fusermount -u while its host runs in $NSB"
else
	fail "vm2 stops on fusermount -u while its host runs in $NSB" "daemon still runs after 3 s (host vde_plug alive: $(alive "$HB" && echo yes || echo no))"
fi
check_exits "fusermount -u: vm2's host vde_plug in $NSB exited" "$HB" 2
check_fails "fusermount -u: vm2's socket dir gone" test -e "$(sockdir_of "$P2")"
check_exits "link 2's vde_plug exited once both ends stopped" "$L2" 2

finish
