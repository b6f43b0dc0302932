# shellcheck shell=bash
# vhost_vm.sh: the test VM of t_peer_qemu (TCG, the Debian cloud kernel,
# the busybox initramfs of mkinitramfs.sh that pings with mfsping) with its
# NIC on a vhost-user backend, for the vhost-user peer tests. Sourced after
# test/lib.sh.
#
#	vhost_vm_setup                      test/qemu_vm.sh: qemu, the initramfs (cached), the
#	                                    VM helpers (vm_ready, vm_pinged, vm_done,
#	                                    check_summary, stat_ge ...), or finish
#	start_vhost_vm NAME COUNT INTERVAL IP/LEN PEER MAC SOCKET [CHARDEV-OPTIONS]
#	check_vhost_summary NAME COUNT      COUNT sent and answered, 0 loss, no duplicates
#
# Guest RAM is a shared memfd the size of -m (vhost-user needs the backend
# to map it), the chardev connects to SOCKET (a multifs PATH/host/vhost-user).
#
# The NIC has no MSI-X (vectors=0, legacy INTx): Debian's QEMU 7.2 under
# TCG (no KVM here, so no irqfd) dies with SIGSEGV in
# msix_set_vector_notifiers, called from vhost_net_start, as soon as the
# guest's driver starts a vhost-user NIC that has MSI-X; seen the same with
# DPDK's testpmd as the backend, so it is QEMU's, not the backend's.

# vhost_vm_setup: the VM helpers every QEMU peer test shares.
vhost_vm_setup() {
	. "$ROOT/test/qemu_vm.sh"
	VM_PING_WAIT=90
}

# start_vhost_vm NAME COUNT INTERVAL IP/LEN PEER MAC SOCKET [CHARDEV-OPTIONS]:
# start_vm with the NIC a vhost-user netdev on SOCKET and the guest's RAM
# a shared memfd (the backend maps it); no MSI-X (above).
start_vhost_vm() {
	local name=$1 count=$2 interval=$3 ip=$4 peer=$5 mac=$6 sock=$7 extra=${8:-}
	start_vm "$name" "$count" "$interval" "$ip" "$peer" "$mac" vhost-user,id=n0,chardev=c0 vectors=0 \
		-object "memory-backend-memfd,id=m0,size=${VM_MEM}M,share=on" -numa node,memdev=m0 \
		-chardev "socket,id=c0,path=$sock$extra"
}

# check_vhost_summary NAME COUNT: COUNT sent, COUNT answered, 0% loss, no
# duplicates (the pace is not checked: these guests ping at the interval
# they are given, which a TCG vCPU sharing two CPUs may not keep).
check_vhost_summary() { check_summary "$1" "$2" none 0; }

# ping_received NAME: how many replies the guest's summary counts.
ping_received() { ping_summary "$1" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p'; }

# join_ns NS TAP ENTRY ADDR: (again) a vde_plug inside the existing
# namespace NS joins ENTRY with the tap TAP, ADDR/24 on it; NSPID its pid.
join_ns() {
	local ns=$1 tap=$2 entry=$3 addr=$4
	bg ip netns exec "$ns" vde_plug "$entry" "tap://$tap"
	NSPID=$LASTPID
	if ! wait_for "ip netns exec $ns ip link show $tap" 3; then
		fail "tap $tap in $ns" "$(tail -n 3 "$SCRATCH/bg.log" | tr '\n' ' ')"
		return 1
	fi
	ip -n "$ns" addr add "$addr/24" dev "$tap" && ip -n "$ns" link set "$tap" up ||
		{ fail "configure $tap in $ns" "ip failed"; return 1; }
}
