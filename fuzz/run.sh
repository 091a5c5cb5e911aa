#!/bin/bash
# Build the libFuzzer targets in build-fuzz (clang, ASan+UBSan) and run each
# for a bounded time over its corpus.  Fails on any crash, leak or sanitizer
# report.  Usage: fuzz/run.sh [seconds per target, default 60]
set -eu
cd "$(dirname "$0")/.."
secs=${1:-${FUZZ_SECONDS:-60}}
build=${BUILD_FUZZ:-build-fuzz}

if [ ! -f "$build/build.ninja" ]; then
	CC=clang meson setup "$build" -Dfuzz=true -Dtests=false \
		-Db_sanitize=address,undefined -Db_lundef=false \
		-Dc_args=-fsanitize=fuzzer-no-link >/dev/null
fi
ninja -C "$build" fuzz/fuzz_companion fuzz/fuzz_vfu >/dev/null

# New inputs go to a scratch directory; the committed corpus is only read.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
for target in fuzz_companion fuzz_vfu; do
	name=${target#fuzz_}
	mkdir -p "$work/$name"
	echo "fuzzing $target for ${secs}s (corpus fuzz/corpus/$name)"
	rc=0
	"$build/fuzz/$target" -max_total_time="$secs" -print_final_stats=1 \
		-artifact_prefix="$build/crash-$name-" "$work/$name" "fuzz/corpus/$name" >"$work/$name.log" 2>&1 || rc=$?
	grep -E 'DONE|stat::number_of_executed_units|stat::peak_rss_mb' "$work/$name.log" || true
	if [ "$rc" -ne 0 ]; then
		tail -n 40 "$work/$name.log"
		echo "$target FAILED (exit $rc): reproducer in $build/crash-$name-*"
		exit 1
	fi
done
