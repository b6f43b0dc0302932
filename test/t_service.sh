#!/bin/bash
# t_service.sh: multifs as a service (make install, systemd's notify
# protocol, the template unit).
#  - make install PREFIX=DIR puts the binary, the man page and the template
#    unit where they belong, the unit naming the installed binary and
#    passing `systemd-analyze verify`; make uninstall removes exactly them;
#  - with -f and NOTIFY_SOCKET (what a Type=notify unit gives it), READY=1
#    comes once PATH is mounted and ctl accepts connections, STOPPING=1 when
#    SIGTERM begins the stop, then exit 0; a daemonized multifs sends none;
#  - daemonized without --log-file it logs to syslog (/dev/log; a listener
#    of our own stands in where no syslog daemon runs), tag multifs,
#    including the reason a second host is refused; with --log-file
#    nothing goes there; without any syslog the start says so in one
#    warning line and serves;
#  - an unprivileged start that cannot open /dev/fuse says what to do.
. "$(dirname "$0")/lib.sh"

# --- make install / uninstall -----------------------------------------------
PFX=$SCRATCH/prefix
if (cd "$ROOT" && make -s install PREFIX="$PFX" BIN="$SCRATCH/bin") >"$SCRATCH/install.out" 2>&1; then
	pass "make install PREFIX=$PFX"
else
	fail "make install" "$(tail -n 3 "$SCRATCH/install.out")"
fi
UNIT=$PFX/lib/systemd/system/multifs@.service
for f in "$PFX/bin/multifs" "$PFX/share/man/man1/multifs.1" "$UNIT"; do
	check "installed: ${f#"$PFX"/}" test -s "$f"
done
check "the installed binary runs" "$PFX/bin/multifs" --version
check "the unit starts the installed binary with -f: $(grep ^ExecStart= "$UNIT")" grep -qx "ExecStart=$PFX/bin/multifs -f %f" "$UNIT"
check "the unit is Type=notify" grep -qx "Type=notify" "$UNIT"
cp "$UNIT" "$SCRATCH/multifs@tmp-vm1.service"
if systemd-analyze verify --man=no "$SCRATCH/multifs@tmp-vm1.service" >"$SCRATCH/verify.out" 2>&1 && ! [ -s "$SCRATCH/verify.out" ]; then
	pass "systemd-analyze verify: the unit is clean"
else
	fail "systemd-analyze verify" "$(head -c 300 "$SCRATCH/verify.out")"
fi
check "man -l shows the page" sh -c "man -l '$PFX/share/man/man1/multifs.1' 2>/dev/null | grep -q 'multifs'"
(cd "$ROOT" && make -s uninstall PREFIX="$PFX") >/dev/null 2>&1
check_eq "make uninstall removes what make install put" "" "$(find "$PFX" -type f)"

# --- sd_notify ----------------------------------------------------------------
# notify_listen SOCK OUT P: a datagram socket at SOCK writing each message
# to OUT, and whether P/ctl accepted a connection when READY=1 came.
notify_listen() {
	"$PY" - "$1" "$2" "$3" <<'EOF' &
import os, socket, sys
sock, out, p = sys.argv[1:4]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sock)
s.settimeout(20)
with open(out, "w", buffering=1) as f:
    try:
        while True:
            m = s.recv(4096).decode()
            note = ""
            if "READY=1" in m:
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    c.connect(os.path.join(p, "ctl"))
                    note = " ctl=accepting"
                except OSError as e:
                    note = " ctl=%s" % e.strerror
            f.write(m.replace("\n", " ") + note + "\n")
            if "STOPPING=1" in m:
                break
    except socket.timeout:
        pass
EOF
	LASTPID=$!
	track "$LASTPID"
	check_within "a notify socket listens at $1" 3 "[ -S '$1' ]"
}

P=$SCRATCH/vm1
notify_listen "$SCRATCH/notify" "$SCRATCH/notify.out" "$P"
L=$LASTPID
NOTIFY_SOCKET=$SCRATCH/notify "$MULTIFS" -f "$P" </dev/null >"$SCRATCH/fg.log" 2>&1 &
F=$!
track_mount "$P" "$F"
check_within "-f with NOTIFY_SOCKET: READY=1, with ctl already accepting" 5 \
	"grep -qx 'READY=1 ctl=accepting' '$SCRATCH/notify.out'" cat "$SCRATCH/notify.out"
kill -TERM "$F"
wait "$F"
check_eq "-f: SIGTERM: exit status 0" 0 "$?"
check_within "-f: STOPPING=1 after READY=1" 3 "[ \"\$(tr '\\n' ' ' <'$SCRATCH/notify.out')\" = 'READY=1 ctl=accepting STOPPING=1 ' ]" cat "$SCRATCH/notify.out"
check "-f: the log went to stderr" grep -q 'msg=serving' "$SCRATCH/fg.log"
wait "$L" 2>/dev/null

# A daemonized multifs is not the unit's main process: it sends nothing.
notify_listen "$SCRATCH/notify2" "$SCRATCH/notify2.out" "$P"
L=$LASTPID
NOTIFY_SOCKET=$SCRATCH/notify2 "$MULTIFS" --log-file "$SCRATCH/d.log" "$P"
D=$(daemon_pid "$P")
track_mount "$P" "$D"
sleep 0.5 # a window for a notification that must not come
check_eq "daemonized: no notification" "" "$(cat "$SCRATCH/notify2.out")"
fusermount -u "$P"
check_exits "daemonized: stopped" "$D" 3
kill "$L" 2>/dev/null

# --- syslog -------------------------------------------------------------------
if [ -e /dev/log ]; then
	# A real syslog runs here: leave it alone, and look at what the
	# daemon is connected to instead.
	HAVE_SYSLOG=1
	note "/dev/log exists (a syslog daemon runs): checking the daemon's connection to it"
else
	HAVE_SYSLOG=0
	"$PY" - "$SCRATCH/syslog.out" <<'EOF' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
s.settimeout(15)
with open(sys.argv[1], "w", buffering=1) as f:
    try:
        while True:
            f.write(s.recv(8192).decode(errors="replace").rstrip("\n") + "\n")
    except socket.timeout:
        pass
    finally:
        os.unlink("/dev/log")
EOF
	SL=$!
	track "$SL"
	at_exit "rm -f /dev/log" # ours: there was none
	check_within "a stand-in syslog listens at /dev/log" 3 "[ -S /dev/log ]"
fi
P=$SCRATCH/vm2
"$MULTIFS" "$P" 2>"$SCRATCH/sl.err"
check_eq "daemonized, no --log-file, a syslog there: exit 0 and nothing on stderr" "0:" "$?:$(cat "$SCRATCH/sl.err")"
D=$(daemon_pid "$P")
track_mount "$P" "$D"
if [ "$HAVE_SYSLOG" = 0 ]; then
	check_within "syslog: the daemon's 'serving' line arrived, tag multifs[pid]" 3 \
		"grep -q 'multifs\\[$D\\]: .*msg=serving' '$SCRATCH/syslog.out'" tail -n 2 "$SCRATCH/syslog.out"
	bg vde_plug "$P/host" null://
	check_stat "syslog: a host attaches" "$P/host/stats" attached yes 3
	timeout 5 vde_plug "$P/host" null:// </dev/null >/dev/null 2>"$SCRATCH/second.err"
	check_within "syslog: a refused second host is logged with the reason" 3 \
		"grep -q 'a host is already attached' '$SCRATCH/syslog.out'" tail -n 2 "$SCRATCH/syslog.out"
	check "syslog: the lines carry no timestamp of their own (syslog stamps them)" sh -c "! grep -q 'multifs\\[$D\\]: time=' '$SCRATCH/syslog.out'"
else
	check "syslog: the daemon is connected to /dev/log" sh -c "ss -xp 2>/dev/null | grep -q 'pid=$D,'"
fi
fusermount -u "$P"
check_exits "syslog: stopped" "$D" 3
if [ "$HAVE_SYSLOG" = 0 ]; then
	# Only multifs's lines count: the stand-in is the machine's /dev/log,
	# and other programs (useradd, pam) may log there meanwhile.
	N0=$(grep -c 'multifs\[' "$SCRATCH/syslog.out")
	P=$SCRATCH/vm3
	"$MULTIFS" --log-file "$SCRATCH/vm3.log" "$P"
	D=$(daemon_pid "$P")
	track_mount "$P" "$D"
	fusermount -u "$P"
	check_exits "--log-file: stopped" "$D" 3
	check_eq "--log-file wins: nothing more of multifs went to syslog" "$N0" "$(grep -c 'multifs\[' "$SCRATCH/syslog.out")"
	check "--log-file wins: the lines are in the file" grep -q 'msg=stopped' "$SCRATCH/vm3.log"
	kill "$SL" 2>/dev/null
	wait "$SL" 2>/dev/null
	rm -f /dev/log # ours (a killed listener leaves its socket file)

	# No syslog at all: one warning line, and the daemon serves.
	P=$SCRATCH/vm4
	"$MULTIFS" "$P" 2>"$SCRATCH/nosl.err"
	check_eq "no syslog: exit 0" 0 "$?"
	D=$(daemon_pid "$P")
	track_mount "$P" "$D"
	check "no syslog: one warning line saying to give --log-file: $(cat "$SCRATCH/nosl.err")" \
		sh -c "[ \$(wc -l <'$SCRATCH/nosl.err') = 1 ] && grep -q 'warning:.*--log-file' '$SCRATCH/nosl.err'"
	check "no syslog: it serves" joinable "$P"
	fusermount -u "$P"
	check_exits "no syslog: stopped" "$D" 3
fi

# --- /dev/fuse closed to an unprivileged user ----------------------------------
U=mfu_s1
id -u "$U" >/dev/null 2>&1 || useradd -M -N -s /usr/sbin/nologin "$U"
at_exit "userdel $U"
FM=$(stat -c %a /dev/fuse)
at_exit "chmod $FM /dev/fuse"
chmod 0600 /dev/fuse
UD=$SCRATCH/user
mkdir -m 0755 "$UD"
chown "$U" "$UD"
chmod 755 "$SCRATCH"
runuser -u "$U" -- "$MULTIFS" -f "$UD/vm" </dev/null >/dev/null 2>"$SCRATCH/fuse.err"
RC=$?
chmod "$FM" /dev/fuse
check_eq "/dev/fuse 0600, an ordinary user: exit 1" 1 "$RC"
check "/dev/fuse 0600: the error names /dev/fuse and what to do: $(cat "$SCRATCH/fuse.err")" \
	sh -c "grep -q '/dev/fuse' '$SCRATCH/fuse.err' && grep -q 'chmod 0666 /dev/fuse' '$SCRATCH/fuse.err'"
check_fails "/dev/fuse 0600: nothing left behind" test -e "$UD/vm"

finish
