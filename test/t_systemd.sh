#!/bin/bash
# t_systemd.sh: the installed units under a real systemd. A Debian root
# (mmdebstrap: systemd, dbus, fuse3, vdeplug) gets `make install
# DESTDIR=ROOT PREFIX=/usr/local`, the README's tmp-vm1.mount and the
# oneshot test/systemd/multifs-checks.service, and boots with systemd-nspawn
# (/dev/fuse bound in). The checks run inside (test/systemd/checks.sh), for
# multifs@tmp-vm1.service and then for the mount unit:
#  - `systemctl start` returns only once ctl accepts: the first join right
#    after it succeeds (Type=notify honoured, and the mount is where the
#    caller looks);
#  - the mount and its entries are visible outside the unit (PID 1's mount
#    namespace, the checks' own), a vde_plug joins and carries frames to
#    the host;
#  - `journalctl -u UNIT` has the daemon's log and a second host's refusal;
#  - `systemctl stop` leaves no mount and no socket directory, and every
#    peer sees EOF.
# Each line of the container's results file is one result here.
#
# The root is cached in /var/cache/multifs-test/, keyed by what it is made
# of, and never written: each run boots an overlay of it (or a copy, where
# overlayfs is not available). A fresh machine builds it (about 20 s).
. "$(dirname "$0")/lib.sh"

SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
PKGS=systemd,systemd-sysv,dbus,fuse3,vdeplug
CACHE=/var/cache/multifs-test
BOOT_LIMIT=80 # seconds for the whole boot, checks and poweroff

for tool in mmdebstrap systemd-nspawn; do
	if ! command -v "$tool" >/dev/null; then
		fail "$tool" "missing (apt-get install mmdebstrap systemd-container)"
		finish
	fi
done

# --- the root -------------------------------------------------------------
# The host's own Debian sources, so the root's packages come from where
# apt here gets them (and its glibc is the one the binaries were built for).
SOURCES=
for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
	if [ -s "$f" ] && grep -q "^[^#]*$SUITE" "$f"; then
		SOURCES=$f
		break
	fi
done
KEY=$( {
	echo "$SUITE minbase $PKGS"
	[ -n "$SOURCES" ] && cat "$SOURCES"
} | sha256sum | cut -c1-16)
BASE=$CACHE/systemd-root-$KEY
mkdir -p "$CACHE"
t0=$(now_ms)
(
	flock 9
	[ -d "$BASE" ] && exit 0
	tmp=$BASE.tmp.$$
	rm -rf "$tmp"
	# shellcheck disable=SC2086 # no SOURCES: mmdebstrap's default mirrors
	if mmdebstrap --variant=minbase --include="$PKGS" "$SUITE" "$tmp" $SOURCES >"$SCRATCH/mmdebstrap.log" 2>&1; then
		mv "$tmp" "$BASE"
	else
		rm -rf "$tmp"
		exit 1
	fi
) 9>"$CACHE/.lock"
if [ -d "$BASE" ]; then
	pass "a $SUITE root with $PKGS ($BASE, $(($(now_ms) - t0)) ms)"
else
	fail "mmdebstrap $SUITE root" "$(tail -n 5 "$SCRATCH/mmdebstrap.log")"
	finish
fi

R=$SCRATCH/root
mkdir -p "$R" "$SCRATCH/upper" "$SCRATCH/work" "$SCRATCH/out"
if mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$SCRATCH/upper,workdir=$SCRATCH/work" "$R" 2>"$SCRATCH/err"; then
	at_exit "umount '$R'"
else
	note "no overlayfs ($(cat "$SCRATCH/err")): copying the root"
	cp -a "$BASE/." "$R/"
fi

# --- what the container gets ----------------------------------------------
if (cd "$ROOT" && make -s install DESTDIR="$R" PREFIX=/usr/local) >"$SCRATCH/install.out" 2>&1; then
	pass "make install DESTDIR=ROOT PREFIX=/usr/local"
else
	fail "make install DESTDIR=ROOT" "$(tail -n 3 "$SCRATCH/install.out")"
	finish
fi
LX=$R/usr/local/libexec/multifs-test
mkdir -p "$LX"
cp "$VDEPROBE" "$LX/vdeprobe"
cp "$ROOT/test/systemd/checks.sh" "$LX/checks.sh"
cp "$ROOT/test/systemd/multifs-checks.service" "$R/etc/systemd/system/"
mkdir -p "$R/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/multifs-checks.service "$R/etc/systemd/system/multi-user.target.wants/"

# The README's units name the group kvm, which a VM host has (udev makes
# it; the root has no udev).
grep -q '^kvm:' "$R/etc/group" || groupadd -R "$R" -r kvm
check "the root has the group kvm" grep -q '^kvm:' "$R/etc/group"
# The mount unit exactly as the README gives it: the ini block that names
# Type=fuse.multifs.
awk '/^```ini/ { b = ""; inb = 1; next }
	inb && /^```/ { inb = 0; if (b ~ /\nType=fuse\.multifs\n/) { printf "%s", b; exit } next }
	inb { b = b $0 "\n" }' "$ROOT/README.md" >"$R/etc/systemd/system/tmp-vm1.mount"
if grep -qx 'Where=/tmp/vm1' "$R/etc/systemd/system/tmp-vm1.mount"; then
	pass "the README's mount unit, as /etc/systemd/system/tmp-vm1.mount"
else
	fail "the README's mount unit" "no \`\`\`ini block with Type=fuse.multifs and Where=/tmp/vm1 in README.md"
fi

# --- boot -------------------------------------------------------------------
# --register=no --keep-unit: there is no systemd (no machined, no system
# bus) on the host to register with. nspawn binds /dev/fuse in as a device
# node; it applies a device policy only through the scope it would register,
# so with --keep-unit the container reaches the device as its caller does.
M=mfs-$$
t0=$(now_ms)
timeout -k 5 "$BOOT_LIMIT" systemd-nspawn -q --register=no --keep-unit -M "$M" -D "$R" -b \
	--console=pipe --bind=/dev/fuse --bind="$SCRATCH/out:/out" </dev/null >"$SCRATCH/boot.log" 2>&1 &
NS=$!
track "$NS"
wait "$NS"
rc=$?
ms=$(($(now_ms) - t0))
# nspawn leaves its propagation directory when /run is not a tmpfs.
rmdir "/run/systemd/nspawn/propagate/$M" 2>/dev/null

RES=$SCRATCH/out/results
started=$(sed -n 's/^started \([0-9]*\) .*/\1/p' "$RES" 2>/dev/null)
[ -n "$started" ] && note "the container booted to the checks in $((started - t0)) ms ($(sed -n 's/^started [0-9]* //p' "$RES")), all took $ms ms"
if [ ! -s "$RES" ]; then
	fail "the checks ran in the container" "no results (nspawn exit $rc): $(tail -n 5 "$SCRATCH/boot.log")"
	finish
fi
while IFS= read -r line; do
	case $line in
	"ok "*) pass "${line#ok }" ;;
	"FAIL "*)
		line=${line#FAIL }
		fail "${line%%$'\t'*}" "${line#*$'\t'}"
		;;
	esac
done <"$RES"
check "the checks ran to the end" grep -qx done "$RES"
check_eq "the container's boot ended with the checks' exit status (nspawn)" 0 "$rc"

finish
