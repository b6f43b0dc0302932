#!/usr/bin/env bash
# t_peer_qemu_vhost_restart.sh: multifs restarted under a running QEMU
# whose vhost-user chardev reconnects (`-chardev socket,...,reconnect=1`)
# brings the guest's network back with nothing done inside the guest.
#
# The VM (t_peer_qemu's TCG guest, its NIC a vhost-user netdev on
# A/host/vhost-user) is the host of multilink A; a network namespace is a
# link of A (vde_plug A tap://). The guest pings the namespace 2500 times,
# 100 a second. Once pings flow, A is unmounted (the daemon ends) and
# started again on the same path; the namespace's vde_plug, which ended
# with the old daemon, joins the new one (that is outside the guest). Then:
# the new daemon's host/stats says attached, transport vhost-user and
# qemu's pid (QEMU reconnected by itself), it counts echo requests from
# the guest and replies to it, and the guest's own summary counts at least
# 300 more replies than it had before the restart (it got answers after
# it), with fewer lost than the restart's length explains (under 1500).
. "$(dirname "$0")/lib.sh"
. "$ROOT/test/qemu/vhost_vm.sh"

T_START=$(now_ms)
vhost_vm_setup

A=$SCRATCH/A
NS=mfr$$
TAP=mfr$$t
NET=169.254.$(($$ % 100 + 1))
COUNT=2500

start_multifs "$A" || finish
netns_host "$NS" "$TAP" "$A" "$NET.1" || finish

start_vhost_vm r 2500 0.01 "$NET.2/24" "$NET.1" "52:54:00:4d:56:11" "$A/host/vhost-user" ",reconnect=1"
vm_ready r || finish
QPID=$VM_PID
check_stat "A/host/stats: QEMU attached" "$A/host/stats" attached yes 3
vm_wait r PING-START 10 "VM r starts its $COUNT pings"
check_within "pings flow (A/host/stats tx_packets past 100)" 15 \
	"[ \"\$(stat_key '$A/host/stats' tx_packets)\" -ge 100 ]" show_key "$A/host/stats" tx_packets

# The restart: everything A had to the guest so far is in the old
# daemon's counters.
OLD_PID=$(daemon_pid "$A")
BEFORE=$(stat_key "$A/host/stats" tx_packets)
t0=$(now_ms)
check "unmount A (the daemon ends)" fusermount -u "$A"
check_exits "the old daemon exits" "$OLD_PID" 5
check_exits "the namespace's vde_plug (a link of A) ends with it" "$NSPID" 5
check "QEMU still runs with the backend gone" alive "$QPID"
start_multifs "$A" || finish
note "A restarted $(($(now_ms) - t0)) ms after the unmount; the old daemon had sent $BEFORE frames to the guest"
join_ns "$NS" "$TAP" "$A" "$NET.1" || finish
check_stat "the new daemon: QEMU attached again by itself (reconnect=1)" "$A/host/stats" attached yes 10
check_eq "the new daemon: transport vhost-user" vhost-user "$(stat_key "$A/host/stats" transport)"
check_eq "the new daemon: the host is the same QEMU" "$QPID" "$(stat_key "$A/host/stats" pid)"
check_within "the new daemon gets echo requests from the guest (rx_packets >= 100)" 20 \
	"[ \"\$(stat_key '$A/host/stats' rx_packets)\" -ge 100 ]" show_key "$A/host/stats" rx_packets
check_within "and hands the guest the replies (tx_packets >= 100)" 10 \
	"[ \"\$(stat_key '$A/host/stats' tx_packets)\" -ge 100 ]" show_key "$A/host/stats" tx_packets

vm_pinged r
s=$(ping_summary r)
got=$(ping_received r)
note "VM r ping: $s; $(marker r LOST); $(marker r ICMP); new daemon's host/stats: $(tr '\n' ' ' <"$A/host/stats")"
if [ "${got:-0}" -ge $((BEFORE + 300)) ] 2>/dev/null; then
	pass "the guest got $got replies, at least 300 more than the $BEFORE frames sent to it before the restart"
else
	fail "the guest got replies after the restart" "received ${got:-?}, sent to it before the restart: $BEFORE"
fi
if [ "${got:-0}" -ge $((COUNT - 1500)) ]; then
	pass "the guest lost $((COUNT - got)) of $COUNT pings across the restart (< 1500)"
else
	fail "the guest lost fewer than 1500 pings across the restart" "received ${got:-?} of $COUNT"
fi
vm_done r
check_stat "A/host/stats: detached once qemu exited" "$A/host/stats" attached no 3

note "script time $(($(now_ms) - T_START)) ms"
finish
