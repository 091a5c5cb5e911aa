#!/bin/bash
# End-to-end runs on x86_64 guests (Debian 6.1 kernel, q35, TCG):
#
#   identity   dart=identity: both devices enumerate with the right IDs, the
#              unmodified nvme driver binds, a written pattern reads back
#              equal, fio verifies, MSI-X vectors count in the guest and in
#              the broker;
#   apple      dart=apple WITHOUT the guest module: the driver's DMA faults
#              in the DART, the probe fails cleanly, the broker counts the
#              faults, keeps answering status and exits 0 on SIGTERM.
#
# Usage: tests/e2e/run-x86.sh [identity] [apple]      (default: both)
# Env:   VFA_BIN (default ./build/cli/vfio-apple), VFA_CACHE, E2E_KEEP=1
#        keeps the logs, E2E_KERNEL=6_1|6_12|7_3 picks the guest kernel.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(identity apple)
for s in "${scenarios[@]}"; do
	case $s in identity | apple) ;; *) die "unknown scenario '$s' (identity, apple)" ;; esac
done

find_vfio_apple
provision_env
tag=${E2E_KERNEL:-6_1}
kernel_var=KERNEL_$tag modules_var=MODULES_$tag
KERNEL=${!kernel_var:-}
MODULES=${!modules_var:-}
[ -n "$KERNEL" ] && [ -n "$MODULES" ] || die "no provisioned kernel for E2E_KERNEL=$tag"
make_work

# The guest's workload: shared helpers + the scenario's script.
initrd_for() {
	local name=$1
	cat "$E2E_DIR/guest/common.sh" "$E2E_DIR/guest/$name.sh" >"$WORK/$name.workload.sh"
	"$PROVISION/mkinitramfs.sh" -o "$WORK/$name.cpio.gz" -m "$MODULES" --load nvme --fio \
		--script "$WORK/$name.workload.sh" 2>&1 | sed 's/^/e2e: /' || die "mkinitramfs failed"
}

# (a) both functions present with the right IDs, from the guest's sysfs.
check_enumeration() {
	check "guest sees the passthrough NVMe at 00:05.0 (1b36:00f0, class 0x010802)" \
		grep -aq 'VFA-RESULT pci=0000:00:05.0 id=1b36:00f0 class=0x010802' "$CONSOLE"
	check "guest sees the companion at 00:06.0 (1b36:0015, class 0x088000)" \
		grep -aq 'VFA-RESULT pci=0000:00:06.0 id=1b36:0015 class=0x088000' "$CONSOLE"
	check "the guest ran its workload to the end" grep -aq 'VFA-RESULT init=done' "$CONSOLE"
}

run_identity() {
	say "=== identity: dart=identity, unmodified nvme driver, verified I/O ==="
	initrd_for identity
	start_broker identity "sim:nvme,size=256M,dart=identity"
	start_status_poller identity
	run_x86_guest identity "$KERNEL" "$WORK/identity.cpio.gz" 300
	stop_status_poller
	local st=$WORK/identity.status final=$WORK/identity.final
	check "broker answers status after the guest left" eval 'broker_status >"$final"'
	check_enumeration
	check "nvme driver bound to 00:05.0" eq "$(result driver)" nvme
	check "the guest exited its workload with 0" eq "$(result rc)" 0
	check "pattern written and read back equal" eq "$(result pattern)" match
	check "fio verify passed with 0 errors" eq "$(result fio_identity)/$(result errors)" ok/0
	check "guest nvme MSI-X vectors counted interrupts ($(result nvme_irqs))" gt "$(result nvme_irqs)" 0
	check "broker delivered interrupts ($(json_get "$st" interrupts.delivered))" \
		gt "$(json_get "$st" interrupts.delivered)" 0
	check "no DART faults in identity mode" eq "$(json_get "$final" dma.faults)" 0
	stop_broker
	check "broker exits 0 on SIGTERM" eq "$broker_rc" 0
	[ $e2e_fail -eq 0 ] || show_context
}

run_apple() {
	say "=== apple: dart=apple without the guest module, DMA must fail cleanly ==="
	initrd_for apple-nomodule
	start_broker apple "sim:nvme,size=256M,dart=apple"
	start_status_poller apple
	run_x86_guest apple "$KERNEL" "$WORK/apple-nomodule.cpio.gz" 300
	stop_status_poller
	local final=$WORK/apple.final
	check "broker still answers status after the faulting guest" eval 'broker_status >"$final"'
	check_enumeration
	check "the guest's driver did not get a working disk ($(result nvme_state))" \
		eval '[ "$(result nvme_state)" != namespace ] || [ "$(result read)" = failed ]'
	check "broker counted DART faults ($(json_get "$final" dma.faults))" gt "$(json_get "$final" dma.faults)" 0
	check "broker process still alive" kill -0 "$broker_pid"
	stop_broker
	check "broker exits 0 on SIGTERM" eq "$broker_rc" 0
	[ $e2e_fail -eq 0 ] || show_context
}

for s in "${scenarios[@]}"; do
	"run_$s"
done
say "x86 ($tag kernel): $e2e_pass checks passed, $e2e_fail failed"
[ $e2e_fail -eq 0 ]
