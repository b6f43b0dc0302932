#!/usr/bin/env bash
# vhost-profile.sh: where multifs's CPU goes with a vhost-user host
# (DPDK testpmd) and with a vde-2 host (the bench's vdeclient), both
# directions, 64-byte frames: `perf record -g` of the daemon for SECONDS
# (default 4) in each of the four runs, then the share of the daemon's
# samples under each system call and data-plane function that matters
# (perf report --children). Needs root, perf (linux-perf), dpdk-testpmd
# (dpdk-dev), gcc and libvdeplug-dev, hugepages as the bench sets them.
#
#	bash test/bench/vhost-profile.sh [SECONDS]
#
# The link side is multifs's own vdeprobe (a receiver) or vdeclient (a
# generator); the perf data stays in the scratch directory it prints.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECS=${1:-4}
S=$(mktemp -d /tmp/mfs-vhprof.XXXXXX)
M=$S/m
cd "$ROOT" || exit 1
go build -o "$S/multifs" ./cmd/multifs && go build -o "$S/vdeprobe" ./test/vdeprobe || exit 1
gcc -O2 -o "$S/vdeclient" test/bench/cclient/vdeclient.c -lvdeplug || exit 1
[ "$(cat /proc/sys/vm/nr_hugepages)" -ge 512 ] || echo 512 >/proc/sys/vm/nr_hugepages
grep -q ' /dev/hugepages hugetlbfs ' /proc/mounts || mount -t hugetlbfs nodev /dev/hugepages

"$S/multifs" --log-file "$S/m.log" "$M" || exit 1
P=$(pgrep -f -- "--log-file $S/m.log") # this script's own daemon, by its unique log path
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	fusermount -u "$M" 2>/dev/null
	rm -f /dev/hugepages/mfsprofmap_* # testpmd's hugepage file outlives it
	echo "perf data and logs: $S"
}
trap cleanup EXIT

# testpmd MODE: a testpmd host in MODE (txonly, rxonly) for SECS + 6 s.
testpmd() {
	(
		sleep 2
		echo "set fwd $1"
		echo "set txpkts 64"
		echo start
		sleep $((SECS + 6))
		echo stop
		echo quit
	) | timeout $((SECS + 20)) stdbuf -oL dpdk-testpmd -l 0,1 --main-lcore 1 --no-pci --iova-mode=va \
		--single-file-segments --file-prefix=mfsprof -m 256 --vdev "net_virtio_user0,path=$M/host/vhost-user" \
		-- -i --nb-cores=1 >>"$S/testpmd.log" 2>&1 &
	PIDS+=($!)
}

# gen URL: vdeclient generating 64-byte frames as fast as it can for SECS + 4 s.
gen() {
	(
		echo go
		sleep $((SECS + 8))
	) | "$S/vdeclient" gen "$1" -i 1 -s 64 -t $((SECS + 4)) -n 1000000000 >>"$S/gen.log" 2>&1 &
	PIDS+=($!)
}

# record NAME: perf record of the daemon for SECS, after 2 s of traffic.
record() {
	sleep 2
	perf record -q -F 2999 -g -p "$P" -o "$S/$1.data" -- sleep "$SECS" 2>/dev/null
}

# shares NAME: the shares of the daemon's samples (with children).
shares() {
	echo "== $1"
	perf report -i "$S/$1.data" --stdio --children --sort symbol 2>/dev/null |
		awk '/^ +[0-9]/ && $4 ~ /^(__x64_sys_(sendmmsg|recvmmsg|nanosleep|futex|epoll_wait|ppoll|write|read)|finish_task_switch.*|.*virtq\.\(\*Ring\)\.(TakeFrame|PutFrame)|runtime\.memmove|.*multilink\.\(\*Port\)\.(forward|drop)|runtime\.usleep.*|.*engine\.epollWaitKeepingP)$/ { printf "   %7s  %s\n", $1, $4 }'
	grep -hE '^(rx|tx)_(packets|dropped)' "$M/host/stats" "$M"/links/*/stats 2>/dev/null | tr '\n' ' '
	echo
}

wait_host() { for _ in $(seq 100); do [ "$(sed -n 's/^attached: //p' "$M/host/stats")" = "$1" ] && return 0; sleep 0.1; done; return 1; }

# host → link, vde-2 host
"$S/vdeprobe" recv -dir "$M" -count 1000000000 -idle 60s -max 120s >"$S/linksink.log" 2>&1 &
PIDS+=($!)
SINK=$!
sleep 0.5
gen "vde://$M/host"
record h2l-vde2
wait "${PIDS[-1]}" 2>/dev/null
shares h2l-vde2
wait_host no
# host → link, vhost-user host
testpmd txonly
wait_host yes
sleep 2
record h2l-vhost
shares h2l-vhost
wait "${PIDS[-1]}" 2>/dev/null
kill "$SINK" 2>/dev/null
wait_host no
# link → host, vde-2 host
"$S/vdeprobe" recv -dir "$M/host" -count 1000000000 -idle 60s -max 120s >"$S/hostsink.log" 2>&1 &
PIDS+=($!)
HS=$!
wait_host yes
gen "vde://$M"
record l2h-vde2
shares l2h-vde2
wait "${PIDS[-1]}" 2>/dev/null
kill "$HS" 2>/dev/null
wait_host no
# link → host, vhost-user host
testpmd rxonly
TP=$!
wait_host yes
gen "vde://$M"
record l2h-vhost
shares l2h-vhost
wait "$TP" 2>/dev/null
