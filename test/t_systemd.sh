#!/bin/bash
# t_systemd.sh: the installed units under a real systemd. A Debian root
# (mmdebstrap: systemd, dbus, fuse3, vdeplug) gets `make install
# DESTDIR=ROOT PREFIX=/usr/local`, the man page's tmp-vm1.mount and the
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
#  - the service keeps only its CapabilityBoundingSet, and with the
#    documented grp=kvm drop-in its socket directory is root:kvm 2750;
#  - `systemctl stop` leaves no mount and no socket directory, and every
#    peer sees EOF.
# Each line of the container's results file is one result here.
#
# The root is cached in /var/cache/multifs-test/, keyed by what it is made
# of, and never written: each run boots an overlay of it (or a copy, where
# overlayfs is not available). A fresh machine builds it: 19 s on a quiet
# machine of this kind, 60 to 135 s with its two cores loaded (load 12 to
# 14; almost all of it dpkg unpacking and configuring), hence:
# limit: 300
. "$(dirname "$0")/lib.sh"

SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
PKGS=systemd,systemd-sysv,dbus,fuse3,vdeplug
# A throw-away root: no fsync, no documentation.
MMOPTS=(--variant=minbase --dpkgopt=force-unsafe-io --dpkgopt='path-exclude=/usr/share/doc/*'
	--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*')
CACHE=/var/cache/multifs-test
BUILD_LIMIT=200 # seconds for mmdebstrap
BOOT_LIMIT=80   # seconds for the whole boot, checks and poweroff

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
	echo "$SUITE ${MMOPTS[*]} $PKGS"
	[ -n "$SOURCES" ] && cat "$SOURCES"
} | sha256sum | cut -c1-16)
BASE=$CACHE/systemd-root-$KEY
TMPROOT=$BASE.tmp.$$

# drop_root DIR: remove a root mmdebstrap may have left half made, with
# what it mounts inside (proc, sys, device nodes bound from the host's /dev)
# unmounted first and never crossed.
drop_root() {
	local m
	[ -d "$1" ] || return 0
	for m in $(awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
		umount -l "$m"
	done
	rm -rf --one-file-system "$1"
}
at_exit "drop_root '$TMPROOT'"

mkdir -p "$CACHE"
t0=$(now_ms)
(
	flock 9
	[ -d "$BASE" ] && exit 0
	drop_root "$TMPROOT"
	# shellcheck disable=SC2086 # no SOURCES: mmdebstrap's default mirrors
	if timeout -k 5 "$BUILD_LIMIT" mmdebstrap "${MMOPTS[@]}" --include="$PKGS" "$SUITE" "$TMPROOT" $SOURCES </dev/null >"$SCRATCH/mmdebstrap.log" 2>&1; then
		mv "$TMPROOT" "$BASE"
		# roots of another make (packages, options, sources) are stale
		for old in "$CACHE"/systemd-root-*; do
			case $old in "$BASE" | *.tmp.*) ;; *) rm -rf --one-file-system "$old" ;; esac
		done
	else
		drop_root "$TMPROOT"
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
	note "no overlayfs ($(head -n 1 "$SCRATCH/err")): copying the root"
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

# The documented units name the group kvm, which a VM host has (udev makes
# it; the root has no udev).
grep -q '^kvm:' "$R/etc/group" || groupadd -R "$R" -r kvm
check "the root has the group kvm" grep -q '^kvm:' "$R/etc/group"
# The mount unit exactly as the man page gives it (the .nf block naming
# Type=fuse.multifs), and the README's copy (its ```ini block), if it has
# one, the same.
MU=$R/etc/systemd/system/tmp-vm1.mount
awk '/^\.nf/ { b = ""; inb = 1; next }
	inb && /^\.fi/ { inb = 0; if (b ~ /\nType=fuse\.multifs\n/) { printf "%s", b; exit } next }
	inb && !/^\./ { gsub(/\\-/, "-"); b = b $0 "\n" }' "$ROOT/docs/multifs.1" >"$MU"
if grep -qx 'Where=/tmp/vm1' "$MU" && grep -qx 'Type=fuse.multifs' "$MU"; then
	pass "the man page's mount unit, as /etc/systemd/system/tmp-vm1.mount"
else
	fail "the man page's mount unit" "no .nf block with Type=fuse.multifs and Where=/tmp/vm1 in docs/multifs.1"
fi
awk '/^```ini/ { b = ""; inb = 1; next }
	inb && /^```/ { inb = 0; if (b ~ /\nType=fuse\.multifs\n/) { printf "%s", b; exit } next }
	inb { b = b $0 "\n" }' "$ROOT/README.md" >"$SCRATCH/readme.mount"
if [ -s "$SCRATCH/readme.mount" ]; then
	check "the README's mount unit is the man page's" cmp "$SCRATCH/readme.mount" "$MU"
fi

# --- boot -------------------------------------------------------------------
# --register=no --keep-unit: there is no systemd (no machined, no system
# bus) on the host to register with. nspawn sets a device policy
# (DevicePolicy=closed, DeviceAllow= /dev/net/tun, ptys and every device
# node given to --bind) only on a scope or machine it registers; with
# neither, the container reaches /dev/fuse as its caller does (here the
# root devices cgroup: a *:* rwm). Inside, multifs@.service sets no
# DevicePolicy= either.
M=mfs-$$
t0=$(now_ms)
timeout -k 5 "$BOOT_LIMIT" systemd-nspawn -q --register=no --keep-unit -M "$M" -D "$R" -b \
	--console=pipe --bind=/dev/fuse --bind="$SCRATCH/out:/out" </dev/null >"$SCRATCH/boot.log" 2>&1 &
NS=$!
track "$NS"
wait "$NS"
rc=$?
ms=$(($(now_ms) - t0))
# nspawn declines to rm -rf its propagation directory where /run is no
# tmpfs (it says so on stderr); an empty one may stay.
rmdir "/run/systemd/nspawn/propagate/$M" 2>/dev/null

RES=$SCRATCH/out/results
started=$(sed -n 's/^started \([0-9]*\) .*/\1/p' "$RES" 2>/dev/null)
[ -n "$started" ] && note "the container booted to the checks in $((started - t0)) ms ($(sed -n 's/^started [0-9]* //p' "$RES")), all took $ms ms"
if [ ! -s "$RES" ]; then
	fail "the checks ran in the container" "no results (nspawn exit $rc after $ms ms): $(tail -n 5 "$SCRATCH/boot.log")"
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
check_eq "the boot ended when the checks did (nspawn exit status)" 0 "$rc"

finish
