#!/bin/bash
# The long fuzz run, beyond CI's 60 s per target (issue 11, item 7): each
# libFuzzer target runs until it has executed RUNS inputs or for SECONDS,
# whichever comes first, over its committed corpus.  New interesting inputs
# are kept in OUT/<name>/ (not committed by themselves); a crash stops that
# target, leaves its reproducer in OUT/crash-<name>-* and fails the run.
#
#   fuzz/long.sh                         # 10^8 executions per target, at most 24 h each
#   RUNS=1000000 SECONDS_MAX=3600 fuzz/long.sh
#   JOBS=2 fuzz/long.sh                  # both targets at once (one core each)
#
# Environment: RUNS (default 100000000), SECONDS_MAX (default 86400),
# OUT (default build-fuzz/long), JOBS (1: one target after the other; 2: in
# parallel), NICE (default 10: other work on the machine goes first),
# BUILD_FUZZ (default build-fuzz, configured as fuzz/run.sh does).
# At the end it prints, per target, the executions done and the time taken
# (libFuzzer's final stats), for the closing note.  Regressions found go to
# fuzz/corpus/<name>/ by hand, named after what they hit.
set -eu
cd "$(dirname "$0")/.."
runs=${RUNS:-100000000}
secs=${SECONDS_MAX:-86400}
build=${BUILD_FUZZ:-build-fuzz}
out=${OUT:-$build/long}
jobs=${JOBS:-1}
nice_level=${NICE:-10}

if [ ! -f "$build/build.ninja" ]; then
	CC=clang meson setup "$build" -Dfuzz=true -Dtests=false \
		-Db_sanitize=address,undefined -Db_lundef=false \
		-Dc_args=-fsanitize=fuzzer-no-link >/dev/null
fi
ninja -C "$build" fuzz/fuzz_companion fuzz/fuzz_vfu >/dev/null
mkdir -p "$out"
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1

one() {
	local target=$1 name=${1#fuzz_}
	mkdir -p "$out/$name"
	echo "fuzz/long.sh: $target: up to $runs executions or ${secs}s (log $out/$name.log)"
	nice -n "$nice_level" "$build/fuzz/$target" -runs="$runs" -max_total_time="$secs" -print_final_stats=1 \
		-artifact_prefix="$out/crash-$name-" "$out/$name" "fuzz/corpus/$name" >"$out/$name.log" 2>&1
}

rc=0
if [ "$jobs" -ge 2 ]; then
	one fuzz_companion & p1=$!
	one fuzz_vfu & p2=$!
	wait $p1 || rc=1
	wait $p2 || rc=1
else
	one fuzz_companion || rc=1
	one fuzz_vfu || rc=1
fi
for name in companion vfu; do
	echo "== $name"
	grep -E 'stat::number_of_executed_units|stat::average_exec_per_sec|Done [0-9]+ runs|ERROR|SUMMARY' \
		"$out/$name.log" || true
	ls "$out"/crash-"$name"-* 2>/dev/null && rc=1
done
exit $rc
