#!/bin/sh
# Run every benchmark executable in $BUILD/bench (default build/); each
# prints its own figures (medians and ratios).  Called by `make bench`.
set -u
cd "$(dirname "$0")/.."
dir="${BUILD:-build}/bench"
status=0
found=0
for exe in "$dir"/bench_*; do
	[ -f "$exe" ] && [ -x "$exe" ] || continue
	found=1
	echo "===== $(basename "$exe") ====="
	"$exe" || { echo "$(basename "$exe") failed" >&2; status=1; }
	echo
done
if [ "$found" -eq 0 ]; then
	echo "no benchmarks in $dir: run 'make build' first" >&2
	exit 1
fi
exit "$status"
