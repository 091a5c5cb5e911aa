# Guest side of bench_guest_fio (prepended by tests/e2e/guest/common.sh).
# BENCH_MODE (module|strict|identity|scale), BENCH_RUNTIME and BENCH_REPS
# are set by the host runner in a line above.  4 KiB random reads at QD1
# and QD32; each repetition prints IOPS, I/Os and the companion's doorbells
# during it.  scale (lazy module, 4 vCPUs) and scale-identity (DART-off, no
# module): numjobs 1 and 4 at QD8 each.
list_pci >/dev/null
STATS=/sys/kernel/debug/apple_dma/0000:00:06.0/stats
doorbells() {
	if [ -r "$STATS" ]; then sed -n 's/^doorbells //p' "$STATS"; else echo 0; fi
}
case $BENCH_MODE in
module | scale) modload apple_dma || { result bench=no_module; exit 1; } ;;
strict) VFA_PARAMS_apple_dma="strict=1" modload apple_dma || { result bench=no_module; exit 1; } ;;
esac
VFA_PARAMS_nvme_core="admin_timeout=30 io_timeout=30" modload nvme
wait_for /dev/nvme0n1 60 || { result bench=no_disk; exit 1; }
# Fill the region read below so reads see written blocks.
dd if=/dev/zero of=/dev/nvme0n1 bs=1M count=64 oflag=direct 2>/dev/null
if [ "$BENCH_MODE" = scale ] || [ "$BENCH_MODE" = scale-identity ]; then
	result cpus="$(grep -c ^processor /proc/cpuinfo)"
	for jobs in 1 4; do
		d0=$(doorbells)
		line=$(fio --name=s --filename=/dev/nvme0n1 --direct=1 --ioengine=libaio \
			--iodepth=8 --rw=randread --bs=4k --size=64M --time_based --numjobs="$jobs" \
			--group_reporting --runtime="$BENCH_RUNTIME" --minimal --eta=never 2>/dev/null | tail -n1)
		d1=$(doorbells)
		kib=$(echo "$line" | cut -d';' -f6)
		result bench_mode="$BENCH_MODE" jobs="$jobs" iops="$(echo "$line" | cut -d';' -f8)" \
			ios=$(( ${kib:-0} / 4 )) doorbells=$((d1 - d0))
	done
	result bench=done
	exit 0
fi
for qd in 1 32; do
	rep=0
	while [ "$rep" -lt "$BENCH_REPS" ]; do
		d0=$(doorbells)
		# terse: field 6 = KiB read, field 8 = read IOPS
		line=$(fio --name=b --filename=/dev/nvme0n1 --direct=1 --ioengine=libaio \
			--iodepth="$qd" --rw=randread --bs=4k --size=64M --time_based \
			--runtime="$BENCH_RUNTIME" --minimal --eta=never 2>/dev/null | tail -n1)
		d1=$(doorbells)
		kib=$(echo "$line" | cut -d';' -f6)
		iops=$(echo "$line" | cut -d';' -f8)
		result bench_mode="$BENCH_MODE" qd="$qd" rep="$rep" iops="${iops:-0}" \
			ios=$(( ${kib:-0} / 4 )) doorbells=$((d1 - d0))
		rep=$((rep + 1))
	done
done
result bench=done
