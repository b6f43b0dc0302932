#!/bin/bash
# t_sec10_stats_injection.sh: a peer's description cannot forge lines in a
# stats file, for any reasonable parser. A throw-away
# user joins as a link and as the host with a description holding U+0085
# (NEL), U+2028, U+2029, a C1 control (U+009B, CSI), ESC, invalid UTF-8
# and "\nid: 99\ntransport: forged"; Python's str.splitlines() (which
# breaks at all of those Unicode separators) must see in links/N/stats and
# host/stats exactly the expected keys, each once, the text must be valid
# UTF-8 free of control characters, and the description must be one line
# that still shows every byte the peer sent, escaped.
# A throw-away user mfu_b2 is created and removed at exit.
. "$(dirname "$0")/lib.sh"

hostile_copy
public_dir # where the attacker binds its data socket

U=mfu_b2
throwaway_user "$U"

P=$SCRATCH/m
start_multifs "$P" -o mode=0666 || finish

# The description: every way a line can end for some reader, then the
# classic forgery. 89 bytes, under the 128 the protocol allows.
DESC_HEX=$("$PY" -c '
import sys
d = ("vde_plug" + "\u0085id: 11" + "\u2028id: 12" + "\u2029transport: forged2" +
     "\u009b31m" + "\x1b[2J").encode() + b"\xff\xfe" + b"\nid: 99\ntransport: forged"
assert len(d) <= 128
sys.stdout.write(d.hex())')

# check_stats NAME FILE KIND: KIND is link or host; see the header.
cat >"$SCRATCH/check_stats.py" <<'EOF'
import sys
data = open(sys.argv[1], "rb").read()
kind = sys.argv[2]
want = ["id", "transport", "description", "pid", "uid", "gid", "since",
        "rx_packets", "rx_bytes", "rx_dropped", "tx_packets", "tx_bytes", "tx_dropped",
        "idle_ms", "rx_dup_dropped"]
if kind == "host":
    want = ["attached"] + want[1:-1]
try:
    text = data.decode("utf-8")
except UnicodeDecodeError as e:
    sys.exit("not valid UTF-8: %s" % e)
lines = text.splitlines()
keys = [l.split(":", 1)[0] for l in lines]
if keys != want:
    sys.exit("splitlines() keys %r, want %r" % (keys, want))
if len(text.split("\n")) - 1 != len(lines):
    sys.exit("'\\n' and splitlines() disagree: %d and %d lines" % (len(text.split("\n")) - 1, len(lines)))
bad = [hex(ord(c)) for c in text if c != "\n" and (ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f or c in "\u2028\u2029")]
if bad:
    sys.exit("raw control or separator characters: %s" % " ".join(bad))
d = [l for l in lines if l.startswith("description: ")][0]
for frag in (r"\u0085id: 11", r"\u2028id: 12", r"\u2029transport: forged2", r"\u009b31m",
             r"\x1b[2J", r"\xff\xfe", r"\x0aid: 99\x0atransport: forged"):
    if frag not in d:
        sys.exit("description line lacks %r: %r" % (frag, d))
EOF
check_stats() {
	local out
	if out=$("$PY" "$SCRATCH/check_stats.py" "$2" "$3" 2>&1); then
		pass "$1"
	else
		fail "$1" "$out"
	fi
}

for role in link host; do
	ctl=$P/ctl
	[ "$role" = host ] && ctl=$P/host/ctl
	OUT=$SCRATCH/$role.out
	runuser -u "$U" -- timeout 30 "$PY" "$HD/vde_desc.py" "$ctl" --desc-hex "$DESC_HEX" \
		--sockdir "$PUB" --hold 20 >"$OUT" 2>&1 &
	track $!
	disown $!
	if ! check_within "$role: the peer with the hostile description joins" 5 \
		"grep -q '^result=reply' '$OUT'" cat "$OUT"; then
		continue
	fi
	if [ "$role" = link ]; then
		N=$(links_of "$P" | cut -d' ' -f1)
		STATS=$P/links/${N:-none}/stats
	else
		check_stat "host: attached" "$P/host/stats" attached yes 2
		STATS=$P/host/stats
	fi
	check_stats "$role: stats are the expected keys once each, for splitlines() too, the description one line" "$STATS" "$role"
	# 13 identity and counter keys, idle_ms, and rx_dup_dropped for a link
	# (a host's first line is attached: instead of id:).
	lines=15
	[ "$role" = host ] && lines=14
	check_eq "$role: stats has $lines lines for grep too" "$lines" "$(grep -c '' "$STATS")"
	check_eq "$role: the pid line is the peer's" "$(sed -n 's/^pid=//p' "$OUT")" "$(stat_key "$STATS" pid)"
done

finish
