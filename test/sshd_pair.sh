# sshd_pair.sh: sourced by the ssh hand-off tests (t_peer_ssh.sh,
# t_peer_ssh_stream.sh) after lib.sh: two sshd of the test's own, key-only,
# on ADDR1 and ADDR2 at one free port, with root's login by the test's key
# checked and a login without it refused on each.
#
# In: ADDR1, ADDR2 (loopback addresses); SSHD_ALSO, more commands the test
# needs, and SSHD_ALSO_PKG, their Debian packages (both may be empty).
# Out: SSHD (the daemon's path), KEY (the client key), PORT, SSH (the
# client's command line up to the destination, an array), SSHD_PIDS.

SSHD=/usr/sbin/sshd
for _t in "$SSHD" ssh ssh-keygen ${SSHD_ALSO:-}; do
	if ! command -v "$_t" >/dev/null 2>&1; then
		fail "$_t is installed" "missing (apt-get install openssh-server openssh-client${SSHD_ALSO_PKG:+ $SSHD_ALSO_PKG})"
		finish
	fi
done

# --- two sshd of our own --------------------------------------------------------
# Privilege separation needs /run/sshd; the package's unit makes it at boot
# where systemd runs, nothing does here. It is left in place (an empty,
# root-owned directory Debian expects anyway).
[ -d /run/sshd ] || mkdir -m 0755 /run/sshd

KEY=$SCRATCH/id_ed25519
ssh-keygen -q -t ed25519 -N '' -C mfs-test -f "$KEY" &&
	cp "$KEY.pub" "$SCRATCH/authorized_keys" ||
	{ fail "ssh-keygen: client key" "failed"; finish; }

# free_port: a port above 2000 free on both addresses now.
PORT=$("$PY" - "$ADDR1" "$ADDR2" <<'EOF'
import random, socket, sys
for _ in range(200):
    p = random.randint(2001, 30000)
    ok = True
    for a in sys.argv[1:]:
        s = socket.socket()
        try:
            s.bind((a, p))
        except OSError:
            ok = False
        finally:
            s.close()
    if ok:
        print(p)
        break
EOF
)
[ -n "$PORT" ] || { fail "a free port on $ADDR1 and $ADDR2" "none in 200 tries"; finish; }

# StrictModes no: the keys live under /tmp (mode 1777), which sshd's
# ownership walk refuses ("bad ownership or modes for directory /tmp").
SSHD_PIDS=()
for i in 1 2; do
	eval "addr=\$ADDR$i"
	ssh-keygen -q -t ed25519 -N '' -f "$SCRATCH/hostkey$i" ||
		{ fail "ssh-keygen: host key $i" "failed"; finish; }
	cat >"$SCRATCH/sshd$i.conf" <<EOF
ListenAddress $addr:$PORT
HostKey $SCRATCH/hostkey$i
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
AuthorizedKeysFile $SCRATCH/authorized_keys
StrictModes no
PidFile $SCRATCH/sshd$i.pid
EOF
	: >"$SCRATCH/sshd$i.log"
	bg "$SSHD" -D -f "$SCRATCH/sshd$i.conf" -E "$SCRATCH/sshd$i.log"
	SSHD_PIDS+=("$LASTPID")
	check_within "sshd $i listens on $addr:$PORT" 5 \
		"grep -q 'Server listening on $addr port $PORT' '$SCRATCH/sshd$i.log'" \
		tail -n 3 "$SCRATCH/sshd$i.log" || finish
done

# The client side, as a user would type it (LogLevel=ERROR only keeps the
# "Permanently added" warning out of the log; ConnectTimeout bounds a hang).
SSH=(ssh -F /dev/null -i "$KEY" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
	-o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=5 -p "$PORT")
for addr in "$ADDR1" "$ADDR2"; do
	out=$(timeout 10 "${SSH[@]}" "root@$addr" 'echo "$SSH_CLIENT"' 2>&1)
	check_eq "key-only login as root on $addr" "ok" "$([ $? = 0 ] && echo ok || echo "$out")"
done
for addr in "$ADDR1" "$ADDR2"; do
	if timeout 10 ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
		-o BatchMode=yes -o LogLevel=ERROR -o PubkeyAuthentication=no -p "$PORT" "root@$addr" true \
		>/dev/null 2>&1; then
		fail "a login without the key is refused on $addr" "it was let in"
	else
		pass "a login without the key is refused on $addr"
	fi
done
