#!/bin/bash
# t_fstab.sh: multifs run the way mount(8) runs FUSE tools. mount.fuse3 turns `mount -t fuse.multifs SOURCE PATH -o OPTS`
# (or an fstab line) into `multifs SOURCE PATH -o rw,nosuid,...,OPTS`:
#  - the generic options are accepted and ignored, ro is refused in words;
#  - SOURCE is the mount's fsname in /proc/mounts;
#  - mount returns once the multilink serves; `umount PATH` stops it;
#  - an fstab line (here in a file of our own, `mount -T`) works, with the
#    binary named by absolute path (fuse./path/to/multifs) and by name
#    (fuse.multifs, found on mount.fuse3's fixed PATH: /usr/local/bin, where
#    make install puts it; a symlink there for the test if none is there);
#  - the reference's netnode keys (hashsize, hashseed, expiretime) in a
#    multi:// URL are accepted, with no effect, and logged as such.
. "$(dirname "$0")/lib.sh"

if ! command -v mount.fuse3 >/dev/null; then
	fail "mount.fuse3" "missing (Debian's fuse3)"
	finish
fi

# served_as LABEL P: P is a fuse.multifs mount whose source reads LABEL.
served_as() { awk -v p="$2" -v l="$1" '$2 == p && $1 == l && $3 == "fuse.multifs" { f = 1 } END { exit !f }' /proc/mounts; }

# stopped_by_umount NAME P: umount P; its daemon exits, nothing is left.
stopped_by_umount() {
	local name=$1 p=$2 d
	d=$(daemon_pid "$p")
	check "$name: umount $p" umount "$p"
	if [ -n "$d" ]; then
		check_exits "$name: the daemon exited" "$d" 5
	else
		fail "$name: the daemon exited" "no daemon found for $p"
	fi
	check_fails "$name: nothing mounted at $p" mounted_at "$p"
	check_fails "$name: the socket directory is gone" test -e "$(sockdir_of "$p")"
}

# 1. mount -t fuse./abs/path/multifs, with the options mount(8) users write.
P=$SCRATCH/vm1
mkdir -p "$P"
track_mount "$P"
if mount -t "fuse.$MULTIFS" vm1 "$P" -o mode=0660,nofail,noatime,_netdev,x-systemd.automount,comment=x,nodev,nosuid,defaults \
	2>"$SCRATCH/m1.err"; then
	pass "mount -t fuse.$MULTIFS vm1 PATH -o mode=0660,nofail,noatime,...: exit 0"
else
	fail "mount -t fuse.multifs" "$(cat "$SCRATCH/m1.err")"
fi
check "mount returned with PATH served: ctl accepts a join" joinable "$P"
check "/proc/mounts shows the source label vm1" served_as vm1 "$P"
check_eq "mode=0660 reached the daemon: stats is 440" 440 "$(stat -c %a "$P/stats")"
stopped_by_umount "mount -t" "$P"

# 2. ro: refused in words, nothing mounted.
if mount -t "fuse.$MULTIFS" vm1 "$P" -o ro 2>"$SCRATCH/m2.err"; then
	fail "mount -o ro is refused" "exit 0"
	umount "$P" 2>/dev/null
else
	check "mount -o ro: the error says why" grep -q "read-only" "$SCRATCH/m2.err"
fi
check_fails "mount -o ro: nothing mounted" mounted_at "$P"

# 3. An fstab line, the binary named by absolute path.
FSTAB=$SCRATCH/fstab
printf 'vm2 %s fuse.%s mode=0660,grp=0,nofail 0 0\n' "$P" "$MULTIFS" >"$FSTAB"
if mount -T "$FSTAB" "$P" 2>"$SCRATCH/m3.err"; then
	pass "fstab line (fuse./abs/path): mount PATH exit 0"
else
	fail "fstab line (fuse./abs/path): mount PATH" "$(cat "$SCRATCH/m3.err")"
fi
check "fstab line: served, source vm2" served_as vm2 "$P"
check "fstab line: a link joins" joinable "$P"
stopped_by_umount "fstab line" "$P"

# 4. The type fuse.multifs: mount.fuse3 finds the program on its own PATH.
if [ -e /usr/local/bin/multifs ]; then
	note "/usr/local/bin/multifs exists (installed): using it for fuse.multifs"
else
	ln -s "$MULTIFS" /usr/local/bin/multifs
	at_exit "[ -L /usr/local/bin/multifs ] && rm -f /usr/local/bin/multifs"
fi
printf 'vm3 %s fuse.multifs mode=0600,nofail 0 0\n' "$P" >"$FSTAB"
if mount -T "$FSTAB" "$P" 2>"$SCRATCH/m4.err"; then
	pass "fstab line (fuse.multifs): mount PATH exit 0"
else
	fail "fstab line (fuse.multifs): mount PATH" "$(cat "$SCRATCH/m4.err")"
fi
check "fstab line (fuse.multifs): served, source vm3" served_as vm3 "$P"
stopped_by_umount "fstab line (fuse.multifs)" "$P"

# 5. The reference's netnode keys in a multi:// URL.
Q=$SCRATCH/vm4
if "$MULTIFS" --log-file "$SCRATCH/vm4.log" "multi://$Q[hashsize=128/hashseed=7/expiretime=60/mode=0600]" 2>"$SCRATCH/m5.err"; then
	pass "multi://PATH[hashsize=128/hashseed=7/expiretime=60/mode=0600]: exit 0"
	track_mount "$Q" "$(daemon_pid "$Q")"
	check "netnode keys: served" joinable "$Q"
	check_eq "netnode keys: each logged as having no effect" 3 "$(grep -c 'no effect on a multilink' "$SCRATCH/vm4.log")"
else
	fail "multi:// with the netnode keys" "$(cat "$SCRATCH/m5.err")"
fi

finish
