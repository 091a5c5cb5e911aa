#!/bin/bash
# Boot x86_64 guests (TCG) with apple_dma and check it end to end:
#
#   apple    dart=apple: the unmodified nvme driver works only through the
#            module: verified I/O, cache hits, steady state without
#            doorbells, rmmod unbinds nvme, reload rebinds it, no new DART
#            fault once the module is in;
#   rebind   dart=identity: nvme bound before the module; rebind=0 makes
#            the probe fail cleanly, the default rebind=1 takes it over;
#   pressure dart=apple, 2 CPUs, 16 window slots of 16 KiB: QD32 verified
#            I/O forces evictions and bounces and still verifies.
#   strict   dart=apple, strict=1: sub-granule buffers bounce, granule
#            buffers are unmapped after use; verified I/O.
#   iommu    (x86) a vIOMMU in the VM: apple_dma refuses to bind, loudly.
#
# apple also runs the module's unit tests (unittest=1: a fake doorbell).
#
# Usage: guest/linux/test-guest.sh [-k 6_1|6_12|7_3|6_12_ARM64] [apple] [rebind] [pressure] [strict] [iommu]
#        6_12_ARM64 boots an arm64 guest (QEMU virt, cpu max, TCG).
# Env:   VFA_BIN (default ./build/cli/vfio-apple), VFA_CACHE, E2E_KEEP=1
# Reuses tests/e2e/lib.sh (broker, QEMU, console results); the last line
# is "N passed, N failed".
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../../tests/e2e/lib.sh"

tag=6_1
if [ "${1:-}" = -k ]; then
	tag=$2
	shift 2
fi
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(apple rebind pressure)
find_vfio_apple
provision_env --headers
kernel_var=KERNEL_$tag modules_var=MODULES_$tag krel_var=KREL_$tag
KERNEL=${!kernel_var:-}
MODULES=${!modules_var:-}
[ -n "$KERNEL" ] && [ -n "$MODULES" ] || die "no provisioned kernel for $tag"
make_work

arch=amd64
case $tag in *_ARM64) arch=arm64 ;; esac
ko=$(OUT=$WORK/ko "$HERE/build.sh" "${!krel_var}" | tail -n1) || die "module build failed"
initrd_for() {
	cat "$E2E_DIR/guest/common.sh" "$HERE/tests/$1.sh" >"$WORK/$1.workload.sh"
	"$PROVISION/mkinitramfs.sh" -o "$WORK/$1.cpio.gz" -m "$MODULES" --load nvme --fio \
		--ko "$ko" --script "$WORK/$1.workload.sh" --arch "$arch" 2>&1 | sed 's/^/e2e: /'
}

# boot NAME INITRD TIMEOUT_S [extra QEMU args]: lib.sh's x86 or arm64 guest.
boot() {
	local name=$1 initrd=$2 limit=$3
	shift 3
	if [ "$arch" = arm64 ]; then
		run_arm64_guest "$name" "$KERNEL" "$initrd" "$limit" "$@"
	else
		run_x86_guest "$name" "$KERNEL" "$initrd" "$limit" "$@"
	fi
}

# The broker's status once it has seen the VMM go (it notices the closed
# sockets on its own, and only then releases what the guest left mapped),
# at most 5 s after QEMU exited.
final_status() {
	for _ in $(seq 50); do
		broker_status >"$1" 2>/dev/null &&
			[ "$(json_get "$1" clients.passthrough.connected)/$(json_get "$1" clients.companion.connected)" = False/False ] &&
			return 0
		sleep 0.1
	done
	broker_status >"$1"
}

# Snapshot the broker's status once the guest says the module is in: DART
# faults before that come from the firmware's own NVMe probe.
watch_module_loaded() {
	(
		for _ in $(seq 600); do
			grep -aq 'VFA-RESULT apple_dma_loaded=1' "$WORK/$1.console" 2>/dev/null && break
			sleep 0.5
		done
		broker_status >"$WORK/$1.at-load"
	) &
	watcher_pid=$!
}

run_apple() {
	say "=== apple on $tag: dart=apple, nvme through the companion ==="
	initrd_for module
	start_broker apple "sim:nvme,size=256M,dart=apple"
	start_status_poller apple
	watch_module_loaded apple
	CONSOLE=$WORK/apple.console
	boot apple "$WORK/module.cpio.gz" 400
	wait "$watcher_pid"
	stop_status_poller
	local final=$WORK/apple.final
	check "broker answers status after the guest left" eval 'final_status "$final"'
	check "apple_dma bound the companion" eq "$(result companion_driver)" apple_dma
	check "unit tests against a fake doorbell ($(result unittest))" \
		eq "$(result unittest | sed 's/_failed_.*//')/$(result unittest | sed -n 's/.*_failed_//p')" passed_20/0
	check "self-test at probe: one doorbell for a 4-window sg list, IRQs-off map, coherent + sg table" \
		eq "$(result probe_selftest)" passed
	check "the self-test's sg list went out as one batch ($(result probe_map_entries) entries, $(result probe_doorbells) doorbells)" \
		gt "$(result probe_entries_per_doorbell_x100)" 100
	check "nvme bound through apple_dma" eq "$(result driver)" nvme
	check "pattern written and read back equal" eq "$(result pattern)" match
	check "fio verify passed with 0 errors" eq "$(result fio_module)/$(result errors)" ok/0
	check "doorbells rang ($(result io_doorbells))" gt "$(result io_doorbells)" 0
	# The lazy release unmaps windows idle for two passes of its worker
	# (about 8 ms): few, slow I/Os (7.3 maps whole 256 KiB segments, under
	# TCG) miss more often than many small ones, hence 5:1, not more.
	check "cache hits ($(result io_cache_hits)) outnumber misses ($(result io_cache_misses)) 5:1" \
		gt "$(result io_cache_hits)" "$(($(result io_cache_misses) * 5))"
	# fio's buffers are mapped and, idle after the run (or a stall of the
	# TCG guest), unmapped by the lazy release: a few doorbells, not one per
	# read (bench_guest_fio measures the rate: about 0.15 per 1,000).
	check "steady state: 4096 reads, under 1 doorbell per 100 ($(result steady_doorbells))" \
		gt 41 "$(result steady_doorbells)"
	check "no failed mapping" eq "$(result io_failures)" 0
	check "no unknown unmap" eq "$(result io_unknown_unmaps)" 0
	check "the device holds what the module counts ($(result io_live_mappings) mappings)" \
		eq "$(result io_device_live_mappings)/$(result io_device_live_bytes)" \
		"$(result io_live_mappings)/$(result io_live_bytes)"
	check "idle windows unmapped once idle (lazy, $(result rest_idle_release_max_us) us at worst)" \
		eq "$(result rest_idle_mappings)" 0
	check "lazy mode by default" eq "$(result rest_mode)" lazy
	check "rmmod apple_dma unbinds nvme" eq "$(result after_unload_driver)" none
	check "a stray doorbell after rmmod finds no command page (INVAL)" \
		eq "$(result stray_doorbell_status)" 3
	check "reloading rebinds nvme and reads work" eq "$(result reload_read)/$(result reload_driver)" ok/nvme
	check "command page lost: restored once, mappings kept ($(result lost_cmd_restores)/$(result lost_resets))" \
		eq "$(result lost_cmd_restores)/$(result lost_resets)" 1/0
	check "verified I/O after the lost command page" eq "$(result fio_lostpage)/$(result errors)" ok/0
	check "no failed mapping after it" eq "$(result lost_failures)" 0
	check "no DART fault once the module is in ($(json_get "$WORK/apple.at-load" dma.faults) at load)" \
		eq "$(json_get "$final" dma.faults)" "$(json_get "$WORK/apple.at-load" dma.faults)"
	check "no oops or warning in the guest" eval '! grep -aqE "Oops|BUG:|WARNING:|Call Trace" "$CONSOLE"'
	stop_broker
	check "broker exits 0 on SIGTERM" eq "$broker_rc" 0
	check "nothing left mapped on the host" eq "$(json_get "$final" dma.live_mappings)" 0
	[ $e2e_fail -eq 0 ] || show_context
}

run_rebind() {
	say "=== rebind on $tag: dart=identity, nvme bound before the module ==="
	initrd_for rebind
	start_broker rebind "sim:nvme,size=256M,dart=identity"
	boot rebind "$WORK/rebind.cpio.gz" 400
	check "nvme bound first" eq "$(result first_driver)" nvme
	check "rebind=0: the probe refused, nvme untouched" \
		eq "$(result refused_companion_driver)/$(result refused_nvme_driver)" none/nvme
	check "rebind=0: the refusal says why" eq "$(result refusal_messages)" 1
	check "default: apple_dma took nvme over" eq "$(result companion_driver)/$(result rebound_driver)" apple_dma/nvme
	check "fio verify passed with 0 errors" eq "$(result fio_rebind)/$(result errors)" ok/0
	check "its DMA went through the module ($(result rebind_map_calls) maps)" gt "$(result rebind_map_calls)" 0
	check "no failed mapping" eq "$(result rebind_failures)" 0
	check "no oops or warning in the guest" eval '! grep -aqE "Oops|BUG:|WARNING:|Call Trace" "$CONSOLE"'
	stop_broker
	[ $e2e_fail -eq 0 ] || show_context
}

run_pressure() {
	say "=== pressure on $tag: dart=apple, 2 CPUs, tiny cache, QD32 ==="
	initrd_for pressure
	start_broker pressure "sim:nvme,size=256M,dart=apple"
	boot pressure "$WORK/pressure.cpio.gz" 400 -smp 2
	local final=$WORK/pressure.final
	check "broker answers status after the guest left" eval 'final_status "$final"'
	check "the guest has 2 CPUs" eq "$(result cpus)" 2
	check "QD32 verified writes through a 16-slot cache" eq "$(result fio_pressure)" ok
	check "two CPUs reading at QD16 each" eq "$(result fio_parallel)" ok
	check "windows were evicted ($(result p_evictions))" gt "$(result p_evictions)" 0
	check "self-test with every slot held passed ($(result p_selftest))" eq "$(result p_selftest)" passed
	check "the self-test's extra map bounced ($(result p_selftest_bounces))" gt "$(result p_selftest_bounces)" 0
	check "bounces counted after fio ($(result p_bounce_maps))" ge "$(result p_bounce_maps)" "$(result p_selftest_bounces)"
	check "live mappings within the 16 slots ($(result p_live_mappings))" gt 17 "$(result p_live_mappings)"
	check "v2_only: no feature used" eq "$(result p_guest_features)" 0x0
	# With every slot busy a coherent allocation (nvme's PRP pages) cannot
	# bounce and fails; nvme retries it.  Rare, and the data still verify.
	check "failed mappings ($(result p_failures)) under 1% of $(result p_map_calls)" \
		gt "$(result p_map_calls)" "$(($(result p_failures) * 100))"
	check "no unknown unmap" eq "$(result p_unknown_unmaps)" 0
	check "no oops or warning in the guest" eval '! grep -aqE "Oops|BUG:|WARNING:|Call Trace" "$CONSOLE"'
	stop_broker
	check "nothing left mapped on the host" eq "$(json_get "$final" dma.live_mappings)" 0
	[ $e2e_fail -eq 0 ] || show_context
}

run_strict() {
	say "=== strict on $tag: dart=apple, strict=1 ==="
	initrd_for strict
	start_broker strict "sim:nvme,size=256M,dart=apple"
	boot strict "$WORK/strict.cpio.gz" 400
	local final=$WORK/strict.final
	check "broker answers status after the guest left" eval 'final_status "$final"'
	check "strict mode" eq "$(result s_mode)" strict
	check "verified I/O, 4-256 KiB" eq "$(result fio_strict)/$(result errors)" ok/0
	check "QD32 4 KiB reads" eq "$(result fio_qd32)" ok
	check "granule-aligned verified I/O" eq "$(result fio_aligned)" ok
	check "sub-granule buffers bounced ($(result s_bounce_maps))" gt "$(result s_bounce_maps)" 0
	check "granule buffers unmapped after use ($(result s_strict_releases), $(result s_idle_release_max_us) us at worst)" \
		gt "$(result s_strict_releases)" 0
	check "nothing idle left mapped at rest" eq "$(result s_idle_mappings)" 0
	check "failed mappings ($(result s_failures)) under 1% of $(result s_map_calls)" \
		gt "$(result s_map_calls)" "$(($(result s_failures) * 100))"
	check "no unknown unmap" eq "$(result s_unknown_unmaps)" 0
	check "the device holds what the module counts" eq "$(result s_device_live_mappings)" "$(result s_live_mappings)"
	check "no oops or warning in the guest" eval '! grep -aqE "Oops|BUG:|WARNING:|Call Trace" "$CONSOLE"'
	stop_broker
	check "nothing left mapped on the host" eq "$(json_get "$final" dma.live_mappings)" 0
	[ $e2e_fail -eq 0 ] || show_context
}

run_iommu() {
	if [ "$arch" = arm64 ]; then
		echo "iommu: SKIPPED (the x86 vIOMMU scenario; arm64's SMMUv3 model cannot serve vfio devices)"
		return
	fi
	say "=== iommu on $tag: a vIOMMU in the VM, apple_dma must refuse ==="
	initrd_for iommu
	start_broker iommu "sim:nvme,size=256M,dart=identity"
	boot iommu "$WORK/iommu.cpio.gz" 300 -device intel-iommu,caching-mode=on
	check "the guest sees IOMMU groups ($(result iommu_groups))" gt "$(result iommu_groups)" 0
	check "apple_dma did not bind the companion" eq "$(result companion_driver)" none
	check "it said why (guest IOMMU)" gt "$(result refusal)" 0
	check "no oops or warning in the guest" eval '! grep -aqE "Oops|BUG:|WARNING:|Call Trace" "$CONSOLE"'
	stop_broker
	[ $e2e_fail -eq 0 ] || show_context
}

for s in "${scenarios[@]}"; do
	case $s in
	apple) run_apple ;;
	rebind) run_rebind ;;
	pressure) run_pressure ;;
	strict) run_strict ;;
	iommu) run_iommu ;;
	*) die "unknown scenario '$s' (apple, rebind, pressure, strict, iommu)" ;;
	esac
done
echo "$e2e_pass passed, $e2e_fail failed"
[ $e2e_fail -eq 0 ]
