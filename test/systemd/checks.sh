#!/bin/bash
# checks.sh: run inside the container t_systemd.sh boots, as the oneshot
# multifs-checks.service (no namespacing of its own: it sees what any shell
# in the container sees). It drives the installed multifs@.service and the
# man page's tmp-vm1.mount through systemctl and writes one line per check to
# /out/results ("ok NAME" or "FAIL NAME<tab>REASON"), then "done"; the unit's
# SuccessAction=/FailureAction= end the boot.
#
# Peers: Debian's vde_plug, and vdeprobe (the test's Go client, installed
# at $PROBE) where a single connect or counted frames are needed.

set -u
OUT=/out/results
PROBE=/usr/local/libexec/multifs-test/vdeprobe
P=/tmp/vm1
SD=/tmp/.vm1.multifs
W=/run/multifs-checks
: >"$OUT"
mkdir -p "$W"

ok() { echo "ok $1" >>"$OUT"; }
# bad NAME REASON: the reason on one line, bounded.
bad() { printf 'FAIL %s\t%s\n' "$1" "$(printf '%s' "${2:-}" | tr '\n\t' '  ' | head -c 400)" >>"$OUT"; }
# expect NAME CMD...: ok if CMD succeeds, else its output is the reason.
expect() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then ok "$name"; else bad "$name" "\`$*\` failed: $out"; fi
}
now_ms() { local t=${EPOCHREALTIME//[.,]/}; echo $((t / 1000)); }
# wait_for 'CMD' SECONDS: poll every 50 ms, bounded.
wait_for() {
	local deadline=$(($(now_ms) + $2 * 1000))
	while ! eval "$1" >/dev/null 2>&1; do
		[ "$(now_ms)" -ge "$deadline" ] && return 1
		sleep 0.05
	done
}

# mounted_in PID PATH: PATH is a multifs mount in PID's mount namespace
# (PID 1 is the container's systemd: the namespace of everything that is not
# inside a unit with a namespace of its own).
mounted_in() { awk -v p="$2" '$5 == p && / - fuse\.multifs / { f = 1 } END { exit !f }' "/proc/$1/mountinfo"; }
show_mounts() { local p=${2:-$P}; echo "$p in /proc/$1/mountinfo: $(awk -v p="$p" '$5 == p' "/proc/$1/mountinfo")"; }
# links_of: the open link ids.
links_of() { ls "$P/links" 2>/dev/null | tr '\n' ' ' | sed 's/ $//'; }

PIDS=()
stop_peers() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	PIDS=()
}

# exercise UNIT WHAT: start UNIT (which serves $P), prove it serves, joins,
# logs and refuses a second host where everybody can see, then stop it and
# prove it left nothing. WHAT prefixes the check names.
exercise() {
	local unit=$1 w=$2 t0 ms rc out d j host host2 vp got rx
	rm -rf "$W"
	mkdir -p "$W"

	# systemctl start must return only once ctl accepts: the first connect
	# right after it is the test, with no retry (vdeprobe dials ctl once).
	t0=$(now_ms)
	out=$(systemctl start "$unit" 2>&1)
	rc=$?
	ms=$(($(now_ms) - t0))
	if [ "$rc" -eq 0 ]; then ok "$w: systemctl start $unit ($ms ms)"; else bad "$w: systemctl start $unit" "exit $rc: $out"; fi
	"$PROBE" hold -dir "$P" -ready "$W/first" -max 200ms >"$W/first.out" 2>&1
	if [ -e "$W/first" ]; then
		ok "$w: a join through $P/ctl right after start returns succeeds at the first try"
	else
		bad "$w: a join through $P/ctl right after start returns succeeds at the first try" "$(cat "$W/first.out"); $(systemctl show -p ActiveState,SubState,Type "$unit" | tr '\n' ' ')"
	fi

	# Visible outside the unit: in PID 1's namespace and in ours. A service's
	# daemon must share PID 1's mount namespace: in one of its own (which
	# ProtectSystem= and the like make), systemd makes propagation slave.
	if [ "${unit%.service}" != "$unit" ]; then
		d=$(systemctl show -p MainPID --value "$unit")
		if [ "$(readlink "/proc/$d/ns/mnt")" = "$(readlink /proc/1/ns/mnt)" ]; then
			ok "$w: the daemon (pid $d) is in PID 1's mount namespace"
		else
			bad "$w: the daemon (pid $d) is in PID 1's mount namespace" "its $(readlink "/proc/$d/ns/mnt"), PID 1's $(readlink /proc/1/ns/mnt)"
		fi
		# The unit's CapabilityBoundingSet: SYS_ADMIN (21), NET_ADMIN
		# (12), FSETID (4), FOWNER (3), DAC_READ_SEARCH (2),
		# DAC_OVERRIDE (1), CHOWN (0), of those PID 1 has (nspawn keeps
		# NET_ADMIN only with a private network), and nothing else.
		out=$(sed -n 's/^CapBnd:[[:space:]]*//p' "/proc/$d/status")
		j=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/1/status)
		j=$(printf '%016x' $((0x20101f & 0x$j)))
		if [ "$out" = "$j" ]; then
			ok "$w: the daemon's capability bounding set is the unit's ($out)"
		else
			bad "$w: the daemon's capability bounding set is the unit's ($j)" "CapBnd: $out, PID 1's $(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/1/status)"
		fi
	fi
	# Both units serve with mode=0660,grp=kvm (the service through a
	# drop-in): the socket directory is the group's, set-group-id.
	out=$(stat -c '%U:%G %a' "$SD" 2>&1)
	if [ "$out" = "root:kvm 2750" ]; then ok "$w: the socket directory is root:kvm 2750"; else bad "$w: the socket directory is root:kvm 2750" "$out"; fi
	if mounted_in 1 "$P"; then ok "$w: $P is a fuse.multifs mount in PID 1's mount namespace"; else bad "$w: $P is a fuse.multifs mount in PID 1's mount namespace" "$(show_mounts 1)"; fi
	if mounted_in self "$P"; then ok "$w: $P is a fuse.multifs mount for a process outside the unit"; else bad "$w: $P is a fuse.multifs mount for a process outside the unit" "$(show_mounts self)"; fi
	d=$(ls "$P" 2>&1 | tr '\n' ' ' | sed 's/ $//')
	h=$(ls "$P/host" 2>&1 | tr '\n' ' ' | sed 's/ $//')
	d="$d; host: $h"
	if [ "$d" = "ctl host links seqpacket stats stream; host: ctl seqpacket stats stream vhost-user" ]; then ok "$w: the tree's entries are visible outside the unit ($d)"; else bad "$w: the tree's entries are visible outside the unit" "ls $P: '$d'"; fi
	expect "$w: stats says the host is detached" grep -qx 'host: detached' "$P/stats"

	# A vde_plug joins as a link, and frames go through it: a vdeprobe joined
	# to a vde_plug switch:// sends, the vde_plug carries them into the
	# multilink, a vdeprobe host receives them. vdeplug4's in-process switch
	# can drop a frame on a full datagram queue before multifs sees it (1
	# run in 30 under load, 500 frames/s), so the check is that frames pass
	# and that every one multifs counted from the link reached the host.
	"$PROBE" recv -dir "$P/host" -count 50 -idle 1s -max 20s -ready "$W/host.ready" >"$W/recv.out" 2>&1 &
	host=$!
	PIDS+=("$host")
	vde_plug "$P" "switch://$W/sw" </dev/null >"$W/vp.out" 2>&1 &
	vp=$!
	PIDS+=("$vp")
	if wait_for "[ -n \"\$(links_of)\" ] && [ -S '$W/sw/ctl' ] && [ -e '$W/host.ready' ]" 5; then
		j=$(links_of)
		ok "$w: vde_plug joined: links/ lists link $j"
		if grep -q "^pid: $vp\$" "$P/links/$j/stats" && grep -q '^description: vdeplug' "$P/links/$j/stats"; then
			ok "$w: links/$j/stats names the vde_plug (pid $vp)"
		else
			bad "$w: links/$j/stats names the vde_plug (pid $vp)" "$(head -n 5 "$P/links/$j/stats")"
		fi
		"$PROBE" send -dir "$W/sw" -count 50 -rate 200 >"$W/send.out" 2>&1
		wait "$host"
		got=$(sed -n 's/.*unique=\([0-9]*\) .*/\1/p' "$W/recv.out")
		rx=$(sed -n 's/^rx_packets: //p' "$P/links/$j/stats")
		if [ "${got:-0}" -gt 0 ] && [ "$got" = "$rx" ]; then
			ok "$w: frames sent through the vde_plug link reach the host: $got of 50, every one of the link's rx_packets ($rx)"
		else
			bad "$w: frames sent through the vde_plug link reach the host" "link rx_packets: $rx; $(cat "$W/send.out" "$W/recv.out")"
		fi
	else
		bad "$w: vde_plug joined" "links: '$(links_of)'; $(cat "$W/vp.out" "$W/recv.out")"
	fi

	# A second host is refused; its reason is in the unit's journal.
	# (the receiving host has left: wait until the daemon has seen it go)
	wait_for "grep -qx 'host: detached' '$P/stats'" 5
	"$PROBE" hold -dir "$P/host" -ready "$W/host1" -max 30s >"$W/host1.out" 2>&1 &
	host=$!
	PIDS+=("$host")
	if wait_for "[ -e '$W/host1' ]" 5; then
		vde_plug "$P/host" null:// </dev/null >"$W/host2.out" 2>&1 &
		host2=$!
		wait_for "! kill -0 $host2" 5 || kill "$host2"
		wait "$host2"
		rc=$?
		if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ]; then
			ok "$w: a second host (vde_plug, pid $host2) is refused: exit $rc, $(head -n 1 "$W/host2.out")"
		else
			bad "$w: a second host (vde_plug, pid $host2) is refused" "exit $rc: $(cat "$W/host2.out")"
		fi
		if wait_for "journalctl -q -u '$unit' -o cat | grep 'refused: a host is already attached' | grep -Eq 'pid=$host2( |\$)'" 5; then
			ok "$w: journalctl -u $unit: $(journalctl -q -u "$unit" -o cat | grep -E "pid=$host2( |\$)" | tail -n 1)"
		else
			bad "$w: journalctl -u $unit has the refusal of pid $host2" "$(journalctl -q -u "$unit" -o cat | tail -n 5)"
		fi
	else
		bad "$w: a first host attaches" "$(cat "$W/host1.out")"
	fi
	if journalctl -q -u "$unit" -o cat | grep -q "msg=serving .*path=$P "; then
		ok "$w: journalctl -u $unit has the daemon's log ($(journalctl -q -u "$unit" -o cat | grep -m 1 msg=serving | head -c 120))"
	else
		bad "$w: journalctl -u $unit has the daemon's log" "$(journalctl -q -u "$unit" -o cat | tail -n 5)"
	fi

	# systemctl stop: the mount and the socket directory are gone by the time
	# it returns, and every peer saw EOF.
	out=$(systemctl stop "$unit" 2>&1)
	rc=$?
	if [ "$rc" -eq 0 ]; then ok "$w: systemctl stop $unit"; else bad "$w: systemctl stop $unit" "exit $rc: $out"; fi
	if mounted_in 1 "$P" || mounted_in self "$P"; then bad "$w: after stop $P is not a mount" "$(show_mounts 1)"; else ok "$w: after stop $P is not a mount"; fi
	if [ -e "$SD" ]; then bad "$w: after stop the socket directory $SD is gone" "$(ls -la "$SD")"; else ok "$w: after stop the socket directory $SD is gone"; fi
	if wait_for "! kill -0 $vp && ! kill -0 $host" 3; then
		ok "$w: the peers saw EOF and exited"
	else
		bad "$w: the peers saw EOF and exited" "still running: $(for p in $vp $host; do tr '\0' ' ' <"/proc/$p/cmdline"; done 2>/dev/null)"
	fi
	if [ "$(systemctl show -p ActiveState --value "$unit")" = inactive ]; then
		ok "$w: $unit is inactive (not failed)"
	else
		bad "$w: $unit is inactive (not failed)" "$(systemctl show -p ActiveState,SubState,Result "$unit" | tr '\n' ' ')"
	fi
	stop_peers
}

# notify_waits: a fast daemon can win the race against a start that does not
# wait, so the wait itself is shown with a daemon made 1 s late (a drop-in
# puts a sleep before the installed ExecStart=, in the same process, so
# the unit's Type= and NotifyAccess= hold as installed): systemctl start
# must take that second and a join right after it succeed at once.
notify_waits() {
	local unit=multifs@tmp-vm2.service p=/tmp/vm2 dd=/etc/systemd/system/multifs@tmp-vm2.service.d ex t0 ms rc out
	ex=$(sed -n 's/^ExecStart=//p' /usr/local/lib/systemd/system/multifs@.service)
	mkdir -p "$dd"
	printf '[Service]\nExecStart=\nExecStart=/bin/sh -c '"'"'sleep 1 && exec "$$@"'"'"' sh %s\n' "$ex" >"$dd/late.conf"
	systemctl daemon-reload
	rm -f "$W/late"
	t0=$(now_ms)
	out=$(systemctl start "$unit" 2>&1)
	rc=$?
	ms=$(($(now_ms) - t0))
	"$PROBE" hold -dir "$p" -ready "$W/late" -max 200ms >"$W/late.out" 2>&1
	if [ "$rc" -eq 0 ] && [ "$ms" -ge 1000 ] && [ -e "$W/late" ]; then
		ok "service: systemctl start waits for READY=1: a daemon 1 s late, start took $ms ms, the join right after it succeeds"
	else
		bad "service: systemctl start waits for READY=1: a daemon 1 s late" "start exit $rc after $ms ms: $out; join: $(cat "$W/late.out")"
	fi
	systemctl stop "$unit"
	if mounted_in 1 "$p"; then bad "service: $unit stops" "$(show_mounts 1 "$p")"; else ok "service: $unit stops"; fi
	rm -rf "$dd"
	systemctl daemon-reload
}

# reset: what a failed section left (already reported) must not fail the next.
reset() {
	umount -l "$P" 2>/dev/null
	rm -rf "$SD"
}

trap 'stop_peers; echo done >>"$OUT"' EXIT

echo "started $(now_ms) $(systemctl is-system-running)" >>"$OUT"

notify_waits
# The unit's documented drop-in for a group of VM users.
mkdir -p /etc/systemd/system/multifs@tmp-vm1.service.d
bin=$(sed -n 's/^ExecStart=\([^ ]*\) .*/\1/p' /usr/local/lib/systemd/system/multifs@.service)
printf '[Service]\nExecStart=\nExecStart=%s -f -o mode=0660,grp=kvm %%f\n' "$bin" \
	>/etc/systemd/system/multifs@tmp-vm1.service.d/grp.conf
systemctl daemon-reload
exercise multifs@tmp-vm1.service service
reset
exercise tmp-vm1.mount mount
exit 0
