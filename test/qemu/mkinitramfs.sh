#!/usr/bin/env bash
# mkinitramfs.sh [CACHE]: make (once) the kernel and initramfs the qemu peer
# tests boot, and print the directory holding them: vmlinuz, initrd.gz,
# kver.
#
# The kernel is the installed Debian cloud kernel (linux-image-cloud-amd64:
# /boot/vmlinuz-*-cloud-amd64, the newest whose /lib/modules is there, or
# $MFS_KVER). The initramfs holds a static busybox (busybox-static's
# /bin/busybox), the guest's /init (test/qemu/init beside this script) and
# the modules virtio-net needs on that kernel, resolved from its modules.dep
# (virtio_pci and virtio_net with all they depend on: virtio, virtio_ring,
# failover, net_failover, ...; none if they are built in) and listed in
# load order in /etc/modules.load for /init to insmod. /bin/mfsping is
# test/qemu/mfsping built static with the go on PATH (see its comment for
# why not busybox's ping).
#
# CACHE (default $MFS_QEMU_CACHE, else /tmp/multifs-qemu-cache) keeps one
# directory per kernel version and content key (a hash of this script, the
# init, busybox, mfsping's source and go's version), so a second run costs
# nothing and a change to any of them builds anew. Because the cache sits
# in /tmp and what it holds is booted, a cache directory not owned by us,
# writable by others, or a symbolic link is refused. The kernel is copied into the cache: the
# package may install it 0600 (Ubuntu does), and the copy is ours.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${1:-${MFS_QEMU_CACHE:-/tmp/multifs-qemu-cache}}
BUSYBOX=/bin/busybox
INIT=$HERE/init
PINGER=$HERE/mfsping

die() {
	echo "mkinitramfs: $*" >&2
	exit 1
}

command -v go >/dev/null || die "go is not on PATH (it builds $PINGER)"
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (apt-get install busybox-static)"
# file_is_static F: the ELF file F has no PT_INTERP program header (the
# guest has no dynamic loader; Debian's busybox package is dynamic).
file_is_static() {
	python3 - "$1" <<-'EOF'
		import struct, sys
		d = open(sys.argv[1], "rb").read()
		assert d[:4] == b"\x7fELF" and d[4] == 2  # ELF64
		phoff, = struct.unpack_from("<Q", d, 32)
		phentsize, phnum = struct.unpack_from("<HH", d, 54)
		sys.exit(any(struct.unpack_from("<I", d, phoff + i * phentsize)[0] == 3
		             for i in range(phnum)))
	EOF
}
file_is_static "$BUSYBOX" || die "$BUSYBOX is not static (install busybox-static, not busybox)"

# The kernel: $MFS_KVER, or the newest cloud kernel with its modules.
KVER=${MFS_KVER:-}
if [ -z "$KVER" ]; then
	for k in $(ls /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V); do
		[ -f "/lib/modules/$k/modules.dep" ] && KVER=$k
	done
fi
[ -n "$KVER" ] || die "no /boot/vmlinuz-*-cloud-amd64 with /lib/modules (apt-get install linux-image-cloud-amd64)"
KERNEL=/boot/vmlinuz-$KVER
MODDIR=/lib/modules/$KVER
[ -e "$KERNEL" ] || die "$KERNEL missing"
[ -f "$MODDIR/modules.dep" ] || die "$MODDIR/modules.dep missing"

# safe_dir D: D is a real directory, ours, not writable by group or others.
safe_dir() {
	local d=$1
	[ ! -L "$d" ] && [ -d "$d" ] || return 1
	[ "$(stat -c %u "$d")" = "$(id -u)" ] || return 1
	[ $((0$(stat -c %a "$d") & 022)) -eq 0 ]
}
if [ ! -e "$CACHE" ] && [ ! -L "$CACHE" ]; then
	mkdir -m 0755 "$CACHE" 2>/dev/null || [ -d "$CACHE" ] || die "cannot create $CACHE"
fi
safe_dir "$CACHE" || die "$CACHE is not a directory of uid $(id -u) closed to others; remove it"

KEY=$({ cat "$0" "$INIT" "$BUSYBOX" "$PINGER"/*.go; go version; } | sha256sum | cut -c1-12)
OUT=$CACHE/$KVER-$KEY
if safe_dir "$OUT" && [ -s "$OUT/initrd.gz" ] && [ -s "$OUT/vmlinuz" ]; then
	echo "$OUT"
	exit 0
fi

TMP=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
R=$TMP/root
mkdir -p "$R"/{bin,dev,proc,sys,tmp,etc,"lib/modules/$KVER"}
cp "$BUSYBOX" "$R/bin/busybox"
install -m 0755 "$INIT" "$R/init"
(cd "$PINGER" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags='-s -w' -o "$R/bin/mfsping" .) ||
	die "cannot build $PINGER"
# /init opens /dev/console itself, after mounting devtmpfs; the node here
# is for the kernel, which opens it for init's descriptors 0, 1 and 2.
mknod -m 0600 "$R/dev/console" c 5 1

# Modules: for each wanted one, the dependencies modules.dep lists (depmod
# writes the whole closure, the last to be loaded first), then itself.
: >"$R/etc/modules.load"
declare -A seen=()
add_module() {
	local name=$1 line path deps i
	if grep -Eq "/$name\\.ko(\\.[a-z]+)?\$" "$MODDIR/modules.builtin" 2>/dev/null; then
		return 0
	fi
	line=$(grep -E "(^|/)$name\\.ko(\\.[a-z]+)?:" "$MODDIR/modules.dep" | head -n 1) ||
		die "$name: neither a module nor built into $KVER"
	path=${line%%:*}
	read -r -a deps <<<"${line#*:}"
	for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
		add_path "${deps[$i]}"
	done
	add_path "$path"
}
add_path() {
	local p=$1 dst
	[ -n "${seen[$p]:-}" ] && return 0
	seen[$p]=1
	dst=/lib/modules/$KVER/$(basename "$p")
	case $p in
	*.ko) cp "$MODDIR/$p" "$R$dst" ;;
	*.ko.xz) "$BUSYBOX" unxz -c "$MODDIR/$p" >"$R${dst%.xz}"; dst=${dst%.xz} ;;
	*.ko.gz) "$BUSYBOX" gunzip -c "$MODDIR/$p" >"$R${dst%.gz}"; dst=${dst%.gz} ;;
	*.ko.zst) command -v zstd >/dev/null || die "$p is zstd-compressed: apt-get install zstd"
		zstd -q -d -c "$MODDIR/$p" >"$R${dst%.zst}"; dst=${dst%.zst} ;;
	*) die "$p: unknown module format" ;;
	esac
	echo "$dst" >>"$R/etc/modules.load"
}
add_module virtio_pci
add_module virtio_net

(cd "$R" && find . -print0 | sort -z | "$BUSYBOX" cpio -o -H newc -0 2>/dev/null) |
	gzip -6 >"$TMP/initrd.gz"
cp "$KERNEL" "$TMP/vmlinuz"
chmod 0644 "$TMP/vmlinuz" "$TMP/initrd.gz"
cp "$R/etc/modules.load" "$TMP/modules.load"
echo "$KVER" >"$TMP/kver"
rm -rf "$R"
chmod 0755 "$TMP"
# Publish whole or not at all; a concurrent build may have won.
if mv -T "$TMP" "$OUT" 2>/dev/null; then
	trap - EXIT
	# Older builds for this kernel (another key) are of no further use.
	for d in "$CACHE/$KVER"-????????????; do
		[ "$d" = "$OUT" ] || rm -rf "$d"
	done
elif ! { safe_dir "$OUT" && [ -s "$OUT/initrd.gz" ]; }; then
	die "cannot publish $OUT"
fi
echo "$OUT"
