#!/usr/bin/env bash
# t_peer_qemu_vhost.sh: a real QEMU as multifs's host through vhost-user
# (the TCG busybox guest of t_peer_qemu, its NIC `-netdev vhost-user` on
# PATH/host/vhost-user, guest RAM a shared memfd).
#
# A. Hand-off. The VM is the host of multilink A; a network namespace is
#    the host of multilink B (vde_plug B/host tap://); link 1 is
#    `vde_plug A B`. The guest pings the namespace 3000 times at about 200
#    a second and, 2 s into it, `multifs handoff A 1 -- vde_plug A B`
#    replaces link 1. The guest's own summary must say 0% loss and no
#    duplicates; handoff exits 0, link 1 is gone and link 2 alone remains;
#    A/host/stats says transport vhost-user, qemu's pid, and counted the
#    frames both ways with nothing dropped towards the guest during the
#    pings.
# B. Restart of QEMU. A VM attached to A and pinging is killed with
#    SIGKILL: A/host/stats says attached: no within 3 s. A new QEMU on the
#    same entry attaches (its pid in host/stats) and its 500 pings all come
#    back.
# Addresses are link-local (169.254.X.0/24) inside a namespace this test
# makes and the guests; qemu has no other network.
. "$(dirname "$0")/lib.sh"
. "$ROOT/test/qemu/vhost_vm.sh"

T_START=$(now_ms)
vhost_vm_setup

A=$SCRATCH/A
B=$SCRATCH/B
NSB=mfv$$b
NET=169.254.$(($$ % 100 + 100))
COUNTA=3000
INTERVALA=0.005

start_multifs "$A" || finish
start_multifs "$B" || finish
check "A/host/vhost-user is a symlink to a listening socket" \
	test -L "$A/host/vhost-user" -a -S "$A/host/vhost-user"
netns_host "$NSB" "mfv$$tb" "$B/host" "$NET.1" || finish
bg vde_plug "$A" "$B"
L1=$LASTPID
check_within "link 1 (vde_plug A B) joins A and B" 3 \
	"[ \"\$(links_of '$A')\" = 1 ] && [ \"\$(links_of '$B')\" = 1 ]" show_links "$A"

# ================================================================================
# A. hand-off under the guest's ping flood
start_vhost_vm a "$COUNTA" "$INTERVALA" "$NET.2/24" "$NET.1" "52:54:00:4d:56:01" "$A/host/vhost-user"
vm_ready a || finish
check_stat "A/host/stats: attached" "$A/host/stats" attached yes 3
check_eq "A/host/stats: transport vhost-user" vhost-user "$(stat_key "$A/host/stats" transport)"
check_eq "A/host/stats: pid is qemu's" "$VM_PID" "$(stat_key "$A/host/stats" pid)"
note "A/host/stats: $(tr '\n' ' ' <"$A/host/stats")"

vm_wait a PING-START 10 "VM a starts its $COUNTA pings"
# Frames that came before the guest's driver had posted receive buffers
# (its boot) are dropped and counted; none may be during the pings.
TXD0=$(stat_key "$A/host/stats" tx_dropped)
sleep 2 # a pace: 2 s of pings through link 1 alone
t0=$(now_ms)
line=$(timeout 40 "$MULTIFS" handoff --timeout 10s "$A" 1 -- vde_plug "$A" "$B" 2>"$SCRATCH/handoff.err")
RC=$?
note "multifs handoff took $(($(now_ms) - t0)) ms: $line $(tr '\n' ' ' <"$SCRATCH/handoff.err")"
check_eq "multifs handoff A 1 -- vde_plug A B: exit status" 0 "$RC"
NEW=$(printf '%s\n' "$line" | tr ' ' '\n' | sed -n 's/^new=//p')
check_eq "the new link is link 2" 2 "$NEW"
CMD=$(stat_key "$A/links/2/stats" pid)
[ -n "$CMD" ] && track "$CMD"
check_exits "link 1's vde_plug exits" "$L1" 3
check_links "A/links after the hand-off: 2" "$A" 2 3
check_links "B/links after the hand-off: 2" "$B" 2 3
if [ -z "$(marker a PING-END)" ]; then
	pass "the guest was still pinging when the hand-off ended"
else
	fail "the guest was still pinging when the hand-off ended" "its ping ended first: make COUNTA larger"
fi
vm_pinged a
check_vhost_summary a "$COUNTA"
stat_ge "A/host/stats: the guest's echo requests counted" "$A/host/stats" rx_packets "$COUNTA"
stat_ge "A/host/stats: the replies to the guest counted" "$A/host/stats" tx_packets "$COUNTA"
check_eq "A/host/stats: nothing dropped on the way to the guest during its pings (tx_dropped as at their start)" "$TXD0" "$(stat_key "$A/host/stats" tx_dropped)"
vm_done a
check_stat "A/host/stats: detached once qemu exited" "$A/host/stats" attached no 3

# ================================================================================
# B. QEMU killed with SIGKILL, and a new one
start_vhost_vm k1 20000 0.01 "$NET.3/24" "$NET.1" "52:54:00:4d:56:02" "$A/host/vhost-user"
vm_ready k1 || finish
check_stat "A/host/stats: the first QEMU attached" "$A/host/stats" attached yes 3
check_eq "A/host/stats: pid is the first QEMU's" "$VM_PID" "$(stat_key "$A/host/stats" pid)"
rx=$(stat_key "$A/host/stats" rx_packets)
check_within "frames flow from the first QEMU (rx_packets past $((rx + 50)))" 10 \
	"[ \"\$(stat_key '$A/host/stats' rx_packets)\" -ge $((rx + 50)) ]" show_key "$A/host/stats" rx_packets
kill -KILL "$VM_PID"
check_exits "the first QEMU is gone after SIGKILL" "$VM_PID" 5
check_stat "A/host/stats: attached: no within 3 s of the SIGKILL" "$A/host/stats" attached no 3
check "A is still mounted and answers" test -S "$A/ctl" -a -r "$A/stats"

start_vhost_vm k2 500 0.005 "$NET.4/24" "$NET.1" "52:54:00:4d:56:03" "$A/host/vhost-user"
vm_ready k2 || finish
check_stat "A/host/stats: the new QEMU attached" "$A/host/stats" attached yes 3
check_eq "A/host/stats: pid is the new QEMU's" "$VM_PID" "$(stat_key "$A/host/stats" pid)"
vm_pinged k2
check_vhost_summary k2 500
vm_done k2
check_stat "A/host/stats: detached once the new QEMU exited" "$A/host/stats" attached no 3
check_log_clean "A's log has no error" "$SCRATCH/A.log"

note "script time $(($(now_ms) - T_START)) ms"
finish
