# qemu_vm.sh: sourced by the QEMU peer tests (t_peer_qemu.sh,
# t_peer_qemu_stream.sh) after lib.sh: qemu-system-x86_64 found, the TCG
# guest's kernel and initramfs built (test/qemu/mkinitramfs.sh, cached), and
# the helpers that boot a guest, read the markers its /init writes on the
# console, and check its ping summary.
#
# Out: QEMU, QDIR; the functions below. start_vm sets VM_WRAP and VM_T0,
# vm_ready VM_PID, check_summary SUM_DUPS; stat_ge checks a stats key's floor.

QEMU=$(command -v qemu-system-x86_64) ||
	{ fail "qemu-system-x86_64 installed" "apt-get install qemu-system-x86"; finish; }
pass "qemu-system-x86_64 installed ($("$QEMU" --version | head -n 1))"

# The kernel and initramfs, built once per kernel version into the cache.
QCACHE=${MFS_QEMU_CACHE:-/tmp/multifs-qemu-cache}
t0=$(now_ms)
if QDIR=$(timeout 120 bash "$ROOT/test/qemu/mkinitramfs.sh" "$QCACHE" 2>"$SCRATCH/mkinitramfs.err"); then
	pass "initramfs for $(cat "$QDIR/kver") ready in $(($(now_ms) - t0)) ms ($QDIR)"
else
	fail "build the initramfs" "$(tr '\n' ' ' <"$SCRATCH/mkinitramfs.err" | head -c 300)"
	finish
fi

# console NAME: the VM's console so far, without the serial line's CRs.
console() { tr -d '\r' <"$SCRATCH/$1.console" 2>/dev/null; }
# marker NAME WORD: the first console line starting with MFS-WORD.
marker() { console "$1" | grep -m 1 "^MFS-$2\\b"; }
# uptime_of LINE: the guest's uptime=S in a marker line.
uptime_of() { sed -n 's/.* uptime=\([0-9.]*\).*/\1/p' <<<"$1"; }

# VM_MEM: the guest's RAM in MiB.
VM_MEM=128

# start_vm NAME COUNT INTERVAL IP/LEN PEER MAC NETDEV [DEVICE-OPTIONS
# [QEMU-ARG...]]: boot a VM, its NIC on -netdev NETDEV (id n0) with
# ",DEVICE-OPTIONS" added to the virtio-net-pci device, the QEMU-ARGs
# before them, whose /init pings PEER COUNT times every INTERVAL s, then
# powers off; bounded by timeout (90 s), tracked so a failure kills it
# (nice and timeout exec, so the tracked pid's child is qemu). Sets
# VM_WRAP (the timeout process: wait on it) and VM_T0.
start_vm() {
	local name=$1 count=$2 interval=$3 ip=$4 peer=$5 mac=$6 netdev=$7 devopts=${8:+,$8}
	shift $(($# < 8 ? $# : 8))
	: >"$SCRATCH/$name.console"
	rm -f "$SCRATCH/$name.pid"
	VM_T0=$(now_ms)
	# nice: a vCPU thread starved by other work on the machine comes back
	# to a burst of replies larger than busybox ping's socket buffer.
	nice -n -10 timeout -k 5 90 "$QEMU" -accel tcg -nodefaults -no-user-config \
		-display none -monitor none -no-reboot -m "$VM_MEM" \
		-serial "file:$SCRATCH/$name.console" -pidfile "$SCRATCH/$name.pid" \
		-kernel "$QDIR/vmlinuz" -initrd "$QDIR/initrd.gz" \
		-append "console=ttyS0 panic=-1 quiet mfs_ip=$ip mfs_peer=$peer mfs_count=$count mfs_interval=$interval mfs_linger=3" \
		"$@" -netdev "$netdev" -device "virtio-net-pci,netdev=n0,mac=$mac$devopts" \
		</dev/null >"$SCRATCH/$name.qemu.log" 2>&1 &
	VM_WRAP=$!
	track "$VM_WRAP"
}

# vm_wait NAME WORD SECONDS WHAT: pass once the console has MFS-WORD; fail
# as soon as the guest ended (MFS-END) or qemu exited without it, or after
# SECONDS, with the console's markers and qemu's messages.
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

# vm_ready NAME: wait (60 s) for the guest's MFS-READY (booted, eth0 up,
# the peer answered once); report the boot time. Sets VM_PID.
vm_ready() {
	vm_wait "$1" READY 60 "VM $1 boots and reaches its peer" || return 1
	VM_PID=$(cat "$SCRATCH/$1.pid" 2>/dev/null)
	note "VM $1 (qemu pid $VM_PID): /init ran at guest uptime $(uptime_of "$(marker "$1" INIT)") s, ready at $(uptime_of "$(marker "$1" READY)") s; $(($(now_ms) - VM_T0)) ms since qemu started"
}

# vm_pinged NAME: wait (VM_PING_WAIT s, default 60) for the guest's ping
# summary (it then stays up for mfs_linger=3 s, still attached, for the
# counters to be read).
vm_pinged() { vm_wait "$1" PING-END "${VM_PING_WAIT:-60}" "VM $1 finishes its pings"; }

# vm_done NAME: wait for the guest's MFS-END and for qemu to exit 0.
vm_done() {
	local name=$1 rc
	check_within "VM $name powers off" 15 \
		"marker $name END" tail -n 3 "$SCRATCH/$name.console"
	if wait_exit "$VM_WRAP" 15; then
		wait "$VM_WRAP"
		rc=$?
		check_eq "qemu $name exited 0 after poweroff" 0 "$rc"
	else
		fail "qemu $name exits after poweroff" "still running"
	fi
	note "VM $name: $(marker "$name" END)"
}

# ping_summary NAME: the guest's ping summary line.
ping_summary() { console "$1" | sed -n 's/^MFS-PING: \(.*packets transmitted.*\)/\1/p' | head -n 1; }

# stat_ge NAME FILE KEY MIN: the numeric KEY in FILE is at least MIN.
stat_ge() {
	local v
	v=$(stat_key "$2" "$3")
	if [ "${v:-0}" -ge "$4" ]; then pass "$1 ($3 $v >= $4)"; else fail "$1" "$3 ${v:-?} < $4"; fi
}

# check_summary NAME COUNT DUPS [MINRATE]: the guest's summary says COUNT
# sent, COUNT received, 0% loss; DUPS is "some" (duplicates needed) or
# "none"; the guest pinged at MINRATE a second or more (default 100; 0:
# not checked). SUM_DUPS gets the number of duplicates.
check_summary() {
	local name=$1 count=$2 dups=$3 minrate=${4:-100} s d start end rate
	s=$(ping_summary "$name")
	note "VM $name ping: $s; $(marker "$name" LOST); $(marker "$name" DUPS); $(marker "$name" ICMP)"
	if [[ $s =~ ^$count\ packets\ transmitted,\ $count\ packets\ received,\ ([0-9]+\ duplicates,\ )?0%\ packet\ loss ]]; then
		pass "VM $name: $count pings, $count answered, 0% packet loss"
	else
		fail "VM $name: $count pings, 0% packet loss" "summary '$s'; $(marker "$name" LOST); guest kernel: $(marker "$name" ICMP)"
	fi
	d=$(sed -n 's/.* \([0-9]*\) duplicates.*/\1/p' <<<"$s")
	d=${d:-0}
	SUM_DUPS=$d
	if [ "$dups" = some ]; then
		# Duplicates, and only in the middle: none while link 1 was alone
		# (the first 2 s), none once it was closed (the last seconds).
		local w first last
		w=$(marker "$name" DUPS)
		first=$(sed -n 's/.* first_seq=\([0-9]*\).*/\1/p' <<<"$w")
		last=$(sed -n 's/.* last_seq=\([0-9]*\).*/\1/p' <<<"$w")
		if [ "$d" -gt 0 ] && [ "${first:-0}" -gt 100 ] && [ "${last:-$count}" -lt $((count - 500)) ]; then
			pass "VM $name: $d duplicates, all while both links were up (seq $first..$last of $count)"
		else
			fail "VM $name: duplicates during the overlap only" "summary '$s'; $w"
		fi
	else
		check_eq "VM $name: no duplicates" 0 "$d"
	fi
	[ "$minrate" -eq 0 ] && return
	start=$(uptime_of "$(marker "$name" PING-START)")
	end=$(uptime_of "$(marker "$name" PING-END)")
	rate=$(awk -v c="$count" -v a="$start" -v b="$end" 'BEGIN { if (b > a) printf "%d", c / (b - a); else print 0 }')
	if [ "$rate" -ge "$minrate" ]; then
		pass "VM $name pinged at $rate a second (>= $minrate), $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') s guest time"
	else
		fail "VM $name pings at $minrate a second or more" "$rate a second ($start .. $end)"
	fi
}

