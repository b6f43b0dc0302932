#!/usr/bin/env bash
# t_peer_qemu_stream.sh: the TCG guest of t_peer_qemu.sh (the Debian cloud
# kernel, test/qemu's busybox initramfs that pings) joined through QEMU's
# own `-netdev stream`, no VDE between it and multifs.
#
# A. The VM is the host of multilink A
#    (-netdev stream,server=off,addr.type=unix,addr.path=A/host/stream).
#    A network namespace is the host of B. Link 1 is a byte pipe between
#    the two stream entries (socat UNIX-CONNECT:A/stream
#    UNIX-CONNECT:B/stream); under the guest's ping flood,
#    `multifs handoff A 1 -- socat ...` (the same pipe again) takes over:
#    the guest's ping says 0% loss and no duplicates; link 1's socat exits;
#    A/host/stats says transport stream and qemu's pid.
# B. The VM joins multilink C as a link through C/stream: links/ lists it
#    (transport stream, qemu's pid), its pings to the namespace behind C's
#    host all come back, and it leaves links/ when qemu exits.
# Addresses are link-local (169.254.X.0/24), inside namespaces this test
# makes and the VMs' NICs; qemu has no other network.
. "$(dirname "$0")/lib.sh"

T_START=$(now_ms)
command -v socat >/dev/null || { fail "socat installed" "apt-get install socat"; finish; }
. "$(dirname "$0")/qemu_vm.sh"

# ================================================================================
# A. The VM as the host through A/host/stream, across a socat hand-off
A=$SCRATCH/A
B=$SCRATCH/B
NSB=mfs$$b
NETA=169.254.$(($$ % 100 + 100))
COUNTA=3000
INTERVALA=0.005

start_multifs "$A" || finish
start_multifs "$B" || finish
netns_host "$NSB" "mfs$$tb" "$B/host" "$NETA.1" || finish

bg socat "UNIX-CONNECT:$A/stream" "UNIX-CONNECT:$B/stream"
L1=$LASTPID
check_within "link 1 (socat between A/stream and B/stream) joins A and B" 3 \
	"[ \"\$(links_of '$A')\" = 1 ] && [ \"\$(links_of '$B')\" = 1 ]" show_links "$A"
check_eq "A/links/1/stats: transport stream, socat's pid" "stream $L1" \
	"$(stat_key "$A/links/1/stats" transport) $(stat_key "$A/links/1/stats" pid)"

start_vm a "$COUNTA" "$INTERVALA" "$NETA.2/24" "$NETA.1" "52:54:00:4d:53:01" \
	"stream,id=n0,server=off,addr.type=unix,addr.path=$A/host/stream"
vm_ready a || finish
check_eq "A/host/stats: transport stream" stream "$(stat_key "$A/host/stats" transport)"
check_eq "A/host/stats: pid is qemu's" "$VM_PID" "$(stat_key "$A/host/stats" pid)"

vm_wait a PING-START 10 "VM a starts its $COUNTA pings"
sleep 2 # a pace: 2 s of pings through link 1 alone
timeout 40 "$MULTIFS" handoff --overlap 2s "$A" 1 -- \
	socat "UNIX-CONNECT:$A/stream" "UNIX-CONNECT:$B/stream" >"$SCRATCH/handoff.out" 2>"$SCRATCH/handoff.err"
RC=$?
note "multifs handoff: $(cat "$SCRATCH/handoff.out") $(head -c 300 "$SCRATCH/handoff.err")"
check_eq "multifs handoff A 1 -- socat ... exits 0" 0 "$RC"
check "it names the new link 2 and closed 1" grep -q '^new=2 closed=1 ' "$SCRATCH/handoff.out"
check_exits "link 1's socat exits once link 1 is closed" "$L1" 3
check_links "A/links after the hand-off: 2" "$A" 2 3
check_links "B/links after the hand-off: 2 (B's side of link 1 gone)" "$B" 2 3
check_eq "A/links/2/stats: transport stream" stream "$(stat_key "$A/links/2/stats" transport)"
if [ -z "$(marker a PING-END)" ]; then
	pass "the guest's pings go on after the hand-off"
else
	fail "the guest's pings go on after the hand-off" "ended already: make COUNTA larger"
fi
vm_pinged a
check_summary a "$COUNTA" none
check_eq "A/host/stats: nothing dropped on the way to the VM" 0 "$(stat_key "$A/host/stats" tx_dropped)"
vm_done a
check_stat "A/host/stats: detached once qemu exited" "$A/host/stats" attached no 3

# ================================================================================
# B. The VM as a link through C/stream
C=$SCRATCH/C
NSC=mfs$$c
NETC=169.254.$(($$ % 100 + 1))
COUNTC=500

start_multifs "$C" || finish
netns_host "$NSC" "mfs$$tc" "$C/host" "$NETC.1" || finish
start_vm b "$COUNTC" 0.005 "$NETC.2/24" "$NETC.1" "52:54:00:4d:53:02" \
	"stream,id=n0,server=off,addr.type=unix,addr.path=$C/stream"
vm_ready b || finish
check_links "C/links lists the VM as link 1" "$C" 1 1
check_eq "C/links/1/stats: transport stream, qemu's pid, no description" "stream $VM_PID " \
	"$(stat_key "$C/links/1/stats" transport) $(stat_key "$C/links/1/stats" pid) $(stat_key "$C/links/1/stats" description)"
vm_pinged b
check_summary b "$COUNTC" none
check_eq "C/links/1/stats: nothing dropped on the way to the VM" 0 "$(stat_key "$C/links/1/stats" tx_dropped)"
vm_done b
check_links "C/links: the VM's link gone once qemu exited" "$C" "" 3

check_log_clean "no error in A's log" "$SCRATCH/A.log"
note "script time $(($(now_ms) - T_START)) ms"
finish
