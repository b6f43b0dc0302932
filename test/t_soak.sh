#!/bin/bash
# t_soak.sh: a multilink driven at full rate in every direction for
# SOAK_SECONDS (default 10, for CI) while the host detaches and re-attaches
# every 100 ms and links join and leave every 50 ms (`vdeprobe soak`).
# The long mode is a minute:
#
#	SOAK_SECONDS=60 bash test/t_soak.sh
#	SOAK_SECONDS=60 LIMIT=180 bash test/run.sh t_soak
#
# Afterwards the daemon (built with -race) must be alive with no panic and
# no race report in its log, and the
# counters must add up exactly, per direction, over the whole run. Every
# port's final counters come from its close line in the log ("link closed",
# "host detached", at info level), the multilink's from PATH/stats:
#
#  E1 link -> daemon: sum of the links' rx_packets = frames the probe's
#     links sent (every link that sends leaves by itself: what it sent
#     before leaving is still read), exactly for seqpacket links; a vde-2
#     link may lose up to a socket queue when it leaves: see below;
#  E2 link -> host: sum of the links' rx_packets = sum of the hosts'
#     tx_packets + tx_dropped, + dropped_no_host, + dup_dropped (the probe's
#     senders all send the same numbered frames), which is the sum of the
#     links' rx_dup_dropped;
#  E3 host -> daemon: sum of the hosts' rx_packets = frames the probe's
#     hosts sent, likewise;
#  E4 host -> links: each of the four steady links (there before the first
#     host, gone after the last) was offered every host frame: its
#     tx_packets + tx_dropped = sum of the hosts' rx_packets; and
#     dropped_no_link = 0;
#  E5 delivery: each steady receiver read exactly its tx_packets.
#
# Why a vde-2 peer that leaves may lose frames it sent: its data socket is a
# connected datagram socket. When it exits, frames it sent may still wait in
# the daemon's receive queue; if the daemon then sends to the dead socket
# before it has read them (it cannot know the peer is dead but by sending),
# the kernel answers ECONNREFUSED and purges that receive queue
# (unix_dgram_disconnected in net/unix/af_unix.c). That queue is bounded by
# the sender's send buffer (between sockets connected to each other,
# net.unix.max_dgram_qlen does not apply), which bounds the loss per vde-2
# session; the test measures it (QUEUE, 64-byte frames, like the probe's).
# A seqpacket peer's end is a hang-up that leaves its frames readable: none
# may be lost.
. "$(dirname "$0")/lib.sh"

SECS=${SOAK_SECONDS:-10}

P=$SCRATCH/soak
# The daemon under soak is built with the race detector, which reports to
# stderr; in the foreground, that and a panic's stack land in the log.
RACEBIN=$ROOT/bin/multifs-race
if ! (cd "$ROOT" && go build -race -o "$RACEBIN" ./cmd/multifs) >"$SCRATCH/race-build.out" 2>&1; then
	fail "build multifs with -race" "$(head -c 400 "$SCRATCH/race-build.out")"
	finish
fi
MULTIFS=$RACEBIN start_multifs_fg "$P" --log-level info || finish
D=$LASTPID
LOG=$SCRATCH/soak.log
FD0=$(stat_key "$P/stats" open_fds)
GR0=$(stat_key "$P/stats" goroutines)

OUT=$SCRATCH/soak.out
T0=$(now_ms)
timeout $((SECS + 60)) "$VDEPROBE" soak -dir "$P" -seconds "${SECS}s" -max "$((SECS + 50))s" >"$OUT" 2>"$SCRATCH/soak.err"
RC=$?
if [ "$RC" -eq 0 ]; then
	pass "soak for ${SECS}s ($(($(now_ms) - T0)) ms): $(head -n 1 "$OUT")"
else
	fail "soak for ${SECS}s" "exit $RC: $(head -n 1 "$OUT") $(head -c 400 "$SCRATCH/soak.err")"
fi
# out KEY: KEY=value from the probe's summary line.
out() { head -n 1 "$OUT" | sed -n "s/.*\\b$1=\\([0-9]*\\).*/\\1/p"; }

check "daemon alive after the soak" alive "$D"
check_fails "no panic or fatal error in the daemon's log" grep -Eq 'panic|fatal error|level=(error|fatal|panic)' "$LOG"
check_fails "no data race reported (the daemon runs with -race)" grep -q 'WARNING: DATA RACE' "$LOG"
if wait_for "[ \"\$(stat_key '$P/stats' links)\" = 0 ] && [ \"\$(stat_key '$P/stats' host)\" = detached ]" 5; then
	pass "everything left: links 0, host detached"
else
	fail "everything left" "$(grep -E '^(links|host):' "$P/stats" | tr '\n' ' ')"
fi
# The sums below need every close line written.
check_within "a close logged per host session" 3 "[ \"\$(log_events '$LOG' 'host detached')\" = '$(out host_sessions)' ]" \
	log_events "$LOG" "host detached"
check_within "a close logged per link session" 3 "[ \"\$(log_events '$LOG' 'link closed')\" = '$(out link_sessions)' ]" \
	log_events "$LOG" "link closed"

# sum MSG KEY: the sum of KEY=N over the log's MSG lines.
sum() {
	grep "msg=\"$1\"" "$LOG" | grep -o " $2=[0-9]*" | cut -d= -f2 | awk '{ s += $1 } END { print s + 0 }'
}
LINK_RX=$(sum "link closed" rx_packets)
LINK_RXD=$(sum "link closed" rx_dropped)
HOST_RX=$(sum "host detached" rx_packets)
HOST_TX=$(sum "host detached" tx_packets)
HOST_TXD=$(sum "host detached" tx_dropped)
DNH=$(stat_key "$P/stats" dropped_no_host)
DNL=$(stat_key "$P/stats" dropped_no_link)
# The probe's senders all send the same numbered frames: while two or more
# links are open, those another link had just brought are duplicates.
DUP=$(stat_key "$P/stats" dup_dropped)
note "links rx_packets=$LINK_RX rx_dropped=$LINK_RXD; hosts rx_packets=$HOST_RX tx_packets=$HOST_TX tx_dropped=$HOST_TXD; dropped_no_host=$DNH dropped_no_link=$DNL dup_dropped=$DUP"

check_eq "hosts_total = the probe's host sessions" "$(out host_sessions)" "$(stat_key "$P/stats" hosts_total)"
check_eq "links_total = the probe's link sessions" "$(out link_sessions)" "$(stat_key "$P/stats" links_total)"
check_eq "no frame of bad size (rx_dropped 0)" 0 "$LINK_RXD"

# within LOST MAX SESSIONS WHAT: 0 <= LOST <= MAX.
QUEUE=$(python3 -c '
import socket
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
a.setblocking(False)
n = 0
try:
    while True:
        a.send(bytes(64))
        n += 1
except BlockingIOError:
    print(n)
')
note "a connected datagram socket pair holds $QUEUE frames of 64 bytes"
within() {
	if [ "$1" -ge 0 ] && [ "$1" -le "$2" ]; then
		pass "$4: $1 frames lost, within 0..$2 ($3 vde-2 sessions x $QUEUE)"
	else
		fail "$4: frames lost within 0..$2 ($3 vde-2 sessions x $QUEUE)" "$1"
	fi
}
# by_transport MSG T: the sum of rx_packets over the log's MSG lines of
# transport T.
by_transport() {
	grep "msg=\"$1\"" "$LOG" | grep " transport=$2" | grep -o " rx_packets=[0-9]*" | cut -d= -f2 | awk '{ s += $1 } END { print s + 0 }'
}
STEADY_VDE_SENT=$(grep '^steady ' "$OUT" | grep 'transport=vde role=send' | sed -n 's/.* sent=\([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s + 0 }')
check_eq "E1 link -> daemon, seqpacket links: rx_packets = what they sent" \
	"$(($(out link_sent) - $(out link_sent_vde) - STEADY_VDE_SENT))" "$(by_transport "link closed" seqpacket)"
within "$(($(out link_sent) - LINK_RX))" "$(($(out link_sessions_vde) * QUEUE))" "$(out link_sessions_vde)" \
	"E1 link -> daemon: links' rx_packets = what they sent, less what vde-2 links took with them"
check_eq "E2 link -> host: links' rx_packets = hosts' tx_packets + tx_dropped + dropped_no_host + dup_dropped (off by $((LINK_RX - HOST_TX - HOST_TXD - DNH - DUP)))" \
	"$LINK_RX" "$((HOST_TX + HOST_TXD + DNH + DUP))"
check_eq "E2 dup_dropped = the links' rx_dup_dropped at their close" "$DUP" "$(sum "link closed" rx_dup_dropped)"
check_eq "E3 host -> daemon, seqpacket hosts: rx_packets = what they sent" \
	"$(($(out host_sent) - $(out host_sent_vde)))" "$(by_transport "host detached" seqpacket)"
within "$(($(out host_sent) - HOST_RX))" "$(($(out host_sessions_vde) * QUEUE))" "$(out host_sessions_vde)" \
	"E3 host -> daemon: hosts' rx_packets = what they sent, less what vde-2 hosts took with them"
# Each vde-2 session on its own: its loss is within one queue.
NV=0
WORST=0
BAD=
while read -r _ sent peer; do
	sent=${sent#sent=}
	peer=${peer#peer=}
	line=$(grep -F "peer=\"vdeprobe $peer pid=" "$LOG" | grep -E 'msg="(link closed|host detached)"' | tail -n 1)
	rx=$(printf '%s' "$line" | sed -n 's/.* rx_packets=\([0-9]*\).*/\1/p')
	lost=$((sent - ${rx:-0}))
	NV=$((NV + 1))
	[ "$lost" -gt "$WORST" ] && WORST=$lost
	if [ -z "$rx" ] || [ "$lost" -lt 0 ] || [ "$lost" -gt "$QUEUE" ]; then
		BAD="$BAD $peer sent=$sent rx=${rx:-none};"
	fi
done < <(grep '^vde_session ' "$OUT")
check_eq "every vde-2 session that sent has a close line and lost 0..$QUEUE frames ($NV sessions, at most $WORST)" "" "$BAD"
check_eq "one line per vde-2 session" "$(($(out link_sessions_vde) + $(out host_sessions_vde)))" "$NV"
check_eq "E4 host -> links: dropped_no_link 0 (the steady links were always there)" 0 "$DNL"
NSTEADY=0
while read -r _ id transport role sent recv; do
	id=${id#id=}
	transport=${transport#transport=}
	role=${role#role=}
	sent=${sent#sent=}
	recv=${recv#recv=}
	line=$(grep 'msg="link closed"' "$LOG" | grep " link=$id " | tail -n 1)
	ltx=$(printf '%s' "$line" | sed -n 's/.* tx_packets=\([0-9]*\).*/\1/p')
	ltd=$(printf '%s' "$line" | sed -n 's/.* tx_dropped=\([0-9]*\).*/\1/p')
	lrx=$(printf '%s' "$line" | sed -n 's/.* rx_packets=\([0-9]*\).*/\1/p')
	if [ -z "$line" ]; then
		fail "steady link $id: its close line" "not in the log"
		continue
	fi
	NSTEADY=$((NSTEADY + 1))
	check_eq "E4 steady link $id ($transport, $role): tx_packets + tx_dropped = hosts' rx_packets ($ltx + $ltd)" \
		"$HOST_RX" "$((ltx + ltd))"
	if [ "$role" = recv ]; then
		check_eq "E5 steady link $id ($transport): the probe read exactly its tx_packets" "$ltx" "$recv"
	elif [ "$transport" = vde ]; then
		# It reads too, so frames may still be on their way to it when it
		# leaves: a vde-2 session's loss, as above.
		within "$((sent - lrx))" "$QUEUE" 1 "E1 steady link $id ($transport): its rx_packets = what it sent"
	else
		check_eq "E1 steady link $id ($transport): its rx_packets = what it sent" "$sent" "$lrx"
	fi
done < <(grep '^steady ' "$OUT")
check_eq "four steady links checked" 4 "$NSTEADY"
check "the host's reads are within what was sent to it ($(out host_recv) <= $HOST_TX)" test "$(out host_recv)" -le "$HOST_TX"

# Nothing left behind.
check_back_to "open_fds back to baseline" "$P/stats" open_fds "$FD0" 5
check_back_to "goroutines back to baseline" "$P/stats" goroutines "$GR0" 5
check_eq "the socket dir holds only the five entries" "ctl host.ctl host.seqpacket host.vhost-user seqpacket" \
	"$(ls "$(sockdir_of "$P")" | sort | tr '\n' ' ' | sed 's/ $//')"
# Still serving: a last host -> link transfer without a loss.
rm -f "$SCRATCH/last.ready"
nice -n -10 "$VDEPROBE" recv -dir "$P" -count 10000 -idle 5s -max 30s -ready "$SCRATCH/last.ready" >"$SCRATCH/last.out" 2>&1 &
R=$!
track $R
check_within "the last receiver is ready" 3 "[ -e '$SCRATCH/last.ready' ]"
"$VDEPROBE" send -dir "$P/host" -count 10000 -rate 10000 >/dev/null 2>&1
if wait "$R"; then
	pass "still serving: $(cat "$SCRATCH/last.out")"
else
	fail "still serving: 10000 frames host -> link" "$(cat "$SCRATCH/last.out")"
fi
# SIGTERM: a clean stop after all that.
kill -TERM "$D"
if wait_exit "$D" 5; then
	wait "$D"
	check_eq "SIGTERM after the soak: exit status 0" 0 "$?"
else
	fail "SIGTERM after the soak: exits within 5 s" "still running"
fi

finish
