#!/bin/bash
# run.sh: build multifs and vdeprobe once, run every test/t_*.sh in order
# (each bounded by a time limit), print their output, and end with one line:
# "N passed, N failed" (the sum; a script that crashed or timed out counts as
# at least one failure). Exit status non-zero on any failure. Needs root.
#
#	bash test/run.sh              # every test
#	bash test/run.sh t_basic      # only the named ones
#	LIMIT=60 bash test/run.sh     # per-script time limit in seconds (default 120)
#
# A script that needs longer says so in a line of its own, `# limit: N`
# (seconds); it gets the larger of N and LIMIT.

set -u
TEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$TEST_DIR/.." && pwd)
LIMIT=${LIMIT:-120}

if [ "$(id -u)" -ne 0 ]; then
	echo "run.sh: the integration tests need root (FUSE mounts, network namespaces, taps); run as root" >&2
	echo "0 passed, 1 failed"
	exit 1
fi

export MULTIFS=${MULTIFS:-$ROOT/bin/multifs}
export VDEPROBE=${VDEPROBE:-$ROOT/bin/vdeprobe}
echo "building $MULTIFS and $VDEPROBE"
if ! (cd "$ROOT" && mkdir -p bin && go build -o "$MULTIFS" ./cmd/multifs && go build -o "$VDEPROBE" ./test/vdeprobe); then
	echo "run.sh: build failed"
	echo "0 passed, 1 failed"
	exit 1
fi

if [ $# -gt 0 ]; then
	scripts=()
	for t in "$@"; do
		t=${t%.sh}
		scripts+=("$TEST_DIR/${t#test/}.sh")
	done
else
	scripts=("$TEST_DIR"/t_*.sh)
fi

total_pass=0
total_fail=0
summary=()
start=$SECONDS
for t in "${scripts[@]}"; do
	name=$(basename "$t" .sh)
	echo "=== $name"
	out=$(mktemp /tmp/mft-run.XXXXXX)
	t0=$SECONDS
	limit=$(sed -n 's/^# limit: \([0-9][0-9]*\)$/\1/p' "$t" | head -n 1)
	[ -n "$limit" ] && [ "$limit" -gt "$LIMIT" ] || limit=$LIMIT
	timeout -k 10 "$limit" bash "$t" 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1)
	rm -f "$out"
	p=0
	f=0
	if [ -n "$line" ]; then
		read -r p _ f _ <<<"$line"
	fi
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		echo "FAIL $name: timed out after $limit s"
		f=$((f + 1))
	elif [ -z "$line" ]; then
		echo "FAIL $name: no result line (exit status $rc)"
		f=$((f + 1))
	elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "FAIL $name: exit status $rc with no failure reported"
		f=1
	fi
	total_pass=$((total_pass + p))
	total_fail=$((total_fail + f))
	summary+=("$(printf '  %-20s %4d ok %3d FAIL %4d s' "$name" "$p" "$f" $((SECONDS - t0)))")
done

echo "=== summary ($((SECONDS - start)) s)"
printf '%s\n' "${summary[@]}"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
