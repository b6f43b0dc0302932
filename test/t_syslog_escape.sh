#!/bin/bash
# t_syslog_escape.sh: peer text reaches syslog escaped once. A vde-2 peer
# whose description holds a newline, a quote and a backslash joins a
# daemonized multifs that logs to syslog (no --log-file); the line that
# reaches the syslog socket shows the newline as \x0a (not \\x0a, as when
# logrus's quoting escaped peertext's escapes again), the value unquotes
# the Go way to the very bytes the peer sent, and nothing is forged.
#
# The script runs in a mount namespace of its own (it re-executes itself
# under unshare -m), with a tmpfs over /run: the socket that stands in for
# syslog is /run/syslog, where log/syslog looks when /dev/log does not
# answer, and is also bind-mounted over /dev/log if this machine has one
# (a real syslog is neither used nor disturbed).
if [ -z "${MFT_IN_MOUNT_NS:-}" ]; then
	MFT_IN_MOUNT_NS=1 exec unshare -m --propagation private "$BASH" "$0" "$@"
fi
. "$(dirname "$0")/lib.sh"

if ! mount -t tmpfs -o mode=0755 tmpfs /run; then
	fail "a tmpfs over /run in this mount namespace" "mount failed"
	finish
fi
SL_OUT=$SCRATCH/syslog.out
"$PY" - "$SL_OUT" <<'EOF' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/run/syslog")
s.settimeout(30)
with open(sys.argv[1], "wb", buffering=0) as f:
    try:
        while True:
            # One datagram, one line: a raw newline inside would show.
            f.write(s.recv(65536).rstrip(b"\n") + b"\n")
    except socket.timeout:
        pass
EOF
track $!
check_within "a stand-in syslog listens at /run/syslog" 3 "[ -S /run/syslog ]"
if [ -e /dev/log ]; then
	mount --bind /run/syslog /dev/log || fail "/run/syslog bind-mounted over /dev/log" "mount failed"
fi

P=$SCRATCH/m
"$MULTIFS" "$P" 2>"$SCRATCH/start.err"
check_eq "daemonized without --log-file: exit 0, nothing on stderr" "0:" "$?:$(cat "$SCRATCH/start.err")"
D=$(daemon_pid "$P")
track_mount "$P" "$D"
check_within "its log reaches the stand-in syslog" 5 \
	"grep -q 'multifs\\[$D\\]: .*msg=serving' '$SL_OUT'" tail -n 3 "$SL_OUT"

# The description: a newline, a forged line, a quote and a backslash.
DESC='vm
level=error msg=forged "q" a\b'
DESC_HEX=$(printf '%s' "$DESC" | od -An -tx1 | tr -d ' \n')
"$PY" "$ROOT/test/hostile/vde_desc.py" "$P/ctl" --desc-hex "$DESC_HEX" --sockdir "$SCRATCH" \
	--hold 10 >"$SCRATCH/peer.out" 2>&1 &
track $!
check_within "the peer joins" 5 "grep -q '^result=reply' '$SCRATCH/peer.out'" cat "$SCRATCH/peer.out"
check_within "its join is logged to syslog with its description" 5 \
	"grep -q 'msg=\"link joined\".*peer=' '$SL_OUT'" tail -n 3 "$SL_OUT"
LINE=$(grep 'msg="link joined"' "$SL_OUT" | grep 'peer=' | head -n 1)
note "syslog: $LINE"
WANT='peer="vm\x0alevel=error msg=forged \"q\" a\\b"'
check "the newline shows as \\x0a, once: $WANT" grep -qF -- "$WANT" <<<"$LINE"
check_fails "no \\\\x0a (escaped twice) anywhere in what reached syslog" grep -qF -- '\\x0a' "$SL_OUT"
check_fails "no forged line" grep -q '^level=error\|: level=error msg=forged' "$SL_OUT"
check "every datagram is one line" "$PY" -c '
import sys
data = open(sys.argv[1], "rb").read()
lines = data.split(b"\n")[:-1]
bad = [l for l in lines if not l.startswith(b"<")]
sys.exit("lines not starting a syslog record: %r" % bad if bad else 0)' "$SL_OUT"
# A logfmt reader unquotes the value the Go way (Python's literal syntax
# agrees for these escapes): the bytes the peer sent.
cat >"$SCRATCH/unquote.py" <<'EOF'
import ast, re, sys
m = re.search(r'peer=("(?:[^"\\]|\\.)*")', sys.argv[1])
sys.stdout.write(ast.literal_eval(m.group(1)).encode().hex() if m else "no quoted peer=")
EOF
check_eq "the value unquotes to exactly the description sent" "$DESC_HEX" "$("$PY" "$SCRATCH/unquote.py" "$LINE")"
finish
