#!/bin/bash
# t_handoff_cmd.sh: `multifs handoff` with real vde_plug and real FUSE. Under
# a steady stream of numbered frames (vdeprobe) from A's host to B's host,
# `multifs handoff A 1 -- vde_plug A B` loses nothing and, with duplicate
# suppression (the default), delivers no duplicate; with -o dedup=off the
# far host sees duplicates (so the check can fail). Its printed line, OLD
# gone, the new link open and COMMAND alive after handoff exits. Its
# failures: a COMMAND that never joins, one whose link carries nothing, one
# that exits, a signal: exit 1, COMMAND ended, the new link closed, OLD
# untouched. OLD closed meanwhile by someone else is no failure: the new
# link is kept (exit 0, closed=-). Its refusals (no such OLD, not a multifs, a
# bad duration, ...): exit 2, one line, nothing started.
. "$(dirname "$0")/lib.sh"

# field LINE KEY: the value of KEY=value in a result line.
field() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# dup_field_ok VALUE STATS WANT: the line's dup_dropped VALUE is a number
# (WANT: "any", or exactly that) if the multilink's root STATS has
# dup_dropped, else "-".
dup_field_ok() {
	if grep -q '^dup_dropped:' "$2"; then
		case $1 in '' | *[!0-9]*) return 1 ;; esac
		[ "$3" = any ] || [ "$1" = "$3" ]
	else
		[ "$1" = - ]
	fi
}

# session_of PID: the session id of PID.
session_of() { awk '{ sub(/.*\) /, ""); print $4 }' "/proc/$1/stat" 2>/dev/null; }

# run_handoff OUT ARGS...: multifs handoff ARGS (bounded); stdout in OUT,
# stderr in OUT.err, the exit status in $RC, the time it took in $TOOK (ms).
# It runs in a command substitution, which would hang for as long as
# COMMAND runs if COMMAND held handoff's stdout (the script would time out).
run_handoff() {
	local out=$1 t0 line
	shift
	t0=$(now_ms)
	line=$(timeout 40 "$MULTIFS" handoff "$@" 2>"$out.err")
	RC=$?
	TOOK=$(($(now_ms) - t0))
	printf '%s' "$line" >"$out"
	[ -n "$line" ] && echo >>"$out"
	return 0
}

# --- a hand-off under load -----------------------------------------------------------
# handoff_under_load NAME DUPS [MULTIFS ARGS...]: two fresh multilinks X and Y
# (started with the ARGS), link 1 `vde_plug X Y`, 15000 frames from X's host
# at 5000/s to Y's host (which sends a beacon every 10 ms: the new link must
# carry a frame from the far side); once 2500 frames went through link 1,
# `multifs handoff X 1 -- vde_plug X Y` (the default --overlap). DUPS:
# "none" (the far host sees no duplicate) or "some" (it sees some).
handoff_under_load() {
	local name=$1 want=$2 X Y count=15000 line new cmd send recv rc result dups
	shift 2
	X=$SCRATCH/$name.x
	Y=$SCRATCH/$name.y
	start_multifs "$X" "$@" || return 1
	start_multifs "$Y" "$@" || return 1
	rm -f "$SCRATCH/ready"
	"$VDEPROBE" recv -dir "$Y/host" -count "$count" -idle 2s -max 40s -beacon 10ms -ready "$SCRATCH/ready" >"$SCRATCH/$name.recv" 2>&1 &
	recv=$!
	track "$recv"
	wait_for "[ -e '$SCRATCH/ready' ]" 3 || { fail "$name: vdeprobe recv joins Y's host" "$(cat "$SCRATCH/$name.recv")"; return 1; }
	bg vde_plug "$X" "$Y"
	local l1=$LASTPID
	check_within "$name: link 1 (vde_plug X Y) joins X and Y" 3 "[ -d '$X/links/1' ] && [ -d '$Y/links/1' ]" ls "$X/links" "$Y/links" || return 1
	"$VDEPROBE" send -dir "$X/host" -count "$count" -rate 5000 >"$SCRATCH/$name.send" 2>&1 &
	send=$!
	track "$send"
	check_within "$name: frames flow through link 1 (2500 at Y)" 5 "[ \"\$(stat_key '$Y/links/1/stats' rx_packets)\" -ge 2500 ]" show_key "$Y/links/1/stats" rx_packets

	run_handoff "$SCRATCH/$name.out" --timeout 10s "$X" 1 -- vde_plug "$X" "$Y"
	CLOSED_AT=$(now_ms) # handoff closed OLD before it returned
	line=$(head -n 1 "$SCRATCH/$name.out")
	note "$name: multifs handoff took $TOOK ms: $line $(tr '\n' ' ' <"$SCRATCH/$name.out.err")"
	check_eq "$name: multifs handoff exit status" 0 "$RC"
	check_eq "$name: nothing on handoff's stderr" "" "$(cat "$SCRATCH/$name.out.err")"
	check_eq "$name: one line on stdout" 1 "$(grep -c . "$SCRATCH/$name.out")"
	if printf '%s\n' "$line" | grep -Eq '^new=[0-9]+ closed=1 ready_ms=[0-9]+ overlap_ms=[0-9]+ dup_dropped=([0-9]+|-)$'; then
		pass "$name: the line reads new=N closed=1 ready_ms=MS overlap_ms=MS dup_dropped=N|-"
	else
		fail "$name: the line's form" "'$line'"
	fi
	new=$(field "$line" new)
	check_eq "$name: the new link is link 2" 2 "$new"
	if [ "$(field "$line" ready_ms)" -lt 10000 ] 2>/dev/null && [ "$(field "$line" overlap_ms)" -ge 500 ] && [ "$(field "$line" overlap_ms)" -lt 10000 ]; then
		pass "$name: ready_ms within the timeout, overlap_ms at least the default --overlap 500ms"
	else
		fail "$name: ready_ms and overlap_ms" "'$line'"
	fi
	if dup_field_ok "$(field "$line" dup_dropped)" "$X/stats" any; then
		pass "$name: dup_dropped a count when X's stats have one, - otherwise ($(field "$line" dup_dropped))"
	else
		fail "$name: dup_dropped" "'$(field "$line" dup_dropped)', X's stats: $(grep dup_dropped "$X/stats")"
	fi
	# OLD gone, the new link open on both sides, its COMMAND alive.
	check_eq "$name: X's links after handoff exits: the new one alone" 2 "$(links_of "$X")"
	exits_after_close "$l1" "$name: link 1's vde_plug"
	check_links "$name: Y's links: 2" "$Y" 2 2
	cmd=$(stat_key "$X/links/2/stats" pid)
	[ -n "$cmd" ] && track "$cmd"
	check "$name: COMMAND (vde_plug X Y, pid $cmd) runs on after handoff exited" alive "$cmd"
	check_eq "$name: COMMAND in a session of its own" "$cmd" "$(session_of "$cmd")"

	if wait_exit "$send" 20; then
		wait "$send"
		check_eq "$name: vdeprobe send exit status" 0 "$?"
	else
		fail "$name: vdeprobe send ends" "still running after 20 s"
	fi
	# Read while the receiver is still attached: frames Y could not give
	# its host because the receiver did not read in time (a loaded
	# machine), which no hand-off can help.
	local starved
	starved=$(stat_key "$Y/host/stats" tx_dropped)
	rc=124
	if wait_exit "$recv" 45; then
		wait "$recv"
		rc=$?
	else
		fail "$name: vdeprobe recv ends" "still running"
	fi
	result=$(grep '^received=' "$SCRATCH/$name.recv" | tail -n 1)
	note "$name: at Y's host: $result; Y's dup_dropped: $(stat_key "$Y/stats" dup_dropped); Y's host tx_dropped: ${starved:-?}"
	check_eq "$name: vdeprobe recv exit status (nothing lost or corrupt)" 0 "$rc"
	if [ "$(field "$result" lost) $(field "$result" corrupt) $(field "$result" unique)" = "0 0 $count" ]; then
		pass "$name: 0 frames lost, 0 corrupt, $count unique at Y's host"
	else
		fail "$name: 0 frames lost, 0 corrupt, $count unique at Y's host" \
			"$result; of them dropped by Y because its host did not read in time (tx_dropped): ${starved:-?}"
	fi
	dups=$(field "$result" dups)
	case $want in
	none) check_eq "$name: duplicates at Y's host (dedup on both)" 0 "$dups" ;;
	some)
		if [ "${dups:-0}" -gt 0 ]; then
			pass "$name: duplicates at Y's host while both links were up ($dups)"
		else
			fail "$name: duplicates at Y's host with dedup=off" "dups=${dups:-?}"
		fi
		;;
	esac
	check_log_clean "$name: X's log clean" "$SCRATCH/$(basename "$X").log"
}

handoff_under_load dedup none
handoff_under_load nodedup some -o dedup=off

# --- failures: exit 1, COMMAND ended, the new link closed, OLD untouched ------------
A=$SCRATCH/A
B=$SCRATCH/B
E=$SCRATCH/E # a far side where nothing happens: no host
start_multifs "$A" || finish
start_multifs "$B" || finish
start_multifs "$E" || finish
bg vde_plug "$A" "$B"
OLDPID=$LASTPID
check_links "A's link 1 joins" "$A" 1 3 || finish

# old_untouched NAME: link 1 still open on A and B, its vde_plug running.
old_untouched() {
	check_eq "$1: OLD untouched (A's links)" 1 "$(links_of "$A")"
	check_eq "$1: OLD untouched (B's links)" 1 "$(links_of "$B")"
	check "$1: OLD's vde_plug runs on" alive "$OLDPID"
}

# one_line_err NAME FILE PATTERN: FILE is one line starting "multifs: "
# that matches PATTERN.
one_line_err() {
	if one_line "$2" && grep -Eq "^multifs: .*$3" "$2"; then
		pass "$1: one line: $(cat "$2")"
	else
		fail "$1: one line starting 'multifs: ' saying /$3/" "$(tr '\n' '|' <"$2" | head -c 300)"
	fi
}

# pid_of FILE: the pid a wrapped COMMAND wrote (sh -c 'echo $$ > FILE; ...').
pid_of() { cat "$1" 2>/dev/null; }

# A COMMAND that never joins.
P=$SCRATCH/never.pid
total0=$(stat_key "$A/stats" links_total)
run_handoff "$SCRATCH/never" --timeout 2s "$A" 1 -- sh -c "echo \$\$ >$P; exec sleep 60"
track "$(pid_of "$P")"
check_eq "never joins: exit status" 1 "$RC"
one_line_err "never joins" "$SCRATCH/never.err" "handoff: COMMAND joined no link within 2s"
if [ "$TOOK" -ge 2000 ] && [ "$TOOK" -lt 6000 ]; then pass "never joins: gave up after the timeout ($TOOK ms)"; else fail "never joins: gave up after the timeout" "$TOOK ms"; fi
check "never joins: COMMAND ended (pid $(pid_of "$P"))" eval "[ -n '$(pid_of "$P")' ] && ! alive '$(pid_of "$P")'"
check_eq "never joins: nothing on stdout" "" "$(cat "$SCRATCH/never")"
check_eq "never joins: no link joined" "$total0" "$(stat_key "$A/stats" links_total)"
old_untouched "never joins"

# A COMMAND that joins, through a child of its own (not exec'ed: handoff
# must find the link by COMMAND's descendants), a far side that sends
# nothing.
P=$SCRATCH/quiet.pid
run_handoff "$SCRATCH/quiet" --timeout 2s "$A" 1 -- sh -c "echo \$\$ >$P; vde_plug '$A' '$E'; exit 0"
quiet=$(pid_of "$P")
track "$quiet"
check_eq "joins, carries nothing: exit status" 1 "$RC"
one_line_err "joins, carries nothing" "$SCRATCH/quiet.err" "handoff: link 2 received no frame from the far side within 2s"
check_eq "joins, carries nothing: the new link closed when handoff returns (A's links)" 1 "$(links_of "$A")"
check_links "joins, carries nothing: E's side of it gone" "$E" "" 2
check "joins, carries nothing: COMMAND (sh, pid $quiet) ended" eval "[ -n '$quiet' ] && ! alive '$quiet'"
check_eq "joins, carries nothing: no process of COMMAND's session left" "" "$(ps -eo sid=,stat= | awk -v s="$quiet" '$1 == s && $2 !~ /^Z/')"
old_untouched "joins, carries nothing"

# A COMMAND that exits at once.
run_handoff "$SCRATCH/exits" --timeout 5s "$A" 1 -- sh -c 'exit 3'
check_eq "COMMAND exits: exit status" 1 "$RC"
one_line_err "COMMAND exits" "$SCRATCH/exits.err" "handoff: COMMAND exited \(status 3\) before joining a link"
if [ "$TOOK" -lt 2000 ]; then pass "COMMAND exits: handoff ends at once ($TOOK ms)"; else fail "COMMAND exits: handoff ends at once" "$TOOK ms"; fi
old_untouched "COMMAND exits"

# A signal while waiting: the same clean-up.
for sig in TERM INT; do
	P=$SCRATCH/sig$sig.pid
	rm -f "$P"
	"$MULTIFS" handoff --timeout 20s "$A" 1 -- sh -c "echo \$\$ >$P; exec vde_plug '$A' '$E'" >"$SCRATCH/sig$sig" 2>"$SCRATCH/sig$sig.err" &
	hpid=$!
	track "$hpid"
	if ! wait_for "[ -s '$P' ] && [ \"\$(links_of '$A')\" != 1 ]" 3; then
		fail "SIG$sig: COMMAND joins" "links: $(links_of "$A")"
		continue
	fi
	track "$(pid_of "$P")"
	kill -"$sig" "$hpid"
	if wait_exit "$hpid" 5; then
		wait "$hpid"
		check_eq "SIG$sig while waiting: exit status" 1 "$?"
	else
		fail "SIG$sig while waiting: handoff exits" "still running after 5 s"
	fi
	one_line_err "SIG$sig while waiting" "$SCRATCH/sig$sig.err" "interrupted by SIG$sig"
	check "SIG$sig while waiting: COMMAND ended" eval "! alive '$(pid_of "$P")'"
	old_untouched "SIG$sig while waiting"
done

# A signal during the overlap (the new link ready, OLD not yet closed): the
# same clean-up. B's host sends a beacon every 10 ms, so a link to B is
# ready at once.
"$VDEPROBE" recv -dir "$B/host" -count 1 -idle 60s -max 60s -beacon 10ms >"$SCRATCH/beacon.out" 2>&1 &
track $!
check_within "a beacon host attaches to B" 3 "[ \"\$(stat_key '$B/host/stats' attached)\" = yes ]" head -n 1 "$B/host/stats"
P=$SCRATCH/overlap.pid
"$MULTIFS" handoff -v --overlap 30s "$A" 1 -- sh -c "echo \$\$ >$P; exec vde_plug '$A' '$B'" >"$SCRATCH/overlap" 2>"$SCRATCH/overlap.err" &
hpid=$!
track "$hpid"
# newest PATH: the highest open link id.
newest() { links_of "$1" | tr ' ' '\n' | tail -n 1; }
# new_ready: A has a link besides 1, and it received a frame.
new_ready() {
	local n
	n=$(newest "$A")
	[ -n "$n" ] && [ "$n" != 1 ] && [ "$(stat_key "$A/links/$n/stats" rx_packets)" -gt 0 ]
}
if wait_for "[ -s '$P' ] && new_ready" 5; then
	NEWL=$(newest "$A")
	track "$(pid_of "$P")"
	check_within "-v: handoff says link $NEWL joined" 2 "grep -q '^multifs: handoff: link $NEWL joined' '$SCRATCH/overlap.err'" cat "$SCRATCH/overlap.err"
	check_within "-v: handoff says link $NEWL is ready (first frame)" 2 "grep -q '^multifs: handoff: link $NEWL received its first frame' '$SCRATCH/overlap.err'" cat "$SCRATCH/overlap.err"
	kill -TERM "$hpid"
	if wait_exit "$hpid" 5; then
		wait "$hpid"
		check_eq "SIGTERM during the overlap: exit status" 1 "$?"
	else
		fail "SIGTERM during the overlap: handoff exits" "still running after 5 s"
	fi
	tail -n 1 "$SCRATCH/overlap.err" >"$SCRATCH/overlap.last"
	one_line_err "SIGTERM during the overlap (the last line)" "$SCRATCH/overlap.last" "interrupted by SIGTERM before the switch \(link $NEWL ready"
	check_eq "-v: three lines on stderr (joined, ready, the reason)" 3 "$(wc -l <"$SCRATCH/overlap.err")"
	check "SIGTERM during the overlap: COMMAND ended" eval "! alive '$(pid_of "$P")'"
	check_links "SIGTERM during the overlap: the new link closed on B" "$B" 1 2
	old_untouched "SIGTERM during the overlap"
else
	fail "SIGTERM during the overlap: the new link is ready" "links: $(links_of "$A"); $(show_key "$A/links/$(newest "$A")/stats" rx_packets)"
fi

# --- refusals: exit 2, one line, nothing started ------------------------------------
# refused NAME PATTERN ARGS...: multifs handoff ARGS exits 2 with one line
# matching PATTERN; COMMAND (which would leave a file) did not run and A
# saw no link join.
M=$SCRATCH/started
refused() {
	local name=$1 pat=$2 total
	shift 2
	rm -f "$M"
	total=$(stat_key "$A/stats" links_total)
	run_handoff "$SCRATCH/refused" "$@" -- sh -c "touch $M; exec vde_plug '$A' '$B'"
	check_eq "$name: exit status 2" 2 "$RC"
	one_line_err "$name" "$SCRATCH/refused.err" "$pat"
	check "$name: nothing started" eval "[ ! -e '$M' ] && [ \"\$(stat_key '$A/stats' links_total)\" = '$total' ]"
}
refused "no such OLD" "links/9: no such link \(open: 1\)" "$A" 9
refused "OLD not a number" 'OLD "one"' "$A" one
refused "PATH not a multifs (a plain directory)" "not a live multifs: not a multifs mount \(not FUSE\)" "$SCRATCH" 1
refused "PATH inside a multifs (A/links)" "not a live multifs: .*inside a FUSE mount" "$A/links" 1
refused "PATH missing" "not a live multifs" "$SCRATCH/absent" 1
ln -s "$A" "$SCRATCH/symlink"
refused "PATH a symlink to a multifs" "not a live multifs: a symbolic link" "$SCRATCH/symlink" 1
refused "--timeout 0" '--timeout "0"' --timeout 0 "$A" 1
refused "--timeout abc" '--timeout "abc"' --timeout abc "$A" 1
refused "--timeout 5 (no unit)" '--timeout "5"' --timeout 5 "$A" 1
refused "--overlap -1s" '--overlap "-1s"' --overlap -1s "$A" 1
refused "unknown flag" "unknown flag --bogus" --bogus "$A" 1
rm -f "$M"
run_handoff "$SCRATCH/refused" "$A" 1 sh -c "touch $M"
check_eq "no -- before COMMAND: exit status 2" 2 "$RC"
one_line_err "no -- before COMMAND" "$SCRATCH/refused.err" "no -- before COMMAND"
check "no -- before COMMAND: nothing started" test ! -e "$M"
run_handoff "$SCRATCH/refused" "$A" 1 -- "$SCRATCH/no-such-command"
check_eq "COMMAND not found: exit status 2" 2 "$RC"
one_line_err "COMMAND not found" "$SCRATCH/refused.err" "COMMAND .*no-such-command: no such file"
old_untouched "after the refusals"

run_handoff "$SCRATCH/help" --help
check_eq "multifs handoff --help: exit status" 0 "$RC"
check "multifs handoff --help prints its usage" grep -q '^usage: multifs handoff \[--timeout D\] \[--overlap D\] \[-v\] PATH OLD -- COMMAND' "$SCRATCH/help"
"$MULTIFS" --help >"$SCRATCH/help" 2>&1
check "multifs --help names handoff" grep -q 'multifs handoff \[--timeout D\] \[--overlap D\] \[-v\] PATH OLD -- COMMAND' "$SCRATCH/help"

# --- OLD closed by someone else before the switch ---------------------------------
# (its path broke, say: often why a hand-off is made). The new link is then
# all A's host has: handoff keeps it, waits for it to be ready, and says
# that it closed nothing. B's beacon host is still there (it waits 60 s).
P=$SCRATCH/vanish.pid
"$MULTIFS" handoff --timeout 20s --overlap 30s "$A" 1 -- sh -c "echo \$\$ >$P; exec vde_plug '$A' '$B'" >"$SCRATCH/vanish" 2>"$SCRATCH/vanish.err" &
hpid=$!
track "$hpid"
if wait_for "[ -s '$P' ] && [ \"\$(links_of '$A')\" != 1 ]" 3; then
	track "$(pid_of "$P")"
	VNEW=$(newest "$A")
	close_link "$A/links/1/close" "close OLD (link 1) while handoff waits"
	if wait_exit "$hpid" 3; then
		wait "$hpid"
		check_eq "OLD gone before the switch: exit status (the new link is up)" 0 "$?"
	else
		fail "OLD gone before the switch: handoff exits once the new link is ready" "still running after 3 s (the overlap is 30 s)"
	fi
	if one_line "$SCRATCH/vanish" && grep -Eq "^new=$VNEW closed=- ready_ms=[0-9]+ overlap_ms=[0-9]+ dup_dropped=" "$SCRATCH/vanish"; then
		pass "OLD gone before the switch: the line says closed=- ($(cat "$SCRATCH/vanish"))"
	else
		fail "OLD gone before the switch: the line" "'$(cat "$SCRATCH/vanish")'"
	fi
	one_line_err "OLD gone before the switch" "$SCRATCH/vanish.err" "handoff: link 1 was closed before the switch, not by handoff; link $VNEW carries the traffic now"
	check_eq "OLD gone before the switch: the new link kept" "$VNEW" "$(links_of "$A")"
	check "OLD gone before the switch: COMMAND runs on" alive "$(pid_of "$P")"
else
	fail "OLD gone before the switch: COMMAND joins" "links: $(links_of "$A")"
fi
check_log_clean "A's log clean" "$SCRATCH/A.log"

finish
