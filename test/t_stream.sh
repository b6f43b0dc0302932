#!/usr/bin/env bash
# t_stream.sh: the stream entries, PATH/stream and PATH/host/stream (QEMU's
# -netdev stream framing: a 4-byte big-endian length, then the frame), with
# the real daemon and hostile peers (test/hostile/stream_peer.py, whose
# hosts read strictly: every frame whole, in order, as sent). The entries
# and their modes; a link's identity and frames; a second host closed at
# once and logged with its pid; lengths 0, 13 and 9235 passed over and
# counted, the stream in step; 2^32-1 and an end mid-frame close the link,
# one log line each; a frame a byte at a time; 10,000 frames in one write;
# a peer that stops mid-frame and goes on; a link that never reads (its
# queue bounded, every frame whole once it reads); a process closed for
# good refused when it reconnects, as QEMU's reconnect=N would; a host that
# reconnects after multifs restarts welcome; a flood of connections that
# end in every way, and a crowd holding partial frames, leave no
# descriptor or goroutine behind.
. "$(dirname "$0")/lib.sh"

SP="$ROOT/test/hostile/stream_peer.py"
P=$SCRATCH/st
LOG=$SCRATCH/st.log
start_multifs "$P" || finish
SD=$(sockdir_of "$P")

check_eq "PATH/stream points into the socket dir" "$SD/stream" "$(readlink "$P/stream")"
check_eq "PATH/host/stream points into the socket dir" "$SD/host.stream" "$(readlink "$P/host/stream")"
check_eq "the entry is a socket" "socket" "$(stat -L -c %F "$P/stream")"
check_eq "stream entries have the seqpacket entries' mode, owner and group" \
	"$(stat -c '%a %U %G' "$SD/seqpacket") $(stat -c '%a %U %G' "$SD/host.seqpacket")" \
	"$(stat -c '%a %U %G' "$SD/stream") $(stat -c '%a %U %G' "$SD/host.stream")"

# host N SECS: a strict reading host (bg) expecting N frames (or none for
# SECS); its result goes to $HOST_OUT. HOST gets its pid.
N_HOST=0
host() {
	N_HOST=$((N_HOST + 1))
	HOST_OUT=$SCRATCH/host$N_HOST.out
	bg python3 "$SP" recv "$P/host/stream" "$1" "$2" "$HOST_OUT" "$SCRATCH/host$N_HOST.ready" "$2"
	HOST=$LASTPID
	wait_for "[ -e '$SCRATCH/host$N_HOST.ready' ] && [ \"\$(stat_key '$P/host/stats' attached)\" = yes ]" 5 ||
		fail "host $N_HOST attaches" "not within 5 s"
}
# host_result SECS: wait for the host's result line; HOST_RES gets it.
host_result() {
	wait_for "[ -e '$HOST_OUT' ]" "$1"
	HOST_RES=$(cat "$HOST_OUT" 2>/dev/null)
}
# detached: wait until no host is attached.
detached() { wait_for "[ \"\$(stat_key '$P/host/stats' attached)\" = no ]" 5; }
# last_link: the highest link id open.
last_link() { links_of "$P" | tr ' ' '\n' | tail -n 1; }

# --- a link's identity and frames; lengths 0, 13, 9235 skipped, in step
host 1 10
bg python3 "$SP" send "$P/stream" bad 20 "$SCRATCH/bad.ready"
BAD=$LASTPID
check_within "a stream link joins" 3 "[ -e '$SCRATCH/bad.ready' ] && [ -n \"\$(links_of '$P')\" ]" show_links "$P"
L=$(last_link)
check_eq "its stats say transport: stream" stream "$(stat_key "$P/links/$L/stats" transport)"
check_eq "its stats carry its pid (SO_PEERCRED)" "$BAD" "$(stat_key "$P/links/$L/stats" pid)"
check_eq "its description is empty" "description: " "$(grep '^description:' "$P/links/$L/stats")"
host_result 10
check_eq "lengths 0, 13, 9235 passed over: the host reads the next frame, whole" "frames=1 seq_ok=1 broken=-" "$HOST_RES"
check_eq "the link's rx_dropped counts the three" 3 "$(stat_key "$P/links/$L/stats" rx_dropped)"
check_eq "the link's rx_packets counts the good one" 1 "$(stat_key "$P/links/$L/stats" rx_packets)"
check "the link is still open" test -d "$P/links/$L"
kill "$BAD" 2>/dev/null
detached

# --- a second host is closed at once and logged with its pid
host 1 10
bg python3 "$SP" recv "$P/host/stream" 1 3 "$SCRATCH/second.out"
SECOND=$LASTPID
check_within "a second host's connection is closed at once" 2 "[ -e '$SCRATCH/second.out' ]" echo "still open"
check_eq "the second host read nothing but the end" "frames=0 seq_ok=1 broken=eof" "$(cat "$SCRATCH/second.out" 2>/dev/null)"
check_eq "the refusal is logged with the second host's pid" 1 \
	"$(grep 'msg=refused' "$LOG" | grep "pid=$SECOND " | grep 'role=host' | grep -c 'transport=stream')"
check_eq "the first host is still attached" yes "$(stat_key "$P/host/stats" attached)"
check_eq "the host's transport: stream" stream "$(stat_key "$P/host/stats" transport)"
kill "$HOST" 2>/dev/null
detached

# --- 2^32-1 closes the link after the frame before it, one log line
host 1 10
bg python3 "$SP" send "$P/stream" huge 20
HUGE=$LASTPID
host_result 10
check_eq "the frame before the length 2^32-1 arrives whole" "frames=1 seq_ok=1 broken=-" "$HOST_RES"
check_exits "length 2^32-1: the link's connection is closed (the peer sees its end)" "$HUGE" 3
check_eq "length 2^32-1: logged once" 1 "$(grep -c 'stream frame length above what QEMU accepts' "$LOG")"
detached

# --- one frame a byte at a time
host 1 20
bg python3 "$SP" send "$P/stream" bytewise 25
host_result 20
check_eq "a frame written a byte at a time arrives whole" "frames=1 seq_ok=1 broken=-" "$HOST_RES"
kill "$LASTPID" 2>/dev/null
detached

# --- 10,000 frames in one write (the host waits for one more, so that it
# is still attached when its counters are read, and leaves 6 s after the
# last)
N_HOST=$((N_HOST + 1))
HOST_OUT=$SCRATCH/host$N_HOST.out
bg python3 "$SP" recv "$P/host/stream" 10001 30 "$HOST_OUT" "$SCRATCH/host$N_HOST.ready" 6
wait_for "[ -e '$SCRATCH/host$N_HOST.ready' ] && [ \"\$(stat_key '$P/host/stats' attached)\" = yes ]" 5
bg python3 "$SP" send "$P/stream" burst 30 "" 10000
BURST=$LASTPID
wait_for "[ -d '$P/links/\$(last_link)' ]" 3
L=$(last_link)
check_within "10,000 frames in one write: the link parsed every one" 20 \
	"[ \"\$(stat_key '$P/links/$L/stats' rx_packets)\" = 10000 ]" show_key "$P/links/$L/stats" rx_packets
check_eq "10,000 frames in one write: none malformed" 0 "$(stat_key "$P/links/$L/stats" rx_dropped)"
# What went towards the host, read while it is attached (HostWait may
# drop frames towards a host that reads slowly: counted, never cut).
wait_for "[ \"\$((\$(stat_key '$P/host/stats' tx_packets) + \$(stat_key '$P/host/stats' tx_dropped)))\" = 10000 ]" 10
HT=$(stat_key "$P/host/stats" tx_packets)
HD=$(stat_key "$P/host/stats" tx_dropped)
host_result 30
HF=$(sed -n 's/^frames=\([0-9]*\).*/\1/p' <<<"$HOST_RES")
note "10,000 frames: the host read ${HF:-?}; tx_packets ${HT:-?}, tx_dropped ${HD:-?} towards it"
check_eq "10,000 frames: the host read every frame sent to it, whole and in order; sent + dropped = 10,000" \
	"frames=$HT seq_ok=1 broken=- 10000" "$HOST_RES $((${HT:-0} + ${HD:-0}))"
kill "$BURST" 2>/dev/null
detached

# --- a peer that stops mid-frame stays; the rest completes the frame
host 2 20
bg python3 "$SP" send "$P/stream" stopmid 25 "" "$SCRATCH/go-on"
STOP=$LASTPID
wait_for "[ -d '$P/links/\$(last_link)' ] && [ \"\$(stat_key '$P/host/stats' tx_packets)\" = 1 ]" 5
L=$(last_link)
sleep 1 # the pause mid-frame: the link must stay
check "a link stopped mid-frame for 1 s is still open" test -d "$P/links/$L"
touch "$SCRATCH/go-on"
host_result 10
check_eq "the frame it finished later arrives whole" "frames=2 seq_ok=1 broken=-" "$HOST_RES"
kill "$STOP" 2>/dev/null
detached

# --- a stream that ends mid-frame: the link closes, one log line
host 1 10
bg python3 "$SP" send "$P/stream" endmid 5
host_result 10
check_eq "the frame before the cut arrives whole" "frames=1 seq_ok=1 broken=-" "$HOST_RES"
check_within "a stream that ends mid-frame closes its link" 3 "[ -z \"\$(links_of '$P')\" ]" show_links "$P"
check_eq "the end mid-frame: logged once" 1 "$(grep -c 'stream ended in the middle of a frame' "$LOG")" ||
	note "$(grep 'stream ended in the middle of a frame' "$LOG")"
detached

# --- a link that never reads: its queue is bounded; once it reads, whole
bg python3 "$SP" stuck "$P/stream" "$SCRATCH/stuck.ready" "$SCRATCH/stuck.go" 40 "$SCRATCH/stuck.out"
wait_for "[ -e '$SCRATCH/stuck.ready' ] && [ -n \"\$(links_of '$P')\" ]" 3
L=$(last_link)
bg python3 "$SP" send "$P/host/stream" burst 30 "" 20000
FLOOD=$LASTPID
check_within "the host's 20,000 frames read by the daemon" 15 \
	"[ \"\$(stat_key '$P/host/stats' rx_packets)\" = 20000 ]" show_key "$P/host/stats" rx_packets
TXD=$(stat_key "$P/links/$L/stats" tx_dropped)
if [ "${TXD:-0}" -gt 0 ]; then
	pass "a link that never reads: frames beyond its queue dropped (tx_dropped $TXD)"
else
	fail "a link that never reads: frames beyond its queue dropped" "tx_dropped ${TXD:-?}"
fi
touch "$SCRATCH/stuck.go"
wait_for "[ -e '$SCRATCH/stuck.out' ]" 20
SR=$(cat "$SCRATCH/stuck.out" 2>/dev/null)
note "the stuck link, once it read: $SR; its stats: $(grep -E '^(tx_packets|tx_dropped):' "$P/links/$L/stats" | tr '\n' ' ')"
check_eq "once it reads, every frame is whole and in order, and as many as tx_packets" \
	"frames=$(stat_key "$P/links/$L/stats" tx_packets) seq_ok=1 broken=-" "$SR"
check_eq "and tx_packets + tx_dropped = 20,000" 20000 \
	"$(($(stat_key "$P/links/$L/stats" tx_packets) + $(stat_key "$P/links/$L/stats" tx_dropped)))"
kill "$FLOOD" 2>/dev/null
touch "$SCRATCH/stuck.go.end"
check_within "the stuck link leaves" 5 "[ -z \"\$(links_of '$P')\" ]" show_links "$P"
detached

# --- a flood of connections, each ending its own way (a frame then close,
# half a header, half a frame, 2^32-1, a half-close, a reset), then a
# crowd each holding a frame stopped near its end: no descriptor and no
# goroutine is left behind, and every held one is a link
ulimit -n 8192
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
D=$(daemon_pid "$P")
wait_for "steady '$P/stats' open_fds goroutines" 5
FD0=$(stat_key "$P/stats" open_fds)
GR0=$(stat_key "$P/stats" goroutines)
LT0=$(stat_key "$P/stats" links_total)
python3 "$SP" churn "$P/stream" 3000 40 "$SCRATCH/churn.out"
check_eq "3,000 connections made and ended" done=3000 "$(cat "$SCRATCH/churn.out" 2>/dev/null)"
check_within "all of them gone from links/" 10 "[ -z \"\$(links_of '$P')\" ]" show_links "$P"
check_eq "each was a link (links_total)" $((LT0 + 3000)) "$(stat_key "$P/stats" links_total)"
check_back_to "after 3,000 connections: no descriptor left" "$P/stats" open_fds "$FD0" 2
check_back_to "after 3,000 connections: no goroutine left" "$P/stats" goroutines "$GR0" 2
RSS0=$(rss_kib "$D")
bg python3 "$SP" hold "$P/stream" 1000 "$SCRATCH/hold.ready" "$SCRATCH/hold.go" 40
check_within "1,000 connections each holding 9,004 bytes of a frame are links" 20 \
	"[ -e '$SCRATCH/hold.ready' ] && [ \"\$(stat_key '$P/stats' links)\" = 1000 ]" show_key "$P/stats" links
note "1,000 connections holding a frame stopped near its end: VmRSS $RSS0 -> $(rss_kib "$D") kB"
touch "$SCRATCH/hold.go"
check_within "released, they are gone" 20 "[ -z \"\$(links_of '$P')\" ]" show_links "$P"
check_back_to "after 1,000 held frames: no descriptor left" "$P/stats" open_fds "$FD0" 2
check_back_to "after 1,000 held frames: no goroutine left" "$P/stats" goroutines "$GR0" 2

# --- closed for good: the process's reconnects are closed at once, logged
TOTAL0=$(stat_key "$P/stats" links_total)
bg python3 "$SP" reconnect "$P/stream" 3 20 "$SCRATCH/rc.out"
RC=$LASTPID
wait_for "[ -n \"\$(links_of '$P')\" ]" 3
L=$(last_link)
close_link "$P/links/$L/close" "echo 1 > links/$L/close (a client that reconnects at once)"
wait_for "[ -e '$SCRATCH/rc.out' ]" 10
check_eq "its 3 reconnects each closed at once" "first_end=1 quick=3" "$(cat "$SCRATCH/rc.out" 2>/dev/null)"
check_eq "none of them joined (links_total)" "$((TOTAL0 + 1))" "$(stat_key "$P/stats" links_total)"
check_eq "each refusal logged with its pid" 3 \
	"$(grep 'closed for good through its close file' "$LOG" | grep -c "pid=$RC ")"
# Another process is welcome.
bg python3 "$SP" send "$P/stream" bytewise 5 "$SCRATCH/other.ready"
check_within "another process joins the link entry" 3 "[ -n \"\$(links_of '$P')\" ]" show_links "$P"

check_log_clean "no error in the daemon's log" "$LOG"

# --- a host that reconnects after multifs restarts is welcome
bg python3 "$SP" comeback "$P/host/stream" 20 "$SCRATCH/comeback.out"
BACK=$LASTPID
wait_for "[ \"\$(stat_key '$P/host/stats' attached)\" = yes ]" 5
D=$(daemon_pid "$P")
timeout 5 fusermount -u "$P"
check_exits "multifs stops at the unmount" "$D" 5
start_multifs "$P" || finish
check_within "the host that reconnects after the restart is attached" 10 \
	"[ -e '$SCRATCH/comeback.out' ] && [ \"\$(stat_key '$P/host/stats' pid)\" = $BACK ]" cat "$SCRATCH/comeback.out"
check_eq "its connection holds" rejoined=1 "$(cat "$SCRATCH/comeback.out" 2>/dev/null)"
finish
