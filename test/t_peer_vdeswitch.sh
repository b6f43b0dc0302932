#!/bin/bash
# t_peer_vdeswitch.sh: Debian's vde2 vde_switch as the far end of a link.
# Multifs A has a network namespace as host; a second namespace is plugged
# into a vde_switch of the test's own; `vde_plug A vde://SWITCH` links the
# two. Pings cross both ways with no loss and the switch's management
# console lists the link's port; `echo 1 > A/links/1/close` ends the link:
# its vde_plug exits, the switch frees the port and pings stop getting
# through. A new link through the plain path (`vde_plug A SWITCH`, the
# other form vdeplug 4.0.1 takes for a switch) carries them again.
. "$(dirname "$0")/lib.sh"

if ! command -v vde_switch >/dev/null 2>&1; then
	fail "vde_switch is installed" "missing (apt-get install vde2)"
	finish
fi

PA=$SCRATCH/A
SW=$SCRATCH/sw
MGMT=$SCRATCH/sw.mgmt
NSA=mfw$$a
NSS=mfw$$s
TAPA=mfw$$ta
TAPS=mfw$$ts
NET=169.254.$(($$ % 250 + 1))
IPA=$NET.1
IPS=$NET.2

# mgmt CMD: the reply of the switch's management console to CMD, between
# its DATA line and the closing "." (nothing if it does not answer).
mgmt() {
	"$PY" - "$MGMT" "$1" <<'EOF'
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(2)
s.connect(sys.argv[1])
def until(tail):
    buf, end = b"", time.monotonic() + 2
    while not buf.endswith(tail) and time.monotonic() < end:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    return buf.decode(errors="replace")
until(b"vde$ ")
s.sendall(sys.argv[2].encode() + b"\n")
out = until(b"vde$ ")
body = out.split("\n.\n")[0].split("END WITH '.'\n", 1)[-1]
sys.stdout.write(body if "END WITH" in out else "")
EOF
}

# switch_ports: the number of ports in use on the switch.
switch_ports() { mgmt port/print | grep -c '^Port '; }

# switch_progs: what the switch's endpoints said they are, one a line.
switch_progs() { mgmt port/print | sed -n 's/.*-- endpoint ID [0-9]* module unix prog *: //p'; }

# ping_ok FILE N: FILE is a ping summary with N sent, N received, 0 % loss.
ping_ok() { grep -Eq "^$2 packets transmitted, $2 received,.* 0% packet loss" "$1"; }

# ping_sum FILE: the summary line of a ping.
ping_sum() { grep transmitted "$1"; }

# --- the switch -----------------------------------------------------------------
# -d -p: in the foreground vde_switch reads console commands from stdin and
# exits at its EOF ("EOF on stdin, cleaning up and exiting").
# A daemon whose pid was not seen in time is still stopped at exit.
at_exit "p=\$(cat '$SCRATCH/sw.pid') && [ \"\$(cat /proc/\$p/comm)\" = vde_switch ] && kill -TERM \"\$p\""
vde_switch -s "$SW" -M "$MGMT" -d -p "$SCRATCH/sw.pid" </dev/null >>"$SCRATCH/bg.log" 2>&1
rc=$?
# The daemon writes the pid file after the parent has returned.
wait_for "[ -s '$SCRATCH/sw.pid' ]" 3
SWPID=$(cat "$SCRATCH/sw.pid" 2>/dev/null)
[ -n "$SWPID" ] && track "$SWPID"
check_eq "vde_switch -d starts (exit status)" 0 "$rc" || finish
check "vde_switch runs (pid ${SWPID:-none})" alive "$SWPID" || finish
check_within "the switch's ctl socket and console are up" 3 "[ -S '$SW/ctl' ] && [ -S '$MGMT' ]" ls -la "$SW" || finish
check_eq "the switch has no port in use yet" 0 "$(switch_ports)"

# --- A and the two namespaces ------------------------------------------------------
start_multifs "$PA" || finish
netns_host "$NSA" "$TAPA" "$PA/host" "$IPA" || finish
netns_host "$NSS" "$TAPS" "$SW" "$IPS" || finish
HS=$NSPID
check_within "the switch lists the namespace's plug" 3 "[ \"\$(switch_ports)\" = 1 ]" switch_progs

# --- the link: vde_plug A vde://SWITCH --------------------------------------------
bg vde_plug "$PA" "vde://$SW"
L1=$LASTPID
check_links "vde_plug A vde://SW joins A" "$PA" 1 3 || finish
check_within "the switch lists the link's port too (2 ports)" 3 "[ \"\$(switch_ports)\" = 2 ]" switch_progs
check_eq "A/links/1 is the link's vde_plug" "$L1" "$(stat_key "$PA/links/1/stats" pid)"
note "A/links/1 description: '$(stat_key "$PA/links/1/stats" description)'"
check_eq "A/links/1 description" "vdeplug: user=root pid=$L1" "$(stat_key "$PA/links/1/stats" description)"
progs=$(switch_progs | tr '\n' '|')
note "the switch's endpoints: '$progs'"
if switch_progs | grep -Fxq "vdeplug: user=root pid=$L1"; then
	pass "the switch names the link's vde_plug as an endpoint"
else
	fail "the switch names the link's vde_plug as an endpoint" "$progs"
fi

t0=$(now_ms)
ip netns exec "$NSA" ping -c 200 -i 0.005 -W 2 "$IPS" >"$SCRATCH/ping_as" 2>&1
note "A -> switch: $(ping_sum "$SCRATCH/ping_as") ($(($(now_ms) - t0)) ms)"
check "ping A -> switch's namespace: 200 sent, 200 received, 0% loss" ping_ok "$SCRATCH/ping_as" 200
t0=$(now_ms)
ip netns exec "$NSS" ping -c 200 -i 0.005 -W 2 "$IPA" >"$SCRATCH/ping_sa" 2>&1
note "switch -> A: $(ping_sum "$SCRATCH/ping_sa") ($(($(now_ms) - t0)) ms)"
check "ping switch's namespace -> A: 200 sent, 200 received, 0% loss" ping_ok "$SCRATCH/ping_sa" 200
check_fails "no DUP!s through a single link" grep -q 'DUP!' "$SCRATCH/ping_as" "$SCRATCH/ping_sa"
rx=$(stat_key "$PA/links/1/stats" rx_packets)
tx=$(stat_key "$PA/links/1/stats" tx_packets)
if [ "${rx:-0}" -ge 400 ] && [ "${tx:-0}" -ge 400 ]; then
	pass "A/links/1 carried both ways (rx_packets $rx, tx_packets $tx)"
else
	fail "A/links/1 carried both ways (400 or more each)" "rx_packets ${rx:-?}, tx_packets ${tx:-?}"
fi

# --- close the link ----------------------------------------------------------------
close_link "$PA/links/1/close" "echo 1 > A/links/1/close"
exits_after_close "$L1" "the link's vde_plug"
check_links "A/links is empty after the close" "$PA" "" 1
check_within "the switch frees the link's port (1 port left)" 3 "[ \"\$(switch_ports)\" = 1 ]" switch_progs
note "the switch's port freed $(($(now_ms) - CLOSED_AT)) ms after the close"
d0=$(stat_key "$PA/stats" dropped_no_link)
ip netns exec "$NSA" ping -c 5 -i 0.2 -W 1 "$IPS" >"$SCRATCH/ping_closed" 2>&1
note "after the close: $(ping_sum "$SCRATCH/ping_closed")"
if grep -Eq '^5 packets transmitted, 0 received' "$SCRATCH/ping_closed"; then
	pass "after the close no ping gets through (5 sent, 0 received)"
else
	fail "after the close no ping gets through" "$(ping_sum "$SCRATCH/ping_closed")"
fi
d1=$(stat_key "$PA/stats" dropped_no_link)
if [ "${d1:-0}" -gt "${d0:-0}" ]; then
	pass "A counts the host's frames as dropped_no_link ($d0 -> $d1)"
else
	fail "A counts the host's frames as dropped_no_link" "$d0 -> $d1"
fi
check "the switch still runs" alive "$SWPID"
check "the namespace's plug into the switch still runs" alive "$HS"

# --- a new link through the plain path ---------------------------------------------
bg vde_plug "$PA" "$SW"
L2=$LASTPID
check_links "vde_plug A SW (a plain path) joins A as link 2" "$PA" 2 3
ip netns exec "$NSA" ping -c 50 -i 0.01 -W 2 "$IPS" >"$SCRATCH/ping_l2" 2>&1
check "ping A -> switch's namespace through link 2: 0% loss" ping_ok "$SCRATCH/ping_l2" 50
close_link "$PA/links/2/close" "echo 1 > A/links/2/close"
exits_after_close "$L2" "link 2's vde_plug"
check_within "the switch frees link 2's port" 3 "[ \"\$(switch_ports)\" = 1 ]" switch_progs

finish
