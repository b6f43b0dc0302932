# shellcheck shell=bash
# vhost_vm.sh: the test VM of t_peer_qemu (TCG, the Debian cloud kernel,
# the busybox initramfs of mkinitramfs.sh that pings with mfsping) with its
# NIC on a vhost-user backend, for the vhost-user peer tests. Sourced after
# test/lib.sh.
#
#	vhost_vm_setup                      the initramfs (cached) and qemu, or finish
#	start_vhost_vm NAME COUNT INTERVAL IP/LEN PEER MAC SOCKET [CHARDEV-OPTIONS]
#	vm_ready NAME / vm_wait NAME WORD SECONDS WHAT / vm_pinged NAME / vm_done NAME
#	check_summary NAME COUNT            COUNT sent and answered, 0 loss, no duplicates
#
# Guest RAM is a shared memfd the size of -m (vhost-user needs the backend
# to map it), the chardev connects to SOCKET (a multifs PATH/host/vhost-user).
#
# The NIC has no MSI-X (vectors=0, legacy INTx): Debian's QEMU 7.2 under
# TCG (no KVM here, so no irqfd) dies with SIGSEGV in
# msix_set_vector_notifiers, called from vhost_net_start, as soon as the
# guest's driver starts a vhost-user NIC that has MSI-X; seen the same with
# DPDK's testpmd as the backend, so it is QEMU's, not the backend's.

QEMU=$(command -v qemu-system-x86_64) ||
	{ fail "qemu-system-x86_64 installed" "apt-get install qemu-system-x86"; finish; }
VM_MEM=128

vhost_vm_setup() {
	local t0
	pass "qemu-system-x86_64 installed ($("$QEMU" --version | head -n 1))"
	QCACHE=${MFS_QEMU_CACHE:-/tmp/multifs-qemu-cache}
	t0=$(now_ms)
	if QDIR=$(timeout 120 bash "$ROOT/test/qemu/mkinitramfs.sh" "$QCACHE" 2>"$SCRATCH/mkinitramfs.err"); then
		pass "initramfs for $(cat "$QDIR/kver") ready in $(($(now_ms) - t0)) ms ($QDIR)"
	else
		fail "build the initramfs" "$(tr '\n' ' ' <"$SCRATCH/mkinitramfs.err" | head -c 300)"
		finish
	fi
}

# console NAME: the VM's console so far, without the serial line's CRs.
console() { tr -d '\r' <"$SCRATCH/$1.console" 2>/dev/null; }
# marker NAME WORD: the first console line starting with MFS-WORD.
marker() { console "$1" | grep -m 1 "^MFS-$2\\b"; }
uptime_of() { sed -n 's/.* uptime=\([0-9.]*\).*/\1/p' <<<"$1"; }

# start_vhost_vm NAME COUNT INTERVAL IP/LEN PEER MAC SOCKET [CHARDEV-OPTIONS]:
# boot a VM whose /init pings PEER COUNT times every INTERVAL s, its NIC a
# vhost-user netdev on SOCKET; bounded by timeout (90 s), tracked. Sets
# VM_WRAP (the timeout process) and VM_T0.
start_vhost_vm() {
	local name=$1 count=$2 interval=$3 ip=$4 peer=$5 mac=$6 sock=$7 extra=${8:-}
	: >"$SCRATCH/$name.console"
	rm -f "$SCRATCH/$name.pid"
	VM_T0=$(now_ms)
	# nice: see t_peer_qemu (a starved vCPU comes back to a burst of
	# replies).
	nice -n -10 timeout -k 5 90 "$QEMU" -accel tcg -nodefaults -no-user-config \
		-display none -monitor none -no-reboot -m "$VM_MEM" \
		-object "memory-backend-memfd,id=m0,size=${VM_MEM}M,share=on" -numa node,memdev=m0 \
		-serial "file:$SCRATCH/$name.console" -pidfile "$SCRATCH/$name.pid" \
		-kernel "$QDIR/vmlinuz" -initrd "$QDIR/initrd.gz" \
		-append "console=ttyS0 panic=-1 quiet mfs_ip=$ip mfs_peer=$peer mfs_count=$count mfs_interval=$interval mfs_linger=3" \
		-chardev "socket,id=c0,path=$sock$extra" -netdev vhost-user,id=n0,chardev=c0 \
		-device "virtio-net-pci,netdev=n0,mac=$mac,vectors=0" \
		</dev/null >"$SCRATCH/$name.qemu.log" 2>&1 &
	VM_WRAP=$!
	track "$VM_WRAP"
}

# vm_wait NAME WORD SECONDS WHAT: pass once the console has MFS-WORD; fail
# as soon as the guest ended or qemu exited without it, or after SECONDS.
vm_wait() {
	local name=$1 word=$2 secs=$3 what=$4
	wait_for "marker $name $word || marker $name END || ! alive $VM_WRAP" "$secs"
	if [ -n "$(marker "$name" "$word")" ]; then
		pass "$what"
		return 0
	fi
	fail "$what" "no MFS-$word within $secs s: $(console "$name" | grep '^MFS-' | tr '\n' ' ' | tail -c 300) $(head -c 300 "$SCRATCH/$name.qemu.log")"
	return 1
}

# vm_ready NAME: MFS-READY within 60 s; sets VM_PID (qemu's pid).
vm_ready() {
	vm_wait "$1" READY 60 "VM $1 boots and reaches its peer through vhost-user" || return 1
	VM_PID=$(cat "$SCRATCH/$1.pid" 2>/dev/null)
	note "VM $1 (qemu pid $VM_PID): ready at guest uptime $(uptime_of "$(marker "$1" READY)") s; $(($(now_ms) - VM_T0)) ms since qemu started"
}

vm_pinged() { vm_wait "$1" PING-END 90 "VM $1 finishes its pings"; }

vm_done() {
	local name=$1 rc
	check_within "VM $name powers off" 15 "marker $name END" tail -n 3 "$SCRATCH/$name.console"
	if wait_exit "$VM_WRAP" 15; then
		wait "$VM_WRAP"
		rc=$?
		check_eq "qemu $name exited 0 after poweroff" 0 "$rc"
	else
		fail "qemu $name exits after poweroff" "still running"
	fi
}

ping_summary() { console "$1" | sed -n 's/^MFS-PING: \(.*packets transmitted.*\)/\1/p' | head -n 1; }

# ping_received NAME: how many replies the guest's summary counts.
ping_received() { ping_summary "$1" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p'; }

# check_summary NAME COUNT: COUNT sent, COUNT answered, 0% loss, no
# duplicates.
check_summary() {
	local name=$1 count=$2 s d
	s=$(ping_summary "$name")
	note "VM $name ping: $s; $(marker "$name" LOST); $(marker "$name" DUPS); $(marker "$name" ICMP)"
	if [[ $s =~ ^$count\ packets\ transmitted,\ $count\ packets\ received,\ ([0-9]+\ duplicates,\ )?0%\ packet\ loss ]]; then
		pass "VM $name: $count pings, $count answered, 0 lost"
	else
		fail "VM $name: $count pings, 0 lost" "summary '$s'; $(marker "$name" LOST); guest kernel: $(marker "$name" ICMP)"
	fi
	d=$(sed -n 's/.* \([0-9]*\) duplicates.*/\1/p' <<<"$s")
	check_eq "VM $name: 0 duplicates" 0 "${d:-0}"
}

# stat_ge NAME FILE KEY MIN: the numeric KEY in FILE is at least MIN.
stat_ge() {
	local v
	v=$(stat_key "$2" "$3")
	if [ "${v:-0}" -ge "$4" ]; then pass "$1 ($3 $v >= $4)"; else fail "$1" "$3 ${v:-?} < $4"; fi
}

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
