#!/bin/bash
# t_peer_vdeplug4.sh: the newest vdeplug4 (built here from
# ../shared/peers/vdeplug4-*.tar.gz) as a real peer of the seqpacket
# entries, all in ptp://:
#   - a ptp host (a tap in a namespace) behind A, a ptp bridge that is A's
#     link and B's host, and a ptp link (a tap in another namespace) of B
#     carry a ping with 0 % loss;
#   - a second ptp host is refused (EISCONN) and exits, the first stays;
#   - `echo 1 > links/N/close` ends a ptp link for good: its client
#     reconnects at once (libvdeplug_ptp.c), is refused with the ack byte
#     ECONNREFUSED and exits; no new link appears; the log names its pid.
#     A fresh vde_plug (a new process) is accepted and pings again. The
#     `=` form (vde_plug ptp://... = cmd) does not rejoin either;
#   - a ptp client started before multifs listens at PATH/seqpacket in the
#     empty mountpoint: multifs refuses PATH in one line that says so.
# Addresses are link-local (169.254.X.0/24), only inside namespaces this
# test creates. The build is cached under /tmp by the tarball's name.
. "$(dirname "$0")/lib.sh"

# --- vdeplug4 from source -----------------------------------------------------------
V4_TGZ=$(ls "$ROOT"/../shared/peers/vdeplug4-*.tar.gz 2>/dev/null | sort | tail -n 1)
if [ -z "$V4_TGZ" ]; then
	fail "vdeplug4 source" "no $ROOT/../shared/peers/vdeplug4-*.tar.gz"
	finish
fi
V4=/tmp/multifs-peers/$(basename "$V4_TGZ" .tar.gz)
if [ -x "$V4/bin/vde_plug" ] && [ -f "$V4/lib/vdeplug/libvdeplug_ptp.so" ]; then
	pass "vdeplug4 $(basename "$V4") cached at $V4"
else
	for t in cmake gcc make; do
		command -v "$t" >/dev/null 2>&1 ||
			fail "vdeplug4 build needs $t" "apt-get install cmake gcc make libc6-dev libexecs-dev"
	done
	[ "$FAIL" -eq 0 ] || finish
	T0=$(now_ms)
	BUILD=$V4.build.$$
	rm -rf "$BUILD"
	mkdir -p "$BUILD/src/build"
	at_exit "rm -rf '$BUILD'"
	# The install is relocatable (no RUNPATH; plugins are found beside
	# libvdeplug.so), so it is built aside and renamed into place whole.
	if tar -xzf "$V4_TGZ" -C "$BUILD/src" --strip-components=1 &&
		(cd "$BUILD/src/build" &&
			cmake .. -DCMAKE_INSTALL_PREFIX="$BUILD/inst" &&
			make -j"$(nproc)" && make install) >"$SCRATCH/v4build.log" 2>&1 &&
		rm -rf "$V4" && mv "$BUILD/inst" "$V4"; then
		pass "vdeplug4 $(basename "$V4") built in $(($(now_ms) - T0)) ms"
	else
		fail "vdeplug4 builds" "$(tail -n 5 "$SCRATCH/v4build.log" | tr '\n' ' ')"
		finish
	fi
fi
# The vdeplug4 vde_plug, with its own library and plugins (VDEPLUGIN_PATH:
# the only plugin directory searched). env execs it: `bg "${V4PLUG[@]}" ...`
# leaves the vde_plug's own pid in $LASTPID.
V4PLUG=(env LD_LIBRARY_PATH="$V4/lib" VDEPLUGIN_PATH="$V4/lib/vdeplug" "$V4/bin/vde_plug")

check_eq "vde_plug links the built libvdeplug, not Debian's" "$V4/lib/libvdeplug.so.2" \
	"$(LD_LIBRARY_PATH=$V4/lib ldd "$V4/bin/vde_plug" | awk '$1 == "libvdeplug.so.2" { print $3 }')"

# libs_of PID: the libvdeplug files PID has mapped.
libs_of() { awk '$6 ~ /libvdeplug/ { print $6 }' "/proc/$1/maps" 2>/dev/null | sort -u | tr '\n' ' '; }
# own_libs NAME PID: PID runs the built libvdeplug and ptp plugin, nothing of Debian's.
own_libs() {
	local l
	l=$(libs_of "$2")
	if [[ " $l" == *" $V4/lib/libvdeplug.so"* && " $l" == *" $V4/lib/vdeplug/libvdeplug_ptp.so "* && "$l" != *" /usr/"* && "$l" != "/usr/"* ]]; then
		pass "$1 runs the built libvdeplug and ptp plugin"
	else
		fail "$1 runs the built libvdeplug and ptp plugin" "mapped: $l"
	fi
}

A=$SCRATCH/A
B=$SCRATCH/B
start_multifs "$A" || finish
start_multifs "$B" || finish
ALOG=$SCRATCH/A.log
# refusal_logged PID: A's log has the refusal warning (its event field,
# not its words) for PID.
refusal_logged() { grep -F " event=refused_closed_for_good" "$ALOG" | grep -Eq "level=warning.* pid=$1( |\$)"; }

# --- the = form: a ptp link whose other end is a command ---------------------------
# (first, while A has no host: nothing is sent to it that sleep would not read)
bg "${V4PLUG[@]}" "ptp://$A/seqpacket" = sleep 60
ST=$LASTPID
check_within "a ptp link in the = form joins A" 3 "[ \"\$(links_of '$A')\" = 1 ]" show_links "$A"
check_eq "its stats: transport seqpacket, its pid" "seqpacket $ST" \
	"$(stat_key "$A/links/1/stats" transport) $(stat_key "$A/links/1/stats" pid)"
close_link "$A/links/1/close" "close the = form link"
check_within "the refusal of its reconnect is logged with its pid" 3 "refusal_logged $ST" tail -n 3 "$ALOG"
sleep 1 # a rejoin takes milliseconds: a second in which none may come
check_links "the = form link did not rejoin (1 s after the close)" "$A" "" 0
check_eq "links_total 1: nothing rejoined" 1 "$(stat_key "$A/stats" links_total)"
check "it was told ECONNREFUSED (vde_plug prints the ack's errno)" grep -q "recvfrom : Connection refused" "$SCRATCH/bg.log"
if alive "$ST"; then
	note "the = form vde_plug is still running without a connection (vdeplug4's stream loop does not exit on a failed reconnect)"
fi
kill_tree "$ST"

# --- namespaces, persistent taps (they outlive a vde_plug that exits) -------------
NSH=mft$$h
NSL=mft$$l
TH=mft$$th
TL=mft$$tl
NET=169.254.$(($$ % 250 + 1))
IPH=$NET.1
IPL=$NET.2
track_netns "$NSH"
track_netns "$NSL"
for ns in "$NSH:$TH:$IPH" "$NSL:$TL:$IPL"; do
	IFS=: read -r n t a <<<"$ns"
	if ! { ip netns add "$n" && ip -n "$n" link set lo up && ip -n "$n" tuntap add dev "$t" mode tap &&
		ip -n "$n" addr add "$a/24" dev "$t" && ip -n "$n" link set "$t" up; }; then
		fail "namespace $n with tap $t" "ip failed"
		finish
	fi
done

# --- ptp host of A, ptp link of B, a ptp bridge A -> B -------------------------------
bg ip netns exec "$NSH" "${V4PLUG[@]}" "ptp://$A/host/seqpacket" "tap://$TH"
HOST=$LASTPID
check_stat "a ptp host attaches to A" "$A/host/stats" attached yes 3
check_eq "A's host: transport seqpacket, the vde_plug's pid" "seqpacket $HOST" \
	"$(stat_key "$A/host/stats" transport) $(stat_key "$A/host/stats" pid)"
own_libs "the ptp host" "$HOST"
bg ip netns exec "$NSL" "${V4PLUG[@]}" "ptp://$B/seqpacket" "tap://$TL"
LINK=$LASTPID
check_links "a ptp link joins B" "$B" 1 3
bg "${V4PLUG[@]}" "ptp://$A/seqpacket" "ptp://$B/host/seqpacket"
BR1=$LASTPID
# link_pid_is P PID: P has one link, and PID is its peer; LID is its id.
link_pid_is() {
	LID=$(links_of "$1")
	[ -n "$LID" ] && [ "${LID#* }" = "$LID" ] && [ "$(stat_key "$1/links/$LID/stats" pid)" = "$2" ]
}
check_within "a ptp bridge is A's one link and the host of B" 3 \
	"link_pid_is '$A' $BR1 && [ \"\$(stat_key '$B/host/stats' pid)\" = $BR1 ]" show_links "$A"
BR1_ID=$LID
own_libs "the bridge" "$BR1"

# ping_ok NAME: 20 pings from the host's namespace to the link's, 0 % loss.
ping_ok() {
	ip netns exec "$NSH" timeout 20 ping -c 20 -i 0.05 -W 2 "$IPL" >"$SCRATCH/ping" 2>&1
	if grep -q ' 20 received, 0% packet loss' "$SCRATCH/ping"; then
		pass "$1: $(grep -o 'rtt.*' "$SCRATCH/ping")"
	else
		fail "$1" "$(grep -E 'transmitted|rror|nreach' "$SCRATCH/ping" | head -n 2 | tr '\n' ' ')"
	fi
}
ping_ok "ping host(A) -> bridge -> link(B): 20 received, 0% loss"

# --- a second ptp host ---------------------------------------------------------------
T0=$(now_ms)
ERR=$(timeout 10 "${V4PLUG[@]}" "ptp://$A/host/seqpacket" null:// </dev/null 2>&1)
RC=$?
if [ "$RC" -ne 0 ] && [ "$RC" -ne 124 ] && printf '%s' "$ERR" | grep -q "Transport endpoint is already connected"; then
	pass "a second ptp host is refused and exits ($RC, $(($(now_ms) - T0)) ms): $ERR"
else
	fail "a second ptp host is refused and exits" "exit $RC: $ERR"
fi
check_eq "the first host keeps its place" "yes $HOST" "$(stat_key "$A/host/stats" attached) $(stat_key "$A/host/stats" pid)"

# --- the close file ends the ptp bridge for good ---------------------------------------
LT=$(stat_key "$A/stats" links_total)
close_link "$A/links/$BR1_ID/close" "echo 1 > A/links/$BR1_ID/close (the bridge)"
if wait_exit "$BR1" 3; then
	pass "the bridge's vde_plug exited $(($(now_ms) - CLOSED_AT)) ms after the close"
else
	fail "the bridge's vde_plug exits within 3 s of the close" "still running; A links '$(links_of "$A")'"
fi
check_within "the refusal is logged at warning with the bridge's pid" 3 "refusal_logged $BR1" tail -n 3 "$ALOG"
sleep 1 # a rejoin takes milliseconds: a second in which none may come
check_links "A shows no new link from it (1 s later)" "$A" "" 0
check_eq "A's links_total: nothing rejoined" "$LT" "$(stat_key "$A/stats" links_total)"
check_stat "B's host (the bridge) detached" "$B/host/stats" attached no 2

# --- a fresh vde_plug is a new process: accepted --------------------------------------
bg "${V4PLUG[@]}" "ptp://$A/seqpacket" "ptp://$B/host/seqpacket"
BR2=$LASTPID
check_within "a fresh bridge (new pid) is A's one link and B's host" 3 \
	"link_pid_is '$A' $BR2 && [ \"\$(stat_key '$B/host/stats' pid)\" = $BR2 ]" show_links "$A"
ping_ok "ping through the fresh bridge: 20 received, 0% loss"
check_log_clean "no error in A's log" "$ALOG"

# --- a ptp client started before multifs ----------------------------------------------
C=$SCRATCH/C
mkdir "$C"
bg "${V4PLUG[@]}" "ptp://$C/seqpacket" null://
EARLY=$LASTPID
check_within "a ptp client started first listens at C/seqpacket" 3 "[ -S '$C/seqpacket' ]" ls -la "$C"
"$MULTIFS" --log-file "$SCRATCH/C.log" "$C" 2>"$SCRATCH/c.err"
RC=$?
if [ "$RC" -eq 1 ] && one_line "$SCRATCH/c.err" && grep -q "holds seqpacket, a socket: a vde_plug ptp://$C/seqpacket started before multifs" "$SCRATCH/c.err"; then
	pass "multifs refuses C in one line naming the ptp socket: $(cat "$SCRATCH/c.err")"
else
	fail "multifs refuses C in one line naming the ptp socket" "exit $RC: $(cat "$SCRATCH/c.err")"
	[ "$RC" -eq 0 ] && track_mount "$C" "$(daemon_pid "$C")"
fi
check "C is left as it was (the client's socket still there)" test -S "$C/seqpacket"
kill_tree "$EARLY"
check_within "once that client is stopped, C is empty" 2 "[ -z \"\$(ls -A '$C')\" ]" ls -A "$C"
start_multifs "$C" && check "then multifs serves C" joinable "$C"

# --- a stop with ptp peers attached -----------------------------------------------------
# Hung up by the stop, a ptp client reconnects at once; finding no entry it
# would bind one of its own in the mountpoint, and the next start would be
# refused. The stop keeps its listeners a moment: the reconnect gets the
# ack ESHUTDOWN instead.
for how in sigterm unmount; do
	S=$SCRATCH/stop_$how
	start_multifs "$S" || finish
	SD=$LASTPID
	bg "${V4PLUG[@]}" "ptp://$S/seqpacket" = sleep 30
	PL=$LASTPID
	bg "${V4PLUG[@]}" "ptp://$S/host/seqpacket" null://
	PH=$LASTPID
	check_within "$how: a ptp link (the = form) and a ptp host joined" 3 \
		"[ -n \"\$(links_of '$S')\" ] && [ \"\$(stat_key '$S/host/stats' attached)\" = yes ]" show_links "$S"
	if [ "$how" = sigterm ]; then kill -TERM "$SD"; else fusermount -u "$S"; fi
	check_exits "$how: multifs stopped" "$SD" 5
	# The = form ignores a failed reconnect and runs on, unconnected; what
	# matters is where it is: not listening in PATH.
	kill_tree "$PL"
	check_exits "$how: the ptp host's vde_plug exited" "$PH" 3
	if [ "$how" = sigterm ]; then
		check_fails "$how: nothing left at PATH (no socket a client bound there; the mountpoint multifs made is gone)" test -e "$S"
	else
		# Unmounted from outside, the entry may be gone before multifs
		# hears of it: a client's reconnect then finds nothing and it
		# listens in the bare mountpoint (it depends on timing). If so,
		# the next start says what to do.
		if [ -S "$S/seqpacket" ]; then
			note "$how: the client's reconnect took PATH/seqpacket"
			"$MULTIFS" --log-file "$SCRATCH/again.log" "$S" 2>"$SCRATCH/again.err"
			RC=$?
			[ "$RC" = 0 ] && track_mount "$S" "$(daemon_pid "$S")"
			check_eq "$how: the next start is refused (exit 1)" 1 "$RC"
			check "$how: ... in one line saying what to do: $(cat "$SCRATCH/again.err")" grep -q 'stop it and remove the socket' "$SCRATCH/again.err"
			rm -f "$S/seqpacket"
		else
			# (or the client took it while multifs stopped, then let go
			# when killed, leaving the mountpoint multifs made empty)
			note "$how: no client socket at PATH"
			check "$how: PATH holds nothing" sh -c "[ -z \"\$(ls -A '$S' 2>/dev/null)\" ]"
		fi
	fi
	start_multifs "$S" && check "$how: multifs starts again on PATH" joinable "$S"
done

finish
