#!/bin/bash
# t_sec06_queue_memory.sh: the queues of links that never read stay within
# their documented bound (64 MiB in all) whatever the frames' size, and
# their memory goes back to the system as soon as the links leave: links
# that never read cannot make the daemon hold memory without bound.
#
# For 14-, 60- and 1514-byte frames in turn, each against a daemon of its
# own: a throw-away user, mfu_a1, joins 200 links that never read, every
# other one a vde-2 link and a stream one (test/hostile/stuck_links.py
# mixed), and attaches a host that sends twice what
# 64 MiB shared by 200 queues can hold (flood_host.py). Once the host's
# frames are all read, the daemon's peak RSS (VmHWM, reset through
# /proc/PID/clear_refs once the links have joined) must be at most J, its
# RSS with the links joined and nothing queued, plus 64 MiB plus SLACK.
# SLACK (8 MiB) is what a flood costs beyond the queues: the host's receive
# batch (0.3 MiB), a queue writer goroutine per stuck link (its stack:
# 1.6 MiB for 200), the Go runtime's own slack. Measured here: a daemon is
# 6.4 MB idle, J is 11.0-11.8 MB, and the peak J + 64 MiB + 0.4-2.2 MB
# (80.5 MB); before the fix it was 352, 134 and 84 MB (each frame's slice
# header and its growth were not counted).
# Then the links leave: within 3 s the RSS must be back under J + BACK
# (4 MiB; measured: J + 0.4-1.8 MB, 170 ms after). Before the fix it stayed
# at its peak: nothing made the runtime collect the queues' chunks, nor
# return them. Their descriptors and goroutines (queue writers, and the
# writers of a cut frame's rest) must go with them.
. "$(dirname "$0")/lib.sh"

MiB=1024 # in kB, as /proc/PID/status counts
QUEUES=$((64 * MiB))
SLACK=$((8 * MiB))
BACK=$((4 * MiB))
LINKS=200

U=mfu_a1
throwaway_user "$U"
hostile_copy
US=$SCRATCH/u # where the user binds its links' data sockets
mkdir "$US"
chown "$U" "$US"

# status_kb KEY: VmRSS or VmHWM of the daemon, in kB.
status_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$D/status"; }
rss() { status_kb VmRSS; }
# reset_peak: VmHWM starts again from the current RSS.
reset_peak() { echo 5 >"/proc/$D/clear_refs"; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f MB", k * 1024 / 1e6 }'; }

# dropping: how many open links have tx_dropped > 0.
dropping() {
	local f n=0
	for f in "$P"/links/*/stats; do
		[ "$(stat_key "$f" tx_dropped 2>/dev/null)" -gt 0 ] 2>/dev/null && n=$((n + 1))
	done
	echo "$n"
}

for size in 14 60 1514; do
	# A daemon of its own for each size: what one flood left behind must
	# not hide what the next one costs.
	P=$SCRATCH/q$size
	# mode=0666: the user may join as a link and as the host.
	start_multifs "$P" -o mode=0666 || break
	D=$LASTPID
	IDLE=$(rss)
	wait_for "steady '$P/stats' open_fds goroutines" 5
	FD0=$(stat_key "$P/stats" open_fds)
	GR0=$(stat_key "$P/stats" goroutines)
	rm -f "$US/ready" "$US/release"
	bg runuser -u "$U" -- "$PY" "$HD/stuck_links.py" "$P" "$LINKS" "$US" "$US/ready" "$US/release" 60 mixed
	HOLDER=$LASTPID
	if ! check_stat "$size: $LINKS links that never read joined" "$P/stats" links "$LINKS" 15; then
		break
	fi
	J=$(rss)
	reset_peak
	count=$((2 * (64 << 20) / LINKS / size + 100))
	out=$(runuser -u "$U" -- timeout 20 "$PY" "$HD/flood_host.py" "$P" "$size" "$count" 15 2>&1)
	check_eq "$size: the host sent $count frames of $size bytes ($out)" "sent=$count" "${out%% *}"
	# The host's frames are all read (and so queued or dropped) once it is
	# detached; then every link's queue, or the total, is full. RSS is
	# taken before the 200 stats files are read: serving FUSE reads costs
	# the daemon buffers too, but they are not the queues'.
	check_stat "$size: the host detached" "$P/stats" host detached 10
	F=$(rss)
	H=$(status_kb VmHWM)
	check_eq "$size: every stuck link drops frames" "$LINKS" "$(dropping)"
	bound=$((J + QUEUES + SLACK))
	note "$size-byte frames: RSS idle $(mb "$IDLE"), joined $(mb "$J"), full $(mb "$F"), peak $(mb "$H"); bound $(mb "$bound")"
	if [ -n "$H" ] && [ "$H" -le "$bound" ]; then
		pass "$size: peak RSS $(mb "$H") within J + 64 MiB + 8 MiB ($(mb "$bound"))"
	else
		fail "$size: peak RSS within J + 64 MiB + 8 MiB ($(mb "$bound"))" "peak $(mb "$H"), J $(mb "$J"), idle $(mb "$IDLE")"
	fi

	touch "$US/release"
	wait_exit "$HOLDER" 10
	check_stat "$size: the stuck links left" "$P/stats" links 0 10
	# Each stuck link had a queue writer, and a stream one cut mid-frame a
	# writer for the rest of that frame: all gone with their links.
	check_back_to "$size: no descriptor left of the stuck links" "$P/stats" open_fds "$FD0" 2
	check_back_to "$size: no goroutine left of the stuck links" "$P/stats" goroutines "$GR0" 2
	T0=$(now_ms)
	if wait_for "[ \"\$(rss)\" -le $((J + BACK)) ]" 3; then
		pass "$size: RSS back to $(mb "$(rss)") ($(($(now_ms) - T0)) ms after the links left; J + 4 MiB is $(mb $((J + BACK))))"
	else
		fail "$size: RSS back under J + 4 MiB ($(mb $((J + BACK)))) within 3 s of the links leaving" "RSS $(mb "$(rss)")"
	fi

	check "$size: the daemon still serves" test -S "$P/ctl"
	check_log_clean "$size: no error or panic in the log" "$SCRATCH/q$size.log"
	timeout 5 fusermount -u "$P"
	check_exits "$size: the daemon stops at the unmount" "$D" 5
done
finish
