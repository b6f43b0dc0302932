#!/usr/bin/env bash
# t_dedup_stall.sh: duplicate suppression never loses a frame when the host
# does not take it. Only a copy the host accepted counts as delivered: a
# copy dropped towards a stalled host (its tx_dropped) leaves the next copy
# of the frame, from another link, free to reach it.
#
# For every host transport, two cases, each on a multilink of its own with
# dedup on (the default) and mode=0666:
#
#   handoff   link B (the new path) is open and waits; the host stops
#             accepting frames; link A (the old path) delivers N numbered
#             frames, which the host's port drops but for what the host's
#             socket still took; the host accepts again, and B delivers the
#             same N frames. The host must end up with all N.
#   attacker  the same, but link A is an ordinary user's (mode=0666 lets
#             any user join as a link): it sends copies of the frames the
#             legitimate link B is about to send, while the host stalls (a
#             stall anyone can see: tx_dropped in the world-readable
#             host/stats). Every one of B's frames must reach the host.
#
# In both, the host's stats must show the stall was real (most of A's
# frames dropped towards it), and the only copies dropped as duplicates are
# copies of what the host accepted from A (dup_dropped <= A's accepted).
#
# Transports, and what stalls each host:
#   vde        vdeprobe recv on PATH/host, stopped with SIGSTOP: its datagram
#              socket fills. It runs in a network namespace of its own whose
#              net.unix.max_dgram_qlen is 256 (the default, 10, is 2 ms of
#              frames): room enough that, once it runs again, a loaded
#              machine's scheduling does not make it lose B's frames.
#   seqpacket  vdeprobe recv on PATH/seqpacket, stopped with SIGSTOP.
#   tap        --host tap://NAME, the tap moved into a namespace of the
#              test's and read there by a packet socket (vdeprobe taprecv).
#              The kernel never pushes back on a tap that is up (what its
#              stack cannot take it drops after accepting the write), so a
#              tap host refuses frames only while it is down: writes fail
#              (EIO). The stall is the tap set down, then up.
#   stream     vdeprobe recv on PATH/host/stream (QEMU's framing), stopped
#              with SIGSTOP, with frames of 1,400 bytes (a stream's buffer
#              holds 2,000 small ones).
#   vhost      test/vhostprobe's sink on PATH/host/vhost-user (a vhost-user
#              frontend), stopped with SIGSTOP: its receive ring runs out
#              of buffers.
#
# To add a transport T: write host_start_T, host_stall_T and host_resume_T
# (see the vde ones for what each must do) and add T to TRANSPORTS.
. "$(dirname "$0")/lib.sh"

N=2000
TRANSPORTS=${TRANSPORTS:-"vde seqpacket tap stream vhost"} # or a few of them, from the environment
ATT=mfu_ddst
throwaway_user "$ATT"
chmod 755 "$SCRATCH"
# The attacker runs its own copy of the probe (it cannot reach the tree's).
PROBE=$SCRATCH/vdeprobe
cp "$VDEPROBE" "$PROBE" && chmod 755 "$PROBE"

# field LINE KEY: the value of KEY=value in a vdeprobe result line.
field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# =============================================================================
# host transports: host_start_T PATH OUT starts multifs on PATH (mode=0666,
# so that any user may join as a link) with a host of transport T that
# counts frames 0..N-1 and prints its result line into OUT; its pid is left
# in RECV (the test waits for it to exit). host_stall_T makes that host
# stop accepting frames, host_resume_T lets it accept them again.

# host_started WHAT OUT: the host just started in the background ($!) is
# RECV, tracked, and let run again on exit should a check leave it stopped;
# the check WHAT waits for its ready file, OUT.ready.
host_started() {
	RECV=$!
	track "$RECV"
	at_exit "kill -CONT $RECV"
	check_within "$1" 5 "[ -e '$2.ready' ]" cat "$2"
}

# host_start_sock T PATH OUT: a vdeprobe recv host over vde-2 or seqpacket,
# in a network namespace of its own for its datagram queue (see above).
host_start_sock() {
	local t=$1 p=$2 out=$3
	start_multifs "$p" -o mode=0666 || return 1
	rm -f "$out.ready"
	unshare -n sh -c 'echo 256 >/proc/sys/net/unix/max_dgram_qlen && exec "$@"' sh \
		"$VDEPROBE" recv -dir "$p/host" -transport "$t" -count "$N" -idle 5s -max 60s -ready "$out.ready" >"$out" 2>&1 &
	host_started "$t: the host (vdeprobe recv) joins" "$out"
}
# host_start_stream PATH OUT: a vdeprobe recv host on PATH/host/stream
# (QEMU's framing). A stream holds far more than a datagram queue (the
# daemon's send buffer, 208 KiB here), so its frames are larger
# (SIZE_stream): 2,000 of them overflow it while the host is stopped.
host_start_stream() {
	local p=$1 out=$2
	start_multifs "$p" -o mode=0666 || return 1
	rm -f "$out.ready"
	"$VDEPROBE" recv -dir "$p/host" -transport stream -count "$N" -idle 5s -max 60s -ready "$out.ready" >"$out" 2>&1 &
	host_started "stream: the host (vdeprobe recv) joins" "$out"
}
host_stall_stream() { kill -STOP "$RECV"; }
host_resume_stream() { kill -CONT "$RECV"; }
SIZE_stream=1400

# host_start_vhost PATH OUT: test/vhostprobe's sink as the host on
# PATH/host/vhost-user (guest memory in a memfd, the receive ring kept
# full), counting the numbered frames; stopped with SIGSTOP, it gives no
# buffer back, and once the ring's are used the backend drops.
host_start_vhost() {
	local p=$1 out=$2
	if [ -z "${VHOSTPROBE:-}" ]; then
		VHOSTPROBE=$SCRATCH/vhostprobe
		(cd "$ROOT" && go build -o "$VHOSTPROBE" ./test/vhostprobe) >"$SCRATCH/vhostprobe.build" 2>&1 ||
			{ fail "build test/vhostprobe" "$(head -c 300 "$SCRATCH/vhostprobe.build")"; return 1; }
	fi
	start_multifs "$p" -o mode=0666 || return 1
	rm -f "$out.ready"
	"$VHOSTPROBE" sink -path "$p" -count "$N" -idle 5s -for 60s -ready "$out.ready" >"$out" 2>&1 &
	host_started "vhost: the host (vhostprobe sink) attaches" "$out"
}
host_stall_vhost() { kill -STOP "$RECV"; }
host_resume_vhost() { kill -CONT "$RECV"; }
host_start_vde() { host_start_sock vde "$@"; }
host_stall_vde() { kill -STOP "$RECV"; }
host_resume_vde() { kill -CONT "$RECV"; }
host_start_seqpacket() { host_start_sock seqpacket "$@"; }
host_stall_seqpacket() { kill -STOP "$RECV"; }
host_resume_seqpacket() { kill -CONT "$RECV"; }

TAPS=0
host_start_tap() {
	local p=$1 out=$2
	TAPS=$((TAPS + 1))
	TAPNS=mfds$$$TAPS
	TAP=mfdst$$$TAPS
	ip netns add "$TAPNS" && track_netns "$TAPNS" || { fail "tap: ip netns add $TAPNS" "failed"; return 1; }
	start_multifs "$p" -o mode=0666 --host "tap://$TAP" || return 1
	if ! ip link set "$TAP" netns "$TAPNS" || ! ip -n "$TAPNS" link set "$TAP" up; then
		fail "tap: $TAP moved into $TAPNS and up" "ip failed"
		return 1
	fi
	rm -f "$out.ready"
	ip netns exec "$TAPNS" "$VDEPROBE" taprecv -if "$TAP" -count "$N" -idle 5s -max 60s -ready "$out.ready" >"$out" 2>&1 &
	host_started "tap: the receiver on $TAP is bound" "$out"
}
host_stall_tap() { ip -n "$TAPNS" link set "$TAP" down; }
host_resume_tap() { ip -n "$TAPNS" link set "$TAP" up; }

# =============================================================================

# handled PATH: what the host's port has done with the links' frames so
# far (sent or dropped), or nothing if its stats cannot be read.
handled() {
	local s=$1/host/stats tx dr
	tx=$(stat_key "$s" tx_packets)
	dr=$(stat_key "$s" tx_dropped)
	[ -n "$tx" ] && [ -n "$dr" ] && echo $((tx + dr))
}

# host_dropped PATH: the host's tx_dropped: from its stats while it is
# attached, else from the daemon's log line of its detach.
host_dropped() {
	if [ "$(stat_key "$1/host/stats" attached)" = yes ]; then
		stat_key "$1/host/stats" tx_dropped
	else
		grep 'msg="host detached"' "$SCRATCH/$(basename "$1").log" | tail -n 1 | sed -n 's/.* tx_dropped=\([0-9]*\).*/\1/p'
	fi
}

# scenario T CASE: CASE handoff or attacker, on transport T (see the top).
scenario() {
	local t=$1 c=$2 name="$1 $2" p=$SCRATCH/$1-$2 out=$SCRATCH/$1-$2.recv
	local b acc drop h0 res dd rc late size
	size=$(eval "echo \${SIZE_$t:-64}") # the frames' size, as the transport needs
	host_start_"$t" "$p" "$out" || return 1
	# Link B, root's: open from now on, its frames held until B.go.
	rm -f "$out.b.ready" "$out.b.go"
	"$VDEPROBE" send -dir "$p" -count "$N" -rate 4000 -size "$size" -ready "$out.b.ready" -go "$out.b.go" >"$out.b" 2>&1 &
	b=$!
	track "$b"
	check_within "$name: link B joins and waits" 5 "[ -e '$out.b.ready' ]" cat "$out.b"
	h0=$(handled "$p")
	host_stall_"$t"
	# Link A: N frames at 20,000 a second, while the host takes none.
	if [ "$c" = attacker ]; then
		timeout 30 runuser -u "$ATT" -- "$PROBE" send -dir "$p" -count "$N" -rate 20000 -size "$size" >"$out.a" 2>&1
	else
		timeout 30 "$VDEPROBE" send -dir "$p" -count "$N" -rate 20000 -size "$size" >"$out.a" 2>&1
	fi
	rc=$?
	check_eq "$name: link A ($([ "$c" = attacker ] && echo "user $ATT" || echo root)) sent its $N frames" 0 "$rc"
	check_within "$name: the host's port has dealt with A's frames" 10 "[ \"\$(handled '$p')\" -ge $((h0 + N)) ]" handled "$p"
	acc=$(stat_key "$p/host/stats" tx_packets)
	drop=$(stat_key "$p/host/stats" tx_dropped)
	if [ "${drop:-0}" -ge $((N / 2)) ]; then
		pass "$name: the stalled host dropped most of A's frames (tx_dropped $drop, accepted $acc)"
	else
		fail "$name: the stall is real (the host drops most of A's frames)" "tx_dropped ${drop:-?} of $N"
	fi
	host_resume_"$t"
	touch "$out.b.go"
	if wait_exit "$b" 20; then
		wait "$b"
		check_eq "$name: link B sent its $N frames" 0 "$?"
	else
		fail "$name: link B sends its frames" "still running after 20 s: $(cat "$out.b")"
	fi
	if wait_exit "$RECV" 30; then
		wait "$RECV"
		rc=$?
	else
		fail "$name: the host's receiver ends" "still running"
		rc=-1
	fi
	res=$(grep '^received=' "$out" | tail -n 1)
	dd=$(stat_key "$p/stats" dup_dropped)
	# What the host dropped after it resumed is a slow receiver's loss,
	# not suppression's: said, to tell the two apart if frames are lost.
	late=$(($(host_dropped "$p") - ${drop:-0}))
	note "$name: host $res; dup_dropped=$dd; of A's frames the host accepted ${acc:-?}, dropped ${drop:-?}; dropped towards it after it resumed: $late"
	check_eq "$name: the host got all $N frames, intact (unique lost corrupt)" "$N 0 0" "$(field "$res" unique) $(field "$res" lost) $(field "$res" corrupt)"
	check_eq "$name: the receiver's exit status" 0 "$rc"
	if [ -n "$dd" ] && [ -n "$acc" ] && [ "$dd" -le "$acc" ]; then
		pass "$name: only copies of frames the host accepted were dropped (dup_dropped $dd <= $acc)"
	else
		fail "$name: only copies of frames the host accepted are dropped" "dup_dropped ${dd:-?}, the host accepted ${acc:-?} of A's"
	fi
	fusermount -u "$p"
	check_log_clean "$name: no error in the daemon's log" "$SCRATCH/$(basename "$p").log"
}

for t in $TRANSPORTS; do
	scenario "$t" handoff
	scenario "$t" attacker
done
finish
