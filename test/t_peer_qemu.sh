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

# start_vm NAME COUNT INTERVAL IP/LEN PEER MAC NETDEV-OPTIONS: boot a VM
# whose /init pings PEER COUNT times every INTERVAL s, then powers off;
# bounded by timeout (90 s), tracked so a failure kills it (nice and
# timeout exec, so the tracked pid's child is qemu). Sets
# VM_WRAP (the timeout process: wait on it) and VM_T0.
start_vm() {
	local name=$1 count=$2 interval=$3 ip=$4 peer=$5 mac=$6 netdev=$7
	: >"$SCRATCH/$name.console"
	VM_T0=$(now_ms)
	# nice: a vCPU thread starved by other work on the machine comes back
	# to a burst of replies larger than busybox ping's socket buffer.
	nice -n -10 timeout -k 5 90 "$QEMU" -accel tcg -nodefaults -no-user-config \
		-display none -monitor none -no-reboot -m 128 \
		-serial "file:$SCRATCH/$name.console" -pidfile "$SCRATCH/$name.pid" \
		-kernel "$QDIR/vmlinuz" -initrd "$QDIR/initrd.gz" \
		-append "console=ttyS0 panic=-1 quiet mfs_ip=$ip mfs_peer=$peer mfs_count=$count mfs_interval=$interval mfs_linger=3" \
		-netdev "vde,id=n0,$netdev" -device "virtio-net-pci,netdev=n0,mac=$mac" \
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

# vm_pinged NAME: wait for the guest's ping summary (it then stays up for
# mfs_linger=3 s, still attached, for the counters to be read).
vm_pinged() { vm_wait "$1" PING-END 60 "VM $1 finishes its pings"; }

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

# check_summary NAME COUNT DUPS: the guest's summary says COUNT sent,
# COUNT received, 0% loss; DUPS is "some" (duplicates needed) or "none".
# SUM_DUPS gets the number of duplicates.
check_summary() {
	local name=$1 count=$2 dups=$3 s d start end rate
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
	start=$(uptime_of "$(marker "$name" PING-START)")
	end=$(uptime_of "$(marker "$name" PING-END)")
	rate=$(awk -v c="$count" -v a="$start" -v b="$end" 'BEGIN { if (b > a) printf "%d", c / (b - a); else print 0 }')
	if [ "$rate" -ge 100 ]; then
		pass "VM $name pinged at $rate a second (>= 100), $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') s guest time"
	else
		fail "VM $name pings at 100 a second or more" "$rate a second ($start .. $end)"
	fi
}

# stat_ge NAME FILE KEY MIN: the numeric KEY in FILE is at least MIN.
stat_ge() {
	local v
	v=$(stat_key "$2" "$3")
	if [ "${v:-0}" -ge "$4" ]; then pass "$1 ($3 $v >= $4)"; else fail "$1" "$3 ${v:-?} < $4"; fi
}

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

start_vm a "$COUNTA" "$INTERVALA" "$NETA.2/24" "$NETA.1" "52:54:00:4d:46:01" "sock=$A/host"
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
start_vm b "$COUNTC" "$INTERVALC" "$NETC.2/24" "$NETC.1" "52:54:00:4d:46:02" "sock=$C"
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
