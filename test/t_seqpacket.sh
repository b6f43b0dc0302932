#!/usr/bin/env bash
# t_seqpacket.sh: the native SOCK_SEQPACKET entries, PATH/seqpacket and
# PATH/host/seqpacket, driven by vdeprobe (Debian's vdeplug 4.0.1 predates
# the seqpacket ptp protocol): join, frames both ways, close seen as EOF,
# EISCONN for a second host, and hand-offs between a vde-2 link and a
# seqpacket one with nothing lost.
. "$(dirname "$0")/lib.sh"

P=$SCRATCH/sp
start_multifs "$P" || finish
SD=$(sockdir_of "$P")

check_eq "PATH/seqpacket points into the socket dir" "$SD/seqpacket" "$(readlink "$P/seqpacket")"
check_eq "PATH/host/seqpacket points into the socket dir" "$SD/host.seqpacket" "$(readlink "$P/host/seqpacket")"
check_eq "the entry is a socket" "socket" "$(stat -L -c %F "$P/seqpacket")"

# --- join, identity, close through the FUSE file seen as EOF
bg "$VDEPROBE" hold -dir "$P" -transport seqpacket -ready "$SCRATCH/held" -max 20s
HOLD=$LASTPID
check_within "a seqpacket client joins as link 1" 3 "[ -e '$SCRATCH/held' ] && [ -d '$P/links/1' ]" show_links "$P"
check_eq "its stats say transport: seqpacket" "seqpacket" "$(stat_key "$P/links/1/stats" transport)"
check_eq "its stats carry its pid (SO_PEERCRED)" "$HOLD" "$(stat_key "$P/links/1/stats" pid)"
check_eq "its description is empty (ptp sends none)" "description: " "$(grep '^description:' "$P/links/1/stats")"
T0=$(now_ms)
echo 1 >"$P/links/1/close"
if wait_exit "$HOLD" 1; then
	pass "close through the FUSE file: the client saw EOF ($(($(now_ms) - T0)) ms)"
else
	fail "close through the FUSE file: the client saw EOF" "still running after 1 s"
fi
check "the client printed eof" grep -qx eof "$SCRATCH/bg.log"
check_eq "link 1 is gone" "" "$(links_of "$P")"

# --- a seqpacket host; a second one gets EISCONN
bg "$VDEPROBE" hold -dir "$P/host" -transport seqpacket -ready "$SCRATCH/host1" -max 30s
HOSTHOLD=$LASTPID
wait_for "[ -e '$SCRATCH/host1' ]" 3
check_eq "a seqpacket host attaches" "yes" "$(stat_key "$P/host/stats" attached)"
check_eq "host transport: seqpacket" "seqpacket" "$(stat_key "$P/host/stats" transport)"
ERR=$(timeout 5 "$VDEPROBE" hold -dir "$P/host" -transport seqpacket -max 2s 2>&1)
RC=$?
if [ "$RC" -ne 0 ] && printf '%s' "$ERR" | grep -qi "already connected"; then
	pass "a second seqpacket host is refused with EISCONN"
else
	fail "a second seqpacket host is refused with EISCONN" "exit $RC: $ERR"
fi
check_eq "the first host is still attached" "$HOSTHOLD" "$(stat_key "$P/host/stats" pid)"
kill "$HOSTHOLD" 2>/dev/null
check_stat "the host detaches when its client goes" "$P/host/stats" attached no 3

# --- frames both ways, mixed transports (jumbo frames intact)
frames() { # NAME RECV_DIR RECV_T SEND_DIR SEND_T
	local out="$SCRATCH/$1.out"
	rm -f "$SCRATCH/$1.ready"
	"$VDEPROBE" recv -dir "$2" -transport "$3" -count 300 -idle 5s -max 20s -ready "$SCRATCH/$1.ready" >"$out" 2>&1 &
	local r=$!
	track $r
	check_within "$1: the receiver joins" 3 "[ -e '$SCRATCH/$1.ready' ]" cat "$out"
	"$VDEPROBE" send -dir "$4" -transport "$5" -count 300 -rate 3000 -size 9234 >/dev/null 2>&1
	if wait "$r"; then pass "$1: $(cat "$out")"; else fail "$1" "$(cat "$out")"; fi
}
frames "vde host -> seqpacket link" "$P" seqpacket "$P/host" vde
frames "seqpacket link -> vde host" "$P/host" vde "$P" seqpacket
frames "seqpacket host -> vde link" "$P" vde "$P/host" seqpacket
frames "vde link -> seqpacket host" "$P/host" seqpacket "$P" vde

# --- hand-offs between a vde-2 link and a seqpacket link, nothing lost
A=$SCRATCH/A
B=$SCRATCH/B
start_multifs "$A" || finish
start_multifs "$B" || finish
handoff() { # NAME FIRST SECOND: each "vde" (vde_plug A B) or "seq" (a bridge, seqpacket at A)
	local name=$1 out="$SCRATCH/ho.$1.out" r s first second dd0
	rm -f "$SCRATCH/ho.ready" "$SCRATCH/br.ready"
	"$VDEPROBE" recv -dir "$B/host" -count 9000 -idle 3s -max 30s -ready "$SCRATCH/ho.ready" >"$out" 2>&1 &
	r=$!
	track $r
	check_within "hand-off $name: the receiver joins B's host" 3 "[ -e '$SCRATCH/ho.ready' ]" cat "$out"
	dd0=$(stat_key "$B/stats" dup_dropped)
	start_link() {
		if [ "$1" = vde ]; then
			bg vde_plug "$A" "$B"
		else
			bg "$VDEPROBE" bridge -a "$A" -a-transport seqpacket -b "$B" -b-transport vde -max 30s
		fi
	}
	start_link "$2"
	check_within "hand-off $name: the first link joins A" 3 "[ -n \"\$(links_of '$A')\" ]"
	first=$(links_of "$A")
	"$VDEPROBE" send -dir "$A/host" -count 9000 -rate 3000 >/dev/null 2>&1 &
	s=$!
	track $s
	sleep 1 # a pace: frames flow through the first link alone for a second
	start_link "$3"
	check_within "hand-off $name: the second link joins A and B" 3 \
		"[ \"\$(links_of '$A' | wc -w)\" = 2 ] && [ \"\$(links_of '$B' | wc -w)\" -ge 2 ]" \
		eval "show_links '$A'; show_links '$B'"
	sleep 0.5 # the overlap: both links carry the frames for half a second
	echo 1 >"$A/links/$first/close"
	wait "$s"
	if wait "$r"; then pass "hand-off $name: $(cat "$out")"; else fail "hand-off $name" "$(cat "$out")"; fi
	# Both links carried the frames for a while; B's host got each once
	# (dedup, on by default), and B counted the copies it dropped.
	local dups dd
	dups=$(sed -n 's/.*dups=\([0-9]*\).*/\1/p' "$out")
	check_eq "hand-off $name: no duplicate reached B's host" 0 "${dups:-?}"
	dd=$(($(stat_key "$B/stats" dup_dropped) - dd0))
	if [ "$dd" -gt 0 ]; then pass "hand-off $name: B dropped the copies while both links were up ($dd)"; else fail "hand-off $name: B drops the copies" "dup_dropped grew by $dd"; fi
	for l in $(links_of "$A"); do echo 1 >"$A/links/$l/close"; done
	check_within "hand-off $name: every link left A and B" 3 "[ -z \"\$(links_of '$A')\" ] && [ -z \"\$(links_of '$B')\" ]" \
		eval "show_links '$A'; show_links '$B'"
}
handoff "vde to seqpacket" vde seq
handoff "seqpacket to vde" seq vde

finish
