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
# os) and that is validated. The checks: there is a vhostuser interface
# whose source is PATH/host/vhost-user in client mode with a virtio model,
# a memoryBacking with a memfd source and shared access, and the domain
# validates. A control: the same domain with the memfd source misspelled
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

vh=$(printf '%s\n' "$IFACE" | tr -s ' \n' ' ')
OK=1
if [[ $vh == *"<interface type='vhostuser'>"*"<source type='unix' path='"*"/host/vhost-user' mode='client'/>"*"<model type='virtio'/>"*"</interface>"* ]]; then
	pass "the page has a vhostuser interface on PATH/host/vhost-user, mode client, model virtio"
else
	fail "the page has a vhostuser interface on PATH/host/vhost-user, mode client, model virtio" "found: '$vh'"
	OK=0
fi
mb=$(printf '%s\n' "$MEMB" | tr -s ' \n' ' ')
if [[ $mb == *"<source type='memfd'/>"* && $mb == *"<access mode='shared'/>"* ]]; then
	pass "the page has a memoryBacking with a memfd source and shared access"
else
	fail "the page has a memoryBacking with a memfd source and shared access" "found: '$mb'"
	OK=0
fi

[ "$OK" = 1 ] || finish

XML=$SCRATCH/domain.xml
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
