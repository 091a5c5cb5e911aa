#!/bin/bash
# Build ref_guest.ko (the reference-style e2e test module, tests/e2e/README.md)
# for one guest kernel, with guest/linux/build.sh: the same headers, compilers
# and warnings (W=1, -Werror) as apple_dma.
#
# Usage: tests/e2e/refguest/build.sh KREL [arm64]   (KREL as guest/linux/build.sh)
# The module lands in tests/e2e/out/<release>/ref_guest.ko (or
# $OUT/<release>/); the last line printed is its path.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
exec env MODULE_SRC="$HERE" MODULE_NAME=ref_guest OUT="${OUT:-$REPO/tests/e2e/out}" \
	"$REPO/guest/linux/build.sh" "$@"
