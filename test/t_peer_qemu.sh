#!/usr/bin/env bash
# t_peer_qemu.sh: a real qemu VM (TCG, the Debian cloud kernel, a busybox
# initramfs from test/qemu/mkinitramfs.sh whose /init brings up virtio-net
# and pings with test/qemu/mfsping) as a peer of multifs.
#
# A. The VM is the host of multilink A (-netdev vde,sock=A/host). A network
#    namespace is the host of multilink B (vde_plug B/host tap:// inside
#    it). The VM pings the namespace at about 200 a second across a
#    hand-off: link 1 (vde_plug A B), then link 2 (vde_plug A = vde_plug B)
#    beside it, then `echo 1 > A/links/1/close`, all during one ping run.
#    The guest's own ping summary must say 0% packet loss and no duplicates
#    (the overlap's are suppressed by both multilinks: dedup, on by default,
#    counted in their dup_dropped); link 1's vde_plug exits and only
#    link 2 is left on both sides; A/host/stats names QEMU, qemu's pid, and
#    counted the frames.
# B. The VM joins multilink C as a link (-netdev vde,sock=C, no /host):
#    links/ lists it with QEMU's description and pid, its pings to the
#    namespace behind C's host all come back, and it leaves links/ when
#    qemu exits.
# Addresses are link-local (169.254.X.0/24), inside namespaces this test
# makes and the VMs' virtual NICs; qemu has no other network.
. "$(dirname "$0")/lib.sh"

T_START=$(now_ms)
. "$(dirname "$0")/qemu_vm.sh"

# ================================================================================
# A. The VM as the host, across a hand-off through the close file
A=$SCRATCH/A
B=$SCRATCH/B
NSB=mfq$$b
NETA=169.254.$(($$ % 100 + 100))
COUNTA=3000
INTERVALA=0.005

start_multifs "$A" || finish
start_multifs "$B" || finish
netns_host "$NSB" "mfq$$tb" "$B/host" "$NETA.1" || finish

bg vde_plug "$A" "$B"
L1=$LASTPID
check_within "link 1 (vde_plug A B) joins A and B" 3 \
	"[ \"\$(links_of '$A')\" = 1 ] && [ \"\$(links_of '$B')\" = 1 ]" show_links "$A"

start_vm a "$COUNTA" "$INTERVALA" "$NETA.2/24" "$NETA.1" "52:54:00:4d:46:01" "vde,id=n0,sock=$A/host"
vm_ready a || finish

DESC=$(stat_key "$A/host/stats" description)
note "qemu's description as the host: '$DESC'"
check_stat "A/host/stats: attached" "$A/host/stats" attached yes 1
if [[ $DESC =~ ^QEMU\  ]]; then pass "A/host/stats: the host is QEMU ('$DESC')"; else fail "A/host/stats: description QEMU ..." "'$DESC'"; fi
check_eq "A/host/stats: pid is qemu's" "$VM_PID" "$(stat_key "$A/host/stats" pid)"
check_eq "A/host/stats: transport vde" vde "$(stat_key "$A/host/stats" transport)"
RX0=$(stat_key "$A/host/stats" rx_packets)

vm_wait a PING-START 10 "VM a starts its $COUNTA pings"
sleep 2 # a pace: 2 s of pings through link 1 alone
bg vde_plug "$A" = vde_plug "$B"
L2=$LASTPID
check_within "link 2 (vde_plug A = vde_plug B) joins: links 1 2 on A and B" 3 \
	"[ \"\$(links_of '$A')\" = '1 2' ] && [ \"\$(links_of '$B')\" = '1 2' ]" ls "$A/links" "$B/links"
sleep 3 # the overlap: both links carry the pings for 3 s
if [ -z "$(marker a PING-END)" ] && alive "$VM_WRAP"; then
	pass "the guest is still pinging when link 1 is closed"
else
	fail "the guest is still pinging when link 1 is closed" "its ping already ended: make COUNTA larger"
fi
close_link "$A/links/1/close" "echo 1 > A/links/1/close during the guest's pings"
exits_after_close "$L1" "link 1's vde_plug"
check_links "A/links after the hand-off: 2" "$A" 2 2
check_links "B/links after the hand-off: 2 (B's side of link 1 gone)" "$B" 2 2
if [ -z "$(marker a PING-END)" ]; then
	pass "the guest's pings go on after the close"
else
	fail "the guest's pings go on after the close" "ended already"
fi

# A host's counters start at 0 when it attaches: every echo request came
# from the VM, every reply and duplicate went to it.
vm_pinged a
check_summary a "$COUNTA" none
check "A and B suppressed the overlap's duplicates (dup_dropped: $(stat_key "$A/stats" dup_dropped), $(stat_key "$B/stats" dup_dropped))" \
	test "$(stat_key "$A/stats" dup_dropped)" -gt 0 -a "$(stat_key "$B/stats" dup_dropped)" -gt 0
stat_ge "A/host/stats: the VM's echo requests counted, and more since ready" "$A/host/stats" rx_packets \
	$((COUNTA > RX0 ? COUNTA : RX0 + 1))
stat_ge "A/host/stats: replies and duplicates to the VM counted" "$A/host/stats" tx_packets $((COUNTA + SUM_DUPS))
check_eq "A/host/stats: nothing dropped on the way to the VM" 0 "$(stat_key "$A/host/stats" tx_dropped)"
vm_done a
check "link 2's vde_plug still runs" alive "$L2"
check_stat "A/host/stats: detached once qemu exited" "$A/host/stats" attached no 3

# ================================================================================
# B. The VM as a link
C=$SCRATCH/C
NSC=mfq$$c
NETC=169.254.$(($$ % 100 + 1))
COUNTC=500
INTERVALC=0.005

start_multifs "$C" || finish
netns_host "$NSC" "mfq$$tc" "$C/host" "$NETC.1" || finish
start_vm b "$COUNTC" "$INTERVALC" "$NETC.2/24" "$NETC.1" "52:54:00:4d:46:02" "vde,id=n0,sock=$C"
vm_ready b || finish
check_links "C/links lists the VM as link 1" "$C" 1 1
DESC=$(stat_key "$C/links/1/stats" description)
note "qemu's description as a link: '$DESC'"
if [[ $DESC =~ ^QEMU\  ]]; then pass "C/links/1/stats: the link is QEMU ('$DESC')"; else fail "C/links/1/stats: description QEMU ..." "'$DESC'"; fi
check_eq "C/links/1/stats: pid is qemu's" "$VM_PID" "$(stat_key "$C/links/1/stats" pid)"
check_eq "C/host/stats: the host is still the namespace's vde_plug" "vdeplug:" \
	"$(stat_key "$C/host/stats" description | cut -d' ' -f1)"
vm_pinged b
check_summary b "$COUNTC" none
stat_ge "C/links/1/stats: the VM's echo requests counted" "$C/links/1/stats" rx_packets "$COUNTC"
stat_ge "C/links/1/stats: the replies to the VM counted" "$C/links/1/stats" tx_packets "$COUNTC"
check_eq "C/links/1/stats: nothing dropped on the way to the VM" 0 "$(stat_key "$C/links/1/stats" tx_dropped)"
vm_done b
check_links "C/links: the VM's link gone once qemu exited" "$C" "" 3
stat_ge "C/stats: links_total counts the VM" "$C/stats" links_total 1

note "script time $(($(now_ms) - T_START)) ms"
finish
