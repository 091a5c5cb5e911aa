#!/bin/bash
# Every test of vfio-apple, in order of cost.  Called by `make check`, which
# has already built ./build (warnings as errors) and ./build-san (ASan+UBSan).
# Each stage must pass; the last line counts the stages.
set -u
cd "$(dirname "$0")/.."

passed=0
failed=0
failed_names=()

stage() {
	local name=$1
	shift
	echo
	echo "===== stage: $name ====="
	local t0=$SECONDS
	if "$@"; then
		echo "===== stage $name: PASS ($((SECONDS - t0)) s) ====="
		passed=$((passed + 1))
	else
		echo "===== stage $name: FAIL ($((SECONDS - t0)) s) ====="
		failed=$((failed + 1))
		failed_names+=("$name")
	fi
}

stage unit make -s check-unit
stage sanitizers make -s check-san
stage valgrind make -s check-valgrind
# The code a Mac build compiles (core, darwin backend, qemu/): no
# _GNU_SOURCE, no Linux-only call outside common/compat.c's Linux branch.
stage portability ./scripts/check-portability.sh
stage fuzz make -s check-fuzz
# End-to-end with real QEMU 11.1 guests under TCG (provision/, tests/e2e/):
# provisioning is cached in $VFA_CACHE, so only the first run pays for it.
# Each stage is bounded; a run killed by its timeout still cleans up (trap).
stage e2e-provision timeout 1200 ./provision/provision.sh --headers --arm64
stage e2e-x86 timeout 720 ./tests/e2e/run-x86.sh identity apple module reconnect crash refguest
stage e2e-x86-6.12 timeout 300 env E2E_KERNEL=6_12 ./tests/e2e/run-x86.sh module
stage e2e-x86-7.3 timeout 300 env E2E_KERNEL=7_3 ./tests/e2e/run-x86.sh module
stage e2e-arm64 timeout 720 ./tests/e2e/run-arm64.sh identity apple module reconnect crash refguest
# The same guests against the ASan+UBSan broker (make check built build-san).
stage e2e-x86-sanitizers timeout 720 env VFA_BIN=build-san/cli/vfio-apple ./tests/e2e/run-x86.sh identity apple module reconnect crash refguest
# The in-process devices (vfio-apple-pci, apple-dma-pci) in a QEMU that has
# them ($QEMU_BIN/$QEMU_BIN_ARM or $VFA_CACHE/qemu-inprocess): the same
# guests, x86_64 6.1 and arm64 6.12, no broker.  One SKIPPED line without one.
stage inprocess timeout 600 make -s check-inprocess
# Several devices, hot-plug and surprise removal through run/attach/detach/
# sim (tests/hotplug/): x86_64 6.1, on the vfio-user path, then in-process
# (one SKIPPED line without a QEMU that has the devices).
stage hotplug timeout 1500 make -s check-hotplug
# The same on the vfio-user path with the ASan+UBSan vfio-apple: run's
# supervisor and every broker it starts.
stage hotplug-sanitizers timeout 1200 env VFA_BIN=build-san/cli/vfio-apple ./tests/hotplug/run.sh vfio-user
# The guest module: kernel style, and its own scenarios (cache, rebind,
# eviction pressure, companion reset...) on x86 6.1, 6.12 and 7.3 and arm64
# 6.12.  The unit tests (in apple), the rebind race and the reset run on
# every kernel: the module's code differs by kernel (compile probes).
stage guest-checkpatch timeout 600 ./guest/linux/checkpatch.sh
stage guest-x86 timeout 1200 ./guest/linux/test-guest.sh -k 6_1 apple rebind pressure strict reset iommu hotplug
stage guest-x86-6.12 timeout 600 ./guest/linux/test-guest.sh -k 6_12 apple rebind reset
stage guest-x86-7.3 timeout 600 ./guest/linux/test-guest.sh -k 7_3 apple rebind reset
stage guest-arm64 timeout 1200 ./guest/linux/test-guest.sh -k 6_12_ARM64 apple rebind pressure strict reset noncoherent
# The README's first command, exactly as a user runs it.
stage demo timeout 600 make -s demo
# The same demo through the macOS backend's code path: the darwin backend
# over the dext TEST MODEL (tests/darwin/), carrying verified guest I/O.
stage demo-sim-dext timeout 600 ./build/cli/vfio-apple run --device sim-dext:nvme,size=256M

echo
if [ "$failed" -ne 0 ]; then
	echo "failed stages: ${failed_names[*]}"
fi
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
