#!/usr/bin/env bash
# t_vhost_hostile.sh: hostile vhost-user frontends against the real daemon.
#
# test/vhostprobe speaks the frontend side of vhost-user, written from the
# specification, not from multifs's code. Each of its hostile cases
# (`vhostprobe cases`: bad memory tables, bad messages and fds, bad ring
# numbers and addresses, bad descriptors and indirect tables, a receive
# ring the backend must not write, a kick storm, a second frontend while
# one is attached, a flood of connections, requests whose replies are
# never read, a frontend that keeps sending bad chains) runs on its own
# connection to A/host/vhost-user.
# After each:
#   - the probe's own verdict holds: a message the backend must refuse was
#     refused (an error ack or the connection ended), the persistent
#     offender was disconnected, and no case was left hanging (neither an
#     answer nor the end of the connection);
#   - the daemon survives: the same process, A still mounted, A/ctl there,
#     A/host/stats readable; the host slot is free again (attached: no)
#     within 3 s of the probe's exit; every 8 cases a real link joins.
# Then: the daemon's open fds and goroutines are back near their baseline
# (no fd of a hostile message kept), its log is bounded (rate-limited: a
# peer cannot flood it), and the drops of bad chains are counted in
# A/host/stats. Last, honest frontends attach and move 2000 numbered
# frames each way with nothing lost or damaged (single buffers, two-buffer
# chains, indirect tables, without EVENT_IDX), and a real QEMU guest
# attached as the host pings a namespace behind A 300 times with 0 lost.
. "$(dirname "$0")/lib.sh"

T_START=$(now_ms)
PROBE=$SCRATCH/vhostprobe
if ! (cd "$ROOT" && go build -o "$PROBE" ./test/vhostprobe) 2>"$SCRATCH/build.err"; then
	fail "build test/vhostprobe" "$(head -c 300 "$SCRATCH/build.err")"
	finish
fi
pass "test/vhostprobe built"

A=$SCRATCH/A
start_multifs "$A" || finish
PID=$(daemon_pid "$A")
SOCK=$A/host/vhost-user
if ! check "A/host/vhost-user is a symlink to a socket" test -L "$SOCK" -a -S "$SOCK"; then
	finish
fi

# A baseline of what must not leak, once the new daemon has settled.
wait_for "steady '$A/stats' open_fds goroutines" 5
FDS0=$(stat_key "$A/stats" open_fds)
GOR0=$(stat_key "$A/stats" goroutines)
note "baseline: open_fds $FDS0, goroutines $GOR0"

# cpu_ms PID SECONDS: the CPU time (ms, all threads) PID used over SECONDS.
cpu_ms() {
	local a b
	a=$(awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null)
	sleep "$2"
	b=$(awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null)
	echo $(((${b:-0} - ${a:-0}) * 10))
}

# fresh_daemon: replace a wedged daemon (SIGKILL, lazy unmount) with a new
# one on a new path: A, PID, SOCK, FDS0, GOR0 follow.
NDAEMON=0
fresh_daemon() {
	kill -KILL "$PID" 2>/dev/null
	wait_exit "$PID" 3
	timeout 5 fusermount -uz "$A" 2>/dev/null
	NDAEMON=$((NDAEMON + 1))
	A=$SCRATCH/A$NDAEMON
	start_multifs "$A" || return 1
	PID=$(daemon_pid "$A")
	SOCK=$A/host/vhost-user
	wait_for "steady '$A/stats' open_fds goroutines" 5
	FDS0=$(stat_key "$A/stats" open_fds)
	GOR0=$(stat_key "$A/stats" goroutines)
	note "a fresh daemon (pid $PID) on $A"
}

# daemon_ok: the same daemon, still mounted, its ctl and host/stats there.
daemon_ok() { alive "$PID" && is_mounted "$A" && [ -S "$A/ctl" ] && [ -r "$A/host/stats" ]; }

mapfile -t CASES < <("$PROBE" cases | cut -f1)
check "vhostprobe lists its cases (${#CASES[@]})" test "${#CASES[@]}" -ge 40
declare -A OUTCOME
i=0
bad=0
for c in "${CASES[@]}"; do
	i=$((i + 1))
	out=$(timeout 30 "$PROBE" hostile -path "$A" -case "$c" 2>&1)
	rc=$?
	line=$(grep "^case=$c " <<<"$out" | head -n 1)
	OUTCOME[$c]=$(sed -n 's/.* outcome=\([a-z]*\).*/\1/p' <<<"$line")
	note "$line"
	if [ "$rc" -ne 0 ]; then
		fail "case $c: the probe's verdict" "exit $rc: $(tr '\n' ' ' <<<"$out" | head -c 400)"
		bad=$((bad + 1))
	fi
	if ! daemon_ok; then
		fail "case $c: the daemon survives" "pid $PID alive: $(alive "$PID" && echo yes || echo no); mounted: $(is_mounted "$A" && echo yes || echo no); log: $(tail -n 3 "$SCRATCH/$(basename "$A").log" | tr '\n' ' ' | head -c 300)"
		bad=$((bad + 1))
		fresh_daemon || finish
		continue
	fi
	if ! wait_for "[ \"\$(stat_key '$A/host/stats' attached)\" = no ]" 3; then
		fail "case $c: the host slot is free again within 3 s of the probe's exit" "$(tr '\n' ' ' <"$A/host/stats" | head -c 300); daemon CPU over 1 s: $(cpu_ms "$PID" 1) ms"
		bad=$((bad + 1))
		# The daemon is wedged: the cases left need a working one. This
		# one is the test's own: end it and go on with a fresh daemon.
		fresh_daemon || finish
		continue
	fi
	if [ $((i % 8)) = 0 ] && ! joinable "$A"; then
		fail "after case $c: a link joins A" "not listed in A/links within 3 s"
		bad=$((bad + 1))
	fi
done
if [ "$bad" = 0 ]; then
	pass "every one of ${#CASES[@]} hostile cases: verdict held, the daemon (pid $PID) survived, the host slot freed"
fi
check_eq "no daemon had to be replaced" 0 "$NDAEMON"
check "the daemon survived them all (pid $PID, A mounted, ctl there)" daemon_ok
used=$(cpu_ms "$PID" 2)
if [ "$used" -le 100 ]; then
	pass "the daemon is idle again: $used ms of CPU over 2 s"
else
	fail "the daemon is idle again (at most 100 ms of CPU over 2 s)" "$used ms"
fi
check "a link still joins A" joinable "$A"
for c in "${!OUTCOME[@]}"; do
	[ -n "${OUTCOME[$c]}" ] || OUTCOME[$c]=none
	printf '%s %s\n' "${OUTCOME[$c]}" "$c"
done | sort | awk '{ n[$1]++; l[$1] = l[$1] " " $2 } END { for (o in n) printf "%s (%d):%s\n", o, n[o], l[o] }' |
	while read -r l; do note "outcome $l"; done
check_eq "the persistent offender (desc-persist) was disconnected" closed "${OUTCOME[desc-persist]:-}"

# Nothing a hostile frontend sent is kept: fds (the memfds, the extra
# eventfds) and goroutines come back.
check_back_to "A's open fds back to the baseline" "$A/stats" open_fds "$FDS0" 4
check_back_to "A's goroutines back to the baseline" "$A/stats" goroutines "$GOR0" 4
LINES=$(wc -l <"$SCRATCH/$(basename "$A").log")
if [ "$LINES" -lt 3000 ]; then
	pass "A's log is bounded: $LINES lines for ${#CASES[@]} hostile frontends"
else
	fail "A's log is bounded (rate-limited)" "$LINES lines"
fi
check_fails "A's log has no panic" grep -q 'panic' "$SCRATCH/$(basename "$A").log"
note "A/host/stats after the cases: $(tr '\n' ' ' <"$A/host/stats")"

# The honest frontends next.
# (Big frames slower: the probe's own link reads one frame per call, and
# the daemon drops what its socket cannot hold, link_tx_dropped.)
for opts in "-layout single" "-layout chain" "-layout indirect" "-layout single -no-event-idx -size 1500 -rate 5000" "-layout chain -size 9000 -count 500 -rate 1000"; do
	# shellcheck disable=SC2086
	out=$(timeout 40 "$PROBE" honest -path "$A" -count 2000 $opts 2>&1)
	rc=$?
	if [ "$rc" = 0 ]; then
		pass "an honest frontend ($opts) moves its frames both ways intact: $out"
	else
		fail "an honest frontend ($opts) moves its frames both ways intact" "exit $rc: $(tr '\n' ' ' <<<"$out" | head -c 300)"
	fi
	wait_for "[ \"\$(stat_key '$A/host/stats' attached)\" = no ]" 3
done

# And a real QEMU.
. "$ROOT/test/qemu/vhost_vm.sh"
vhost_vm_setup
NS=mfh$$
NET=169.254.$(($$ % 100 + 1))
netns_host "$NS" "mfh$$t" "$A" "$NET.1" || finish
start_vhost_vm q 300 0.01 "$NET.2/24" "$NET.1" "52:54:00:4d:56:21" "$SOCK"
vm_ready q || finish
check_stat "A/host/stats: QEMU attached after the hostile frontends" "$A/host/stats" attached yes 3
vm_pinged q
check_vhost_summary q 300
vm_done q

note "script time $(($(now_ms) - T_START)) ms"
finish
