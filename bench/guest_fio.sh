#!/bin/bash
# bench_guest_fio: 4 KiB random reads (fio, libaio) at QD1 and QD32 in a TCG
# x86_64 guest, apple_dma over a dart=apple broker in its lazy (default)
# and strict modes against the DART-off reference (dart=identity, no
# module), in one run.  The modes alternate guest by guest (lazy, strict,
# identity, lazy, ...), so that all see the same machine load; each guest
# boot measures QD1 and QD32 once.  Prints per mode and queue depth the
# median IOPS, doorbells per 1,000 I/Os, and the IOPS ratio to identity.
# Then 4-vCPU guests measure numjobs=1 against numjobs=4 (QD8 each), lazy
# and DART-off, alternating, BENCH_REPS times: the module's scaling next to
# the reference's.  TCG makes absolute IOPS small; the ratios and the
# doorbell rate are the figures that carry over.
#
# Env: BENCH_KERNEL (6_1), BENCH_RUNTIME (s per run, 10), BENCH_REPS (3),
#      BENCH_PARTS ("qd scale": the QD1/QD32 table, the numjobs table),
#      VFA_BIN (the build's vfio-apple), VFA_CACHE.
# Needs root and provision/provision.sh's cache; says "skipped" without them.
set -uo pipefail
REPO=@REPO@
BUILD_ROOT=@BUILD_ROOT@
[ -d "$REPO/tests/e2e" ] || REPO=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" != 0 ]; then
	echo "bench_guest_fio: skipped (needs root for the guest)"
	exit 0
fi
. "$REPO/tests/e2e/lib.sh"
VFA_BIN=${VFA_BIN:-$BUILD_ROOT/cli/vfio-apple}
find_vfio_apple
provision_env --headers
tag=${BENCH_KERNEL:-6_1}
runtime=${BENCH_RUNTIME:-10}
reps=${BENCH_REPS:-3}
parts=${BENCH_PARTS:-qd scale}
kernel_var=KERNEL_$tag modules_var=MODULES_$tag krel_var=KREL_$tag
KERNEL=${!kernel_var:-}
MODULES=${!modules_var:-}
[ -n "$KERNEL" ] && [ -n "$MODULES" ] || die "no provisioned kernel for $tag"
make_work

ko=$(OUT=$WORK/ko "$REPO/guest/linux/build.sh" "${!krel_var}" | tail -n1) || die "module build failed"

make_initrd() { # mode
	local mode=$1
	{
		echo "BENCH_MODE=$mode BENCH_RUNTIME=$runtime BENCH_REPS=1"
		cat "$E2E_DIR/guest/common.sh" "$REPO/bench/guest_fio_workload.sh"
	} >"$WORK/$mode.sh"
	"$PROVISION/mkinitramfs.sh" -o "$WORK/$mode.cpio.gz" -m "$MODULES" --load nvme --fio \
		--ko "$ko" --script "$WORK/$mode.sh" >/dev/null 2>&1 || die "mkinitramfs failed"
}

run_mode() { # mode dart [QEMU args]
	local mode=$1 dart=$2
	shift 2
	start_broker "$mode" "sim:nvme,size=256M,dart=$dart"
	run_x86_guest "$mode" "$KERNEL" "$WORK/$mode.cpio.gz" $((180 + 4 * (runtime + 5))) "$@" >/dev/null
	stop_broker_only
	grep -a 'VFA-RESULT bench_mode=' "$CONSOLE" | tr -d '\r' >>"$WORK/$mode.results"
	grep -aq 'VFA-RESULT bench=done' "$CONSOLE" || { show_context; die "the $mode guest did not finish"; }
}

# median_stdin: the median of the numbers on standard input (0 if none)
median_stdin() {
	sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# median FILE KEY VALUE FIELD: FIELD's median over the lines with KEY=VALUE
median() {
	grep " $2=$3 " "$1" | tr ' ' '\n' | sed -n "s/^$4=//p" | median_stdin
}
# per_kio FILE KEY VALUE: doorbells per 1,000 I/Os over those lines
per_kio() {
	grep " $2=$3 " "$1" | tr ' ' '\n' | awk -F= '$1 == "ios" { i += $2 } $1 == "doorbells" { d += $2 } END { printf "%.3f", i ? d * 1000 / i : 0 }'
}

if [[ " $parts " == *" qd "* ]]; then
	make_initrd module
	make_initrd strict
	make_initrd identity
	for _ in $(seq "$reps"); do
		run_mode module apple
		run_mode strict apple
		run_mode identity identity
	done

	echo "bench_guest_fio: kernel $tag, 4 KiB randread, ${runtime} s x $reps per point, TCG"
	printf '%-8s %-4s %10s %14s %8s %20s\n' mode QD IOPS "identity IOPS" ratio "doorbells/1000 I/O"
	for mode in module strict; do
		for qd in 1 32; do
			m=$(median "$WORK/$mode.results" qd $qd iops)
			i=$(median "$WORK/identity.results" qd $qd iops)
			r=$(awk -v m="$m" -v i="$i" 'BEGIN { printf "%.3f", i ? m / i : 0 }')
			printf '%-8s %-4s %10s %14s %8s %20s\n' "${mode/module/lazy}" "$qd" "$m" "$i" "$r" \
				"$(per_kio "$WORK/$mode.results" qd $qd)"
		done
	done
fi

if [[ " $parts " == *" scale "* ]]; then
	make_initrd scale
	make_initrd scale-identity
	# numjobs scaling: 4-vCPU guests, lazy module and DART-off, QD8 per job.
	for _ in $(seq "$reps"); do
		run_mode scale apple -smp 4
		run_mode scale-identity identity -smp 4
	done
	echo "bench_guest_fio: 4 vCPUs, 4 KiB randread QD8 per job, medians of $reps:"
	printf '%-9s %9s %9s %6s %14s\n' mode "jobs=1" "jobs=4" "4 / 1" "doorbells/1000"
	for mode in scale scale-identity; do
		j1=$(median "$WORK/$mode.results" jobs 1 iops)
		j4=$(median "$WORK/$mode.results" jobs 4 iops)
		printf '%-9s %9s %9s %6s %14s\n' "$([ $mode = scale ] && echo lazy || echo identity)" "$j1" "$j4" \
			"$(awk -v a="$j4" -v b="$j1" 'BEGIN { printf "%.2f", b ? a / b : 0 }')" \
			"$(per_kio "$WORK/$mode.results" jobs 1) / $(per_kio "$WORK/$mode.results" jobs 4)"
	done
fi
