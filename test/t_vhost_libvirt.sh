#!/usr/bin/env bash
# t_vhost_libvirt.sh: the libvirt XML the man page gives for a VM whose
# host entry is PATH/host/vhost-user is valid libvirt XML, checked with
# libvirt's own schema (virt-xml-validate, Debian's libvirt-clients), so the
# page cannot drift from what libvirt accepts.
#
# The XML is taken from the rendered page (man -l docs/multifs.1, wide, no
# wrapping): every block from a line holding `<interface ` to its
# `</interface>`, and the `<memoryBacking>` block. A block of the page that
# is a whole `<domain ...>...</domain>` is validated as it is; otherwise
# the blocks are put inside the least domain libvirt accepts (name, memory,
# os) and that is validated, the placeholder PATH in an attribute replaced
# by an absolute path (the schema wants one). The checks (XPath, xmllint): there is a
# vhostuser interface whose unix source is PATH/host/vhost-user in client
# mode with a virtio model, a memoryBacking with a memfd source and shared
# access, and the domain validates. A control: the same domain with the memfd source misspelled
# must fail to validate (so the validator is not a rubber stamp).
. "$(dirname "$0")/lib.sh"

PAGE=${MFS_MANPAGE:-$ROOT/docs/multifs.1}
for t in virt-xml-validate xmllint man col; do
	if ! command -v "$t" >/dev/null 2>&1; then
		fail "$t installed" "apt-get install libvirt-clients libxml2-utils man-db bsdextrautils"
		finish
	fi
done
pass "virt-xml-validate, xmllint and man installed"

TEXT=$SCRATCH/page.txt
MANWIDTH=1000 MAN_KEEP_FORMATTING= man -l "$PAGE" 2>/dev/null | col -bx >"$TEXT"
check "the man page renders" test -s "$TEXT"

# blocks OPEN CLOSE: the lines from each line holding OPEN through the
# next holding CLOSE, leading blanks kept, blocks separated by nothing.
blocks() { awk -v o="$1" -v c="$2" 'index($0, o) { on = 1 } on { print } on && index($0, c) { on = 0 }' "$TEXT"; }

DOMAIN=$(blocks '<domain' '</domain>')
IFACE=$(blocks '<interface ' '</interface>')
MEMB=$(blocks '<memoryBacking>' '</memoryBacking>')
note "interface blocks on the page:"
printf '%s\n' "$IFACE" | sed "s/^/     $TEST_NAME:   /"
note "memoryBacking block on the page:"
printf '%s\n' "$MEMB" | sed "s/^/     $TEST_NAME:   /"

# xp FILE XPATH: the XPath's string value in FILE ("" if none).
xp() { xmllint --xpath "string($2)" "$1" 2>/dev/null; }

OK=1
printf '<x>%s</x>\n' "$IFACE" >"$SCRATCH/iface.xml"
printf '<x>%s</x>\n' "$MEMB" >"$SCRATCH/memb.xml"
VH="/x/interface[@type='vhostuser']"
path=$(xp "$SCRATCH/iface.xml" "$VH/source[@type='unix' and @mode='client']/@path")
model=$(xp "$SCRATCH/iface.xml" "$VH/model/@type")
if [[ $path == */host/vhost-user ]] && [ "$model" = virtio ]; then
	pass "the page has a vhostuser interface: source unix $path in client mode, model virtio"
else
	fail "the page has a vhostuser interface on PATH/host/vhost-user, mode client, model virtio" \
		"path '$path', model '$model' in: $(tr -s ' \n' ' ' <"$SCRATCH/iface.xml" | head -c 300)"
	OK=0
fi
src=$(xp "$SCRATCH/memb.xml" "/x/memoryBacking/source/@type")
acc=$(xp "$SCRATCH/memb.xml" "/x/memoryBacking/access/@mode")
if [ "$src" = memfd ] && [ "$acc" = shared ]; then
	pass "the page has a memoryBacking with a memfd source and shared access"
else
	fail "the page has a memoryBacking with a memfd source and shared access" \
		"source '$src', access '$acc' in: $(tr -s ' \n' ' ' <"$SCRATCH/memb.xml" | head -c 300)"
	OK=0
fi
[ "$OK" = 1 ] || finish

XML=$SCRATCH/domain.xml
# The page writes the mount as the placeholder PATH; libvirt's schema
# wants an absolute path there, so PATH becomes one (and nothing else
# changes).
ABS=/run/multifs/vm1
IFACE=${IFACE//\'PATH\//\'$ABS\/}
DOMAIN=${DOMAIN//\'PATH\//\'$ABS\/}
if [ -n "$DOMAIN" ]; then
	printf '%s\n' "$DOMAIN" >"$XML"
	note "validating the page's own <domain>"
else
	{
		echo "<domain type='kvm'>"
		echo "  <name>multifs-vhost</name>"
		echo "  <memory unit='MiB'>512</memory>"
		printf '%s\n' "$MEMB"
		echo "  <os><type arch='x86_64'>hvm</type></os>"
		echo "  <devices>"
		printf '%s\n' "$IFACE"
		echo "  </devices>"
		echo "</domain>"
	} >"$XML"
fi
if out=$(virt-xml-validate "$XML" domain 2>&1); then
	pass "virt-xml-validate accepts the domain ($out)"
else
	fail "virt-xml-validate accepts the domain" "$(tr '\n' ' ' <<<"$out" | head -c 400); XML: $(tr -s ' \n' ' ' <"$XML" | head -c 600)"
fi

# The control: a misspelled memfd source must not validate.
sed "s/type='memfd'/type='memfdx'/" "$XML" >"$SCRATCH/bad.xml"
if grep -q memfdx "$SCRATCH/bad.xml"; then
	check_fails "virt-xml-validate refuses the same domain with source type 'memfdx' (the check can fail)" \
		virt-xml-validate "$SCRATCH/bad.xml" domain
else
	fail "the control domain has the misspelled source" "no type='memfd' to misspell"
fi

finish
