#!/usr/bin/env bash
# t_sec11_zero_modes.sh: what stat shows in the tree is exactly what mode and
# dirmode say, also when a class of bits is zero: no access granted that
# the modes deny. go-fuse
# replaces an all-zero permission with its default (0644 for files, 0755
# for directories) unless told not to, and with default_permissions the
# kernel then grants what that default says:
#   mode=0220          stats 0, close 220, mount root 2330 (derived)
#   mode=0             stats 0, close 0, mount root 2000
#   dirmode=0          mount root, host/, links/, links/N/ 0; stats 400
#   mode=0640          stats 440, close 200, mount root 2750
#   dirmode=03000      3000 (setgid and sticky shown, no class bits)
# and, as users the test creates: with mode=0220,grp=G a member of G may
# close a link but not read stats; with mode=0666,dirmode=0 another user
# cannot list the tree. Root passes every check (it traverses and reads
# anyway), so it is root that looks.
. "$(dirname "$0")/lib.sh"

G=mfu_cg11
MEMBER=mfu_c11m
OTHER=mfu_c11o
groupadd -f "$G"
for u in $MEMBER $OTHER; do
	id "$u" >/dev/null 2>&1 || useradd -M -N -s /usr/sbin/nologin "$u"
done
usermod -a -G "$G" "$MEMBER"
at_exit "userdel $MEMBER; userdel $OTHER; groupdel $G"
chmod 755 "$SCRATCH"

as() {
	local u=$1
	shift
	runuser -u "$u" -- "$@"
}

# modes PATH FILE...: "FILE=MODE ..." as `stat -c %a` prints them.
modes() {
	local p=$1 f out=
	shift
	for f in "$@"; do out="$out $f=$(stat -c %a "$p/$f" 2>/dev/null || echo '?')"; done
	echo "${out# }"
}

# serve NAME OPTIONS: start multifs on $SCRATCH/NAME with -o OPTIONS and
# join one link as root; PATH in $P.
serve() {
	P=$SCRATCH/$1
	start_multifs "$P" -o "$2" || return 1
	bg vde_plug "$P" null://
	check_links "$1: a link joins" "$P" 1 3
}

# ------------------------------------------------------------------ mode=0220
if serve m0220 mode=0220,grp=$G; then
	check_eq "mode=0220: stats files 0, close 220, mount root 2330" \
		"stats=0 host/stats=0 links/1/stats=0 links/1/close=220 .=2330" \
		"$(modes "$P" stats host/stats links/1/stats links/1/close .)"
	check "mode=0220: root still reads stats" cat "$P/stats"
	check_fails "mode=0220: a member of $G cannot read stats" as $MEMBER cat "$P/stats"
	check_fails "mode=0220: a member of $G cannot read a link's stats" as $MEMBER cat "$P/links/1/stats"
	check "mode=0220: a member of $G closes the link" as $MEMBER sh -c "echo 1 > '$P/links/1/close'"
	check_links "mode=0220: the link is gone" "$P" "" 3
fi

# --------------------------------------------------------------------- mode=0
if serve m0 mode=0; then
	check_eq "mode=0: stats 0, close 0, mount root 2000" \
		"stats=0 host/stats=0 links/1/stats=0 links/1/close=0 .=2000" \
		"$(modes "$P" stats host/stats links/1/stats links/1/close .)"
fi

# ------------------------------------------------------------------ dirmode=0
if serve d0 dirmode=0; then
	check_eq "dirmode=0: directories 0" \
		".=0 host=0 links=0 links/1=0" \
		"$(modes "$P" . host links links/1)"
	check_eq "dirmode=0: stats 400, close 200" \
		"stats=400 links/1/stats=400 links/1/close=200" \
		"$(modes "$P" stats links/1/stats links/1/close)"
	check "dirmode=0: root still lists the tree" ls "$P/links/1"
fi

# A tree open to everybody but with dirmode=0: nobody but root gets in.
if serve d0open mode=0666,dirmode=0; then
	check_eq "mode=0666,dirmode=0: mount root 0, stats 444" ".=0 stats=444" "$(modes "$P" . stats)"
	check_fails "mode=0666,dirmode=0: another user cannot list the tree" as $OTHER ls "$P"
	check_fails "mode=0666,dirmode=0: another user cannot read stats" as $OTHER cat "$P/stats"
fi

# ------------------------------------------------------------------ mode=0640
if serve m0640 mode=0640; then
	check_eq "mode=0640: stats 440, close 200, mount root 2750" \
		"stats=440 host/stats=440 links/1/stats=440 links/1/close=200 .=2750" \
		"$(modes "$P" stats host/stats links/1/stats links/1/close .)"
fi

# -------------------------------------------- special bits without class bits
if serve d3000 dirmode=03000; then
	check_eq "dirmode=03000: directories 3000" \
		".=3000 host=3000 links=3000 links/1=3000" \
		"$(modes "$P" . host links links/1)"
fi

finish
