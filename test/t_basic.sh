#!/bin/bash
# t_basic.sh: the tree, joining, stats, the host, closing links, bad writes,
# id reuse, a read-only tree, host detach/re-attach, permissions.
. "$(dirname "$0")/lib.sh"

P=$SCRATCH/b
SD=$(sockdir_of "$P")

start_multifs "$P" || finish
D=$LASTPID

# --- the tree -------------------------------------------------------------
check_eq "daemon found" yes "$( [ -n "$D" ] && alive "$D" && echo yes)"
check "PATH is a FUSE mount" is_mounted "$P"
check_eq "tree listing" "ctl host links seqpacket stats" "$(ls "$P" | tr '\n' ' ' | sed 's/ $//')"
check_eq "host listing" "ctl seqpacket stats vhost-user" "$(ls "$P/host" | tr '\n' ' ' | sed 's/ $//')"
check "seqpacket is a symlink to a socket" test -L "$P/seqpacket" -a -S "$P/seqpacket"
check "host/seqpacket is a symlink to a socket" test -L "$P/host/seqpacket" -a -S "$P/host/seqpacket"
check "host/vhost-user is a symlink to a socket" test -L "$P/host/vhost-user" -a -S "$P/host/vhost-user"
check_eq "links is empty" "" "$(links_of "$P")"
check "ctl is a symlink" test -L "$P/ctl"
check "ctl points to a socket" test -S "$P/ctl"
check_eq "ctl points into the socket dir" "$SD" "$(dirname "$(readlink "$P/ctl")")"
check "host/ctl is a symlink to a socket" test -L "$P/host/ctl" -a -S "$P/host/ctl"
check "socket dir exists" test -d "$SD"
check_eq "root stats before any join" "links: 0|links_total: 0|host: detached" \
	"$(grep -E '^(links|links_total|host):' "$P/stats" | tr '\n' '|' | sed 's/|$//')"
for k in links links_total host hosts_total dropped_no_host dropped_no_link dup_dropped; do
	check "root stats has $k" grep -q "^$k: " "$P/stats"
done
check_eq "host/stats says attached: no" "attached: no" "$(head -n 1 "$P/host/stats")"

# --- permissions (defaults: mode 0600, dirmode 02700) -------------------------
check_eq "PATH mode is dirmode 2700" 2700 "$(stat -c %a "$P")"
check_eq "links/ mode is 2700" 2700 "$(stat -c %a "$P/links")"
check_eq "stats mode 0400" 400 "$(stat -c %a "$P/stats")"
check_eq "host/ctl socket mode 0600" 600 "$(stat -L -c %a "$P/host/ctl")"

# --- two links ----------------------------------------------------------------
bg vde_plug "$P" null://
L1=$LASTPID
check_within "the first vde_plug joins as link 1" 2 "[ -d '$P/links/1' ]" show_links "$P"
bg vde_plug "$P" null://
L2=$LASTPID
check_links "ls links shows 1 2 after two joins" "$P" '1 2' 2
check_eq "links/1 listing" "close stats" "$(ls "$P/links/1" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
check_eq "links/1 id" 1 "$(stat_key "$P/links/1/stats" id)"
check_eq "links/2 id" 2 "$(stat_key "$P/links/2/stats" id)"
check_eq "links/1 pid is the first vde_plug" "$L1" "$(stat_key "$P/links/1/stats" pid)"
check_eq "links/2 pid is the second vde_plug" "$L2" "$(stat_key "$P/links/2/stats" pid)"
check_eq "links/1 transport" vde "$(stat_key "$P/links/1/stats" transport)"
check_eq "links/1 uid" 0 "$(stat_key "$P/links/1/stats" uid)"
check "links/1 description names the vde_plug" grep -q "^description: .*pid=$L1" "$P/links/1/stats"
check "links/1 since is RFC 3339 UTC" grep -Eq '^since: [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$' "$P/links/1/stats"
for k in id transport description pid uid gid since rx_packets rx_bytes rx_dropped tx_packets tx_bytes tx_dropped idle_ms rx_dup_dropped; do
	check "links/2 stats has $k" grep -q "^$k: " "$P/links/2/stats"
done
check_eq "root stats links: 2" 2 "$(stat_key "$P/stats" links)"
check_eq "root stats links_total: 2" 2 "$(stat_key "$P/stats" links_total)"

# --- the host -------------------------------------------------------------------
bg vde_plug "$P/host" null://
H1=$LASTPID
check_within "host/stats attached: yes" 2 "[ \"\$(head -n 1 '$P/host/stats')\" = 'attached: yes' ]" head -n 1 "$P/host/stats"
check_eq "root stats host: attached" attached "$(stat_key "$P/stats" host)"
check_eq "host pid is the vde_plug" "$H1" "$(stat_key "$P/host/stats" pid)"
check_eq "host transport" vde "$(stat_key "$P/host/stats" transport)"
for k in transport description pid uid gid since rx_packets rx_bytes rx_dropped tx_packets tx_bytes tx_dropped idle_ms; do
	check "host/stats has $k" grep -q "^$k: " "$P/host/stats"
done
check_eq "links did not change when the host attached" "1 2" "$(links_of "$P")"

# A second host is refused: its vde_plug exits non-zero quickly.
vde_plug "$P/host" null:// </dev/null >>"$SCRATCH/bg.log" 2>&1 &
H2=$!
track "$H2"
if wait_exit "$H2" 2; then
	wait "$H2"
	rc=$?
	if [ "$rc" -ne 0 ]; then pass "second host refused (exit $rc)"; else fail "second host refused" "vde_plug exited 0"; fi
else
	fail "second host refused" "its vde_plug still runs after 2 s"
fi
check_eq "host is still the first vde_plug" "$H1" "$(stat_key "$P/host/stats" pid)"
check "first host vde_plug still runs" alive "$H1"

# --- closing a link ---------------------------------------------------------------
close_link "$P/links/1/close" "echo 1 > links/1/close succeeds"
check_eq "ls links right after close" 2 "$(links_of "$P")"
check_fails "stat links/1 fails right after close" stat "$P/links/1"
exits_after_close "$L1" "link 1's vde_plug"
check_eq "root stats links: 1 after close" 1 "$(stat_key "$P/stats" links)"
check_eq "root stats links_total still 2" 2 "$(stat_key "$P/stats" links_total)"
check_fails "closing a closed link fails" sh -c "echo 1 > '$P/links/1/close'"

# --- bad writes to close -----------------------------------------------------------
for v in 0 abc "1 1" 2 -1 "" "11"; do
	if (echo "$v" >"$P/links/2/close") 2>"$SCRATCH/err"; then
		fail "echo '$v' > close is refused" "write succeeded"
	elif grep -q "Invalid argument" "$SCRATCH/err"; then
		pass "echo '$v' > close gets EINVAL"
	else
		fail "echo '$v' > close gets EINVAL" "$(cat "$SCRATCH/err")"
	fi
done
(printf '' >"$P/links/2/close") 2>/dev/null
check_eq "link 2 still open after the bad writes" 2 "$(links_of "$P")"
check "link 2's vde_plug still runs" alive "$L2"

# --- ids are never reused -------------------------------------------------------
bg vde_plug "$P" null://
L3=$LASTPID
check_links "a new join gets id 3" "$P" '2 3' 2
check_eq "links/3 pid" "$L3" "$(stat_key "$P/links/3/stats" pid)"
check_eq "root stats links_total: 3" 3 "$(stat_key "$P/stats" links_total)"

# --- the tree is read-only except close --------------------------------------------
before=$(cd "$P" && find . | sort)
check_fails "write to stats fails" sh -c "echo x > '$P/stats'"
check_fails "write to host/stats fails" sh -c "echo x > '$P/host/stats'"
check_fails "write to links/2/stats fails" sh -c "echo x > '$P/links/2/stats'"
check_fails "rm stats fails" rm -f "$P/stats"
check_fails "rm links/2/stats fails" rm -f "$P/links/2/stats"
check_fails "rm -r links/2 fails" rm -rf "$P/links/2"
check_fails "rmdir links/2 fails" rmdir "$P/links/2"
check_fails "rm ctl fails" rm -f "$P/ctl"
check_fails "mkdir in PATH fails" mkdir "$P/newdir"
check_fails "mkdir in links fails" mkdir "$P/links/9"
check_fails "touch new file fails" touch "$P/newfile"
check_fails "touch in links/2 fails" touch "$P/links/2/newfile"
check_fails "mv links/2 fails" mv "$P/links/2" "$P/links/7"
check_fails "mv stats fails" mv "$P/stats" "$P/stats2"
check_fails "ln -s in PATH fails" ln -s /tmp "$P/lnk"
after=$(cd "$P" && find . | sort)
check_eq "the tree is unchanged" "$before" "$after"
check_eq "links still 2 3" "2 3" "$(links_of "$P")"
check "stats still readable" grep -q '^links: 2$' "$P/stats"

# --- the host leaves; a new one comes --------------------------------------------
kill "$H1"
check_within "host/stats attached: no after its vde_plug is killed" 2 "[ \"\$(head -n 1 '$P/host/stats')\" = 'attached: no' ]" head -n 1 "$P/host/stats"
check_eq "root stats host: detached" detached "$(stat_key "$P/stats" host)"
bg vde_plug "$P/host" null://
H3=$LASTPID
check_stat "a new host attaches" "$P/host/stats" pid "$H3" 2
check_eq "root stats hosts_total: 2" 2 "$(stat_key "$P/stats" hosts_total)"
check_eq "links unaffected by the host change" "2 3" "$(links_of "$P")"

# --- mode=0666 via a multi:// URL ---------------------------------------------------
Q=$SCRATCH/q
start_multifs "multi://$Q[mode=0666]" || finish
# start_multifs tracked the URL; track the path itself for cleanup.
track_mount "$Q" "$(daemon_pid "$Q")"
if is_mounted "$Q"; then
	check_eq "mode=0666: PATH dirmode 2777" 2777 "$(stat -c %a "$Q")"
	check_eq "mode=0666: stats 0444" 444 "$(stat -c %a "$Q/stats")"
	check_eq "mode=0666: socket 0666" 666 "$(stat -L -c %a "$Q/ctl")"
	# The tree shows the seed's dirmode; the socket directory never lets
	# others write (they could rename ctl away and bind their own).
	check_eq "mode=0666: socket dir 2755 (no w for group or others)" 2755 "$(stat -c %a "$(sockdir_of "$Q")")"
	bg vde_plug "$Q" null://
	check_within "mode=0666: a vde_plug joins" 2 "[ -e '$Q/links/1/close' ]" show_links "$Q"
	check_eq "mode=0666: close 0222" 222 "$(stat -c %a "$Q/links/1/close" 2>&1)"
else
	fail "multi://$Q[mode=0666] is mounted" "not in /proc/mounts"
fi

finish
