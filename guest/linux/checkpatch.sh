#!/bin/bash
# Run the kernel's checkpatch.pl (--strict) over the module's sources.
#
# checkpatch.pl comes from Debian's linux-source-6.1 package (apt-get
# download, not installed), unpacked once into $VFA_CACHE/checkpatch/.
# Three warnings are inherent to an out-of-tree module built for several
# kernels and are ignored: LINUX_VERSION_CODE and CONSTANT_COMPARISON (the
# version tests) and CONST_STRUCT (the ops are per instance on purpose).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VFA_CACHE=${VFA_CACHE:-/var/cache/vfio-apple}
dir=$VFA_CACHE/checkpatch
cp=$dir/scripts/checkpatch.pl

if [ ! -f "$cp" ]; then
	echo "checkpatch.sh: fetching checkpatch.pl from linux-source-6.1 (about 140 MB, once)" >&2
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && apt-get download -q linux-source-6.1 >/dev/null 2>&1) ||
		{ echo "checkpatch.sh: apt-get download linux-source-6.1 failed (apt-get update?)" >&2; exit 1; }
	dpkg-deb --fsys-tarfile "$tmp"/linux-source-6.1_*.deb |
		tar -x -C "$tmp" --wildcards './usr/src/linux-source-6.1.tar.xz'
	mkdir -p "$tmp/src"
	xz -dc "$tmp/usr/src/linux-source-6.1.tar.xz" | tar -x -C "$tmp/src" --wildcards \
		'linux-source-6.1/scripts/checkpatch.pl' 'linux-source-6.1/scripts/spelling.txt' \
		'linux-source-6.1/scripts/const_structs.checkpatch'
	mkdir -p "$dir"
	rm -rf "$dir/scripts"
	mv "$tmp/src/linux-source-6.1/scripts" "$dir/scripts"
fi
perl "$cp" --no-tree --strict --terse \
	--ignore LINUX_VERSION_CODE,CONSTANT_COMPARISON,CONST_STRUCT \
	-f "$HERE"/*.c "$HERE"/*.h
