#!/bin/bash
# t_sec03_logfile.sh: root's --log-file is opened, never followed, and
# peer text cannot forge log lines.
#
# Refused, with exit status 1, one line on stderr, PATH neither mounted
# nor created, and nothing written anywhere:
#   - a symbolic link planted by another user (in a sticky, world-writable
#     directory, as /tmp is) at a root-owned file: the file is unchanged;
#   - a dangling symbolic link into a root-only directory: nothing created;
#   - a log file owned by another user;
#   - a FIFO (with and without a reader: no hang), a directory;
#   - a second hard link to a root-owned file (what a user could plant with
#     fs.protected_hardlinks=0).
# Accepted: a root-owned regular file (appended to) and a new file (0600).
# On SIGHUP, a log path that became a planted symbolic link is refused
# too: the target stays unchanged, the daemon keeps serving and writing to
# the file it has, and says so there.
#
# A peer's words: a vde-2 description holding `$(id>...)`, a newline and a
# forged "level=error msg=forged" line, ESC, U+0085 and U+2028; a data
# socket path holding the same; the same written to a close file. In both
# --log-format text and json every log line must be one line for Python's
# splitlines() too, valid UTF-8, free of raw control and separator
# characters, and no forged line may stand on its own.
# A throw-away user mfu_b1 is created and removed at exit.
. "$(dirname "$0")/lib.sh"

hostile_copy
public_dir # a /tmp of our own: sticky, world-writable
ROOTDIR=$SCRATCH/rootonly
mkdir -p "$ROOTDIR"
chmod 755 "$ROOTDIR"

U=mfu_b1
throwaway_user "$U"
as_user() { runuser -u "$U" -- "$@"; }

TARGET=$ROOTDIR/precious
printf 'root:x:0:0:keep me:/root:/bin/bash\n' >"$TARGET"
chmod 644 "$TARGET"
fingerprint() { stat -c '%s %Y %i %h' "$1" 2>&1; sha256sum <"$1" 2>&1; }
TARGET_FP=$(fingerprint "$TARGET")

# refused NAME LOGFILE WORDS [-f]: multifs --log-file LOGFILE must exit 1
# with one line on stderr matching WORDS (an extended regex), within 10 s,
# mounting and creating nothing.
N=0
refused() {
	local name=$1 log=$2 words=$3 fg=${4:-} p err rc
	N=$((N + 1))
	p=$SCRATCH/r$N
	err=$SCRATCH/r$N.err
	# shellcheck disable=SC2086
	timeout 10 "$MULTIFS" $fg --log-file "$log" "$p" </dev/null >/dev/null 2>"$err"
	rc=$?
	check_eq "$name: exit status 1" 1 "$rc"
	if [ "$(wc -l <"$err")" = 1 ] && grep -Eq "$words" "$err"; then
		pass "$name: one line on stderr: $(cat "$err")"
	else
		fail "$name: one line on stderr saying /$words/" "$(head -c 300 "$err")"
	fi
	if is_mounted "$p"; then
		fail "$name: PATH not mounted" "mounted"
		track_mount "$p" "$(daemon_pid "$p")"
	else
		pass "$name: PATH not mounted"
	fi
	check_fails "$name: PATH not created" test -e "$p"
}

# ------------------------------------------------ what --log-file may be
as_user ln -s "$TARGET" "$PUB/evil.log"
refused "symlink to a root file" "$PUB/evil.log" "symbolic link"
refused "symlink to a root file, -f" "$PUB/evil.log" "symbolic link" -f
check_eq "symlink to a root file: the file is unchanged" "$TARGET_FP" "$(fingerprint "$TARGET")"

as_user ln -s "$ROOTDIR/created.log" "$PUB/dangling.log"
refused "dangling symlink into a root-only directory" "$PUB/dangling.log" "symbolic link"
check_fails "dangling symlink: its target was not created" test -e "$ROOTDIR/created.log"

as_user sh -c ": >'$PUB/theirs.log'"
THEIRS_FP=$(fingerprint "$PUB/theirs.log")
refused "a file owned by $U" "$PUB/theirs.log" "owned by uid $(id -u "$U")"
check_eq "a file owned by $U: unchanged" "$THEIRS_FP" "$(fingerprint "$PUB/theirs.log")"

mkfifo -m 600 "$SCRATCH/fifo.log"
refused "a FIFO without a reader" "$SCRATCH/fifo.log" "not a regular file" -f
exec 7<>"$SCRATCH/fifo.log" # a reader (and a writer: opening never blocks)
refused "a FIFO with a reader" "$SCRATCH/fifo.log" "not a regular file" -f
if read -r -t 0.2 -u 7 line; then
	fail "a FIFO with a reader: nothing written to it" "read: $line"
else
	pass "a FIFO with a reader: nothing written to it"
fi
exec 7<&-

mkdir "$SCRATCH/dir.log"
refused "a directory" "$SCRATCH/dir.log" "not a regular file" -f

ln "$TARGET" "$PUB/hard.log"
refused "a second hard link to a root file" "$PUB/hard.log" "hard link"
rm -f "$PUB/hard.log"
check_eq "a second hard link: the file is unchanged" "$TARGET_FP" "$(fingerprint "$TARGET")"

printf 'an earlier line\n' >"$SCRATCH/ok.log"
chmod 644 "$SCRATCH/ok.log"
if "$MULTIFS" --log-file "$SCRATCH/ok.log" "$SCRATCH/ok" 2>"$SCRATCH/ok.err"; then
	pass "a root-owned regular file: multifs starts"
	track_mount "$SCRATCH/ok" "$(daemon_pid "$SCRATCH/ok")"
else
	fail "a root-owned regular file: multifs starts" "$(cat "$SCRATCH/ok.err")"
fi
check_eq "a root-owned regular file: appended to" "an earlier line" "$(head -n 1 "$SCRATCH/ok.log")"
check_within "a root-owned regular file: the daemon logs there" 2 "grep -q 'msg=serving' '$SCRATCH/ok.log'"
if "$MULTIFS" --log-file "$PUB/new.log" "$SCRATCH/new" 2>"$SCRATCH/new.err"; then
	pass "a new file: multifs starts"
	track_mount "$SCRATCH/new" "$(daemon_pid "$SCRATCH/new")"
else
	fail "a new file: multifs starts" "$(cat "$SCRATCH/new.err")"
fi
check_eq "a new file: root's, mode 0600" "0:600" "$(stat -c '%u:%a' "$PUB/new.log" 2>&1)"

# ------------------------------------------ SIGHUP onto a planted symlink
# A rotation moved the log away; before the HUP, the other user plants a
# symlink where the daemon will reopen.
D=$(daemon_pid "$SCRATCH/new")
mv "$PUB/new.log" "$PUB/new.log.1"
as_user ln -s "$TARGET" "$PUB/new.log"
kill -HUP "${D:-0}" 2>/dev/null
# The warning says the HUP has been handled.
check_within "SIGHUP onto a planted symlink: refused, said in the file kept" 2 \
	"grep -q 'level=warning.*reopen' '$PUB/new.log.1'" tail -n 2 "$PUB/new.log.1"
check "SIGHUP onto a planted symlink: the daemon serves on" alive "${D:-0}"
check "SIGHUP onto a planted symlink: a link still joins" timeout 5 "$VDEPROBE" send -dir "$SCRATCH/new" -count 1 -rate 100
check_eq "SIGHUP onto a planted symlink: the file is unchanged" "$TARGET_FP" "$(fingerprint "$TARGET")"
check_within "SIGHUP onto a planted symlink: the file kept gets the new lines" 2 \
	"grep -q 'msg=\"link joined\"' '$PUB/new.log.1'" tail -n 2 "$PUB/new.log.1"

# ------------------------------------------------------- a peer's words
PWN=$PUB/pwned
HOSTILE_HEX=$("$PY" -c '
import sys
d = ("$(id>" + sys.argv[1] + ")\nlevel=error msg=forged\n\x1b[31m\u0085\u2028 end").encode()
assert len(d) <= 128, len(d)
sys.stdout.write(d.hex())' "$PWN")
SOCK_HEX=$("$PY" -c '
import sys
sys.stdout.write(("/tmp/no such\nlevel=error msg=forged\x1b\u0085\u2028").encode().hex())')

cat >"$SCRATCH/check_log.py" <<'EOF'
import json, re, sys
path, fmt, joined, refused = sys.argv[1:5]
data = open(path, "rb").read()
try:
    text = data.decode("utf-8")
except UnicodeDecodeError as e:
    sys.exit("not valid UTF-8: %s" % e)
lines = text.split("\n")
if lines[-1] != "":
    sys.exit("does not end with a newline")
lines = lines[:-1]
if len(text.splitlines()) != len(lines):
    sys.exit("splitlines() sees %d lines, '\\n' %d" % (len(text.splitlines()), len(lines)))
for i, l in enumerate(lines):
    bad = [hex(ord(c)) for c in l if ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f or c in "\u2028\u2029"]
    if bad:
        sys.exit("line %d holds raw %s: %r" % (i + 1, " ".join(bad), l[:200]))
    if fmt == "json":
        try:
            m = json.loads(l)
        except ValueError:
            sys.exit("line %d is not JSON (a forged line?): %r" % (i + 1, l[:200]))
        if m.get("msg") == "forged" or m.get("level") == "error":
            sys.exit("forged line %d: %r" % (i + 1, l[:200]))
    elif re.match(r"\s*level=error|\s*msg=forged", l):
        sys.exit("forged line %d: %r" % (i + 1, l[:200]))
def about(pid):
    return [l for l in lines if re.search(r'(pid=|"pid":)%s\b' % pid, l)]
for pid, msgs in ((joined, ["link joined", "link closed"]), (refused, ["refused: bad data socket"]), (None, ["close: refused write"])):
    mine = about(pid) if pid else lines
    for m in msgs:
        if not any(m in l for l in mine):
            sys.exit("no %r line%s" % (m, " with pid %s" % pid if pid else ""))
peers = [json.loads(l).get("peer", "") if fmt == "json" else l for l in about(joined)]
if not any("$(id>" in p for p in peers):
    sys.exit("the description's printable text was not kept as it is")
print("%d lines" % len(lines))
EOF

for fmt in text json; do
	P=$SCRATCH/w$fmt
	LOG=$SCRATCH/w$fmt.log
	start_multifs "$P" --log-format "$fmt" -o mode=0666 || continue
	OUT=$SCRATCH/$fmt.peer
	as_user timeout 30 "$PY" "$HD/vde_desc.py" "$P/ctl" --desc-hex "$HOSTILE_HEX" \
		--sockdir "$PUB" --hold 10 >"$OUT" 2>&1 &
	track $!
	disown $!
	check_within "$fmt: a peer with a hostile description joins" 5 "grep -q '^result=reply' '$OUT'" cat "$OUT"
	PID=$(sed -n 's/^pid=//p' "$OUT")
	LNK=$(links_of "$P" | cut -d' ' -f1)
	as_user sh -c "printf 'x\\nlevel=error msg=forged\\033\\302\\205\\342\\200\\250' >'$P/links/${LNK:-none}/close'" 2>/dev/null
	as_user timeout 10 "$PY" "$HD/vde_desc.py" "$P/ctl" --desc-hex "$HOSTILE_HEX" \
		--sock-hex "$SOCK_HEX" >"$SCRATCH/$fmt.sock" 2>&1
	PID2=$(sed -n 's/^pid=//p' "$SCRATCH/$fmt.sock")
	echo 1 >"$P/links/${LNK:-none}/close"
	check_links "$fmt: the link is gone after its close" "$P" "" 3
	# The lines about the link's end may still be on their way.
	wait_for "'$PY' '$SCRATCH/check_log.py' '$LOG' '$fmt' '${PID:-0}' '${PID2:-0}'" 2
	if out=$("$PY" "$SCRATCH/check_log.py" "$LOG" "$fmt" "${PID:-0}" "${PID2:-0}" 2>&1); then
		pass "$fmt: every log line one line, no raw control or separator, nothing forged ($out)"
	else
		fail "$fmt: every log line one line, no raw control or separator, nothing forged" "$out"
	fi
done
check_fails "the description's \$(...) was never run" test -e "$PWN"

finish
