#!/usr/bin/env bash
# t_taphost.sh: --host tap://NAME, multifs opening a tap device itself as
# the host. Two multilinks with their taps moved into two network
# namespaces, one link between them: ping works both ways, host/stats says
# transport: tap, a vde-2 host is refused while the tap holds the slot, and
# the tap goes away with the daemon.
. "$(dirname "$0")/lib.sh"

NA=mfth$$a
NB=mfth$$b
TA=mfta$$
TB=mftb$$
A=$SCRATCH/A
B=$SCRATCH/B
ip netns add "$NA" && track_netns "$NA"
ip netns add "$NB" && track_netns "$NB"

start_multifs "$A" --host "tap://$TA" || finish
start_multifs "$B" --host "tap://$TB" || finish
check_eq "host/stats: transport tap" "tap" "$(stat_key "$A/host/stats" transport)"
check_eq "host/stats: description names the tap" "tap://$TA" "$(stat_key "$A/host/stats" description)"
check_eq "root stats: host attached" "attached" "$(stat_key "$A/stats" host)"

ip link set "$TA" netns "$NA"
ip link set "$TB" netns "$NB"
ip -n "$NA" addr add 169.254.91.1/24 dev "$TA"
ip -n "$NB" addr add 169.254.91.2/24 dev "$TB"
ip -n "$NA" link set "$TA" up
ip -n "$NB" link set "$TB" up

bg vde_plug "$A" "$B"
check_within "a vde_plug links A and B" 3 "[ -d '$A/links/1' ] && [ -d '$B/links/1' ]" eval "show_links '$A'; show_links '$B'"
check "ping A -> B through the tap hosts" ip netns exec "$NA" ping -c 5 -i 0.1 -W 2 169.254.91.2
check "ping B -> A" ip netns exec "$NB" ping -c 3 -i 0.1 -W 2 169.254.91.1
rx=$(stat_key "$A/host/stats" rx_packets)
if [ "${rx:-0}" -gt 0 ]; then pass "A's tap host counted frames (rx_packets $rx)"; else fail "A's tap host counted frames" "rx_packets ${rx:-?}"; fi

timeout 3 vde_plug "$A/host" null:// >/dev/null 2>&1
RC=$?
if [ "$RC" -ne 0 ] && [ "$RC" -ne 124 ]; then pass "a vde-2 host is refused while the tap is the host"; else fail "a vde-2 host is refused" "exit $RC"; fi

fusermount -u "$A"
wait_for "! ip -n '$NA' link show '$TA'" 3
check_fails "the tap is gone with the daemon" ip -n "$NA" link show "$TA"

ERR=$("$MULTIFS" --host tap:// "$SCRATCH/bad" 2>&1)
RC=$?
check_eq "--host tap:// without a name: exit 2" 2 "$RC"
check_fails "nothing left behind" test -e "$SCRATCH/bad"

finish
