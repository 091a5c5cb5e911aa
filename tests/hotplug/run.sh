#!/bin/bash
# Several devices, hot-plug and surprise removal (issue 14), end to end
# through the user's commands: `vfio-apple run` with two simulated NVMe
# (dart=apple) in one x86_64 guest (Linux 6.1, apple_dma, TCG), then
# `attach`, `detach`, `sim vanish`, `sim replug` and `attach ID` while the
# guest works.  The guest (guest.sh) says what it saw on the console; the
# host checks that and `vfio-apple status --json`.
#
#   multi     both devices bind (nvme through apple_dma, each companion
#             bound), verified fio on both at once, each device's own DART
#             with 0 faults and its own companion's doorbells;
#   hotplug   attach a third device mid-run (vfa2, slot 2), verified I/O on
#             it, detach it while device A keeps doing verified I/O (detach
#             returns once the guest let go; the host held 0 DART mappings
#             for it then), attach again (vfa3), verified I/O;
#   surprise  pull device B (sim vanish) in the middle of its fio: run
#             unplugs its slot, the guest's fio fails with errors and the
#             disk goes, no hang or kernel warning, status shows B removed
#             with 0 live DART mappings; replug + `attach vfa1` brings it
#             back with verified I/O; A's background I/O never failed.
#
# Usage: tests/hotplug/run.sh [vfio-user|in-process]...   (default: both;
#        in-process needs a QEMU with vfio-apple-pci, else SKIPPED)
# Env:   VFA_BIN, VFA_CACHE, E2E_KEEP=1, QEMU_BIN (in-process QEMU)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../e2e/lib.sh"

VFA_CACHE=${VFA_CACHE:-/var/cache/vfio-apple}
modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(vfio-user in-process)
find_vfio_apple
provision_env --headers
tag=6_1
kernel_var=KERNEL_$tag modules_var=MODULES_$tag krel_var=KREL_$tag
KERNEL=${!kernel_var:-}
MODULES=${!modules_var:-}
[ -n "$KERNEL" ] && [ -n "$MODULES" ] || die "no provisioned kernel for $tag"
make_work
run_pid=""
trap 'hotplug_cleanup' EXIT
hotplug_cleanup() {
	local rc=$?
	if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then
		kill -TERM "$run_pid"
		wait "$run_pid" 2>/dev/null
	fi
	(exit $rc)
	cleanup
}

KO=$WORK/ko/${!krel_var}/apple_dma.ko
OUT=$WORK/ko "$REPO/guest/linux/build.sh" "${!krel_var}" >"$WORK/module-build.log" 2>&1
[ -f "$KO" ] || { cat "$WORK/module-build.log"; die "apple_dma does not build for ${!krel_var}"; }
cat "$E2E_DIR/guest/common.sh" "$HERE/guest.sh" >"$WORK/hotplug.workload.sh"
"$PROVISION/mkinitramfs.sh" -o "$WORK/hotplug.cpio.gz" -m "$MODULES" --load nvme --fio --ko "$KO" \
	--script "$WORK/hotplug.workload.sh" 2>&1 | sed 's/^/e2e: /'
[ "${PIPESTATUS[0]}" -eq 0 ] || die "mkinitramfs failed"

VFA() { "$VFA_BIN" "$@"; }
SOCK=$WORK/sock

# dev_field ID KEY: a field of device ID in `status --json` (KEY dotted).
dev_field() {
	"$VFA_BIN" status --json -s "$SOCK" 2>/dev/null | "$PYTHON" -c '
import json, sys
obj = json.load(sys.stdin)
for d in obj["devices"]:
    if d["id"] == sys.argv[1]:
        v = d
        for k in sys.argv[2].split("."):
            v = v[k]
        print(str(v).lower() if isinstance(v, bool) else v)
' "$1" "$2" 2>/dev/null
}
# wait_state ID STATE SECONDS
wait_state() {
	local i
	for i in $(seq $(($3 * 4))); do
		[ "$(dev_field "$1" state)" = "$2" ] && return 0
		sleep 0.25
	done
	return 1
}
# wait_dev_gone ID SECONDS: true once status no longer lists ID.
wait_dev_gone() {
	local i
	for i in $(seq $(($2 * 4))); do
		[ -z "$(dev_field "$1" id)" ] && return 0
		sleep 0.25
	done
	return 1
}
# json_of TEXT KEY: a field of a JSON line.
json_of() { "$PYTHON" -c 'import json,sys; v=json.loads(sys.argv[1]); print(v.get(sys.argv[2], ""))' "$1" "$2" 2>/dev/null; }

run_mode() {
	local mode=$1 mode_args=() extra=()
	CONSOLE=$WORK/$mode.console
	RUNLOG=$WORK/$mode.run.log
	rm -rf "$SOCK"
	: >"$CONSOLE"
	if [ "$mode" = in-process ]; then
		mode_args=(--in-process)
	fi
	cp "$VFA_CACHE/trixie/usr/share/qemu/qboot.rom" "$WORK/qboot.rom" || die "no qboot.rom in the trixie root"
	say "=== $mode: two devices, attach/detach, a pulled device (x86_64 Linux 6.1) ==="
	# qboot: no firmware NVMe probe (its DMA would fault in the DART).
	setpriv --pdeathsig TERM -- timeout -k 5 900 "$VFA_BIN" run "${mode_args[@]}" -s "$SOCK" --slots 3 \
		-d sim:nvme,size=256M,dart=apple -d sim:nvme,size=256M,dart=apple -- \
		-accel tcg -nodefaults -no-reboot -display none -smp 2 -bios "$WORK/qboot.rom" \
		-serial stdio -kernel "$KERNEL" -initrd "$WORK/hotplug.cpio.gz" \
		-append "console=ttyS0 $GUEST_CMDLINE" "${extra[@]}" </dev/null >"$CONSOLE" 2>"$RUNLOG" &
	run_pid=$!

	# ---- several devices
	if ! wait_console 'VFA-RESULT phase=multi-done' 300 "$run_pid"; then
		check "guest reached the end of the two-device phase" false
		show_run_context
		return
	fi
	local slots
	slots=$(result slots)
	check "both disks appeared (A at ${slots%%,*}, B at $(cut -d, -f2 <<<"$slots"))" eq "$(result multi)" seen
	check "run names the functions where the guest has them ($slots)" \
		eq "$(dev_field vfa0 function),$(dev_field vfa1 function)" "$(cut -d, -f1,2 <<<"$slots")"
	check "nvme bound to both functions" eq "$(result a_driver)/$(result b_driver)" nvme/nvme
	check "apple_dma bound each slot's companion" eq "$(result a_companion)/$(result b_companion)" apple_dma/apple_dma
	check "verified fio on A and B at the same time" eq "$(result fio_multi_a)/$(result fio_multi_b)" ok/ok
	local id
	for id in vfa0 vfa1; do
		check "$id: its own DART, 0 faults, its companion rang ($(dev_field $id status.companion.doorbells) doorbells)" \
			eval 'eq "$(dev_field '$id' status.dma.faults)" 0 && gt "$(dev_field '$id' status.companion.doorbells)" 0'
	done
	check "the two devices have two brokers (vfio-user) or two QOM devices" \
		eval '[ "$(dev_field vfa0 status.pid)" != "$(dev_field vfa1 status.pid)" ] || [ '$mode' = in-process ]'

	# ---- hot-plug
	wait_console 'VFA-RESULT phase=want-attach' 60 "$run_pid"
	local out
	out=$(VFA attach -s "$SOCK" --json sim:nvme,size=128M,dart=apple 2>&1)
	check "attach: vfa2 in slot 2 at the guest's ${slots##*,} ($out)" \
		eval '[ "$(json_of "$out" id)/$(json_of "$out" slot)/$(json_of "$out" function)" = "vfa2/2/${slots##*,}" ]'
	wait_console 'VFA-RESULT phase=want-detach' 240 "$run_pid"
	check "the guest saw the attached device, nvme and apple_dma bound" \
		eq "$(result attach)/$(result c_driver)/$(result c_companion)" seen/nvme/apple_dma
	check "verified fio on the attached device" eq "$(result fio_attach_c)" ok
	check "vfa2: 0 DART faults" eq "$(dev_field vfa2 status.dma.faults)" 0
	out=$(VFA detach -s "$SOCK" --json vfa2 2>&1)
	if [ "$mode" = vfio-user ]; then
		check "detach vfa2 returned once the guest let go, its broker holding 0 DART mappings and 0 companion ids ($out)" \
			eval '[ "$(json_of "$out" ok)" = True ] && [ "$(json_of "$out" dart_live_mappings)/$(json_of "$out" companion_live_ids)" = 0/0 ]'
	else
		# In-process the device and its DART go with QEMU's unplug.
		check "detach vfa2 returned once the guest let go and QEMU removed both functions ($out)" \
			eval '[ "$(json_of "$out" ok)" = True ] && [ "$(json_of "$out" state)" = free ]'
	fi
	check "status lists vfa0 and vfa1 only" eval '[ -z "$(dev_field vfa2 id)" ] && [ "$(dev_field vfa0 state)/$(dev_field vfa1 state)" = attached/attached ]'
	wait_console 'VFA-RESULT phase=want-reattach' 120 "$run_pid"
	check "the guest saw both functions of slot 2 go" eq "$(result detach)" gone
	out=$(VFA attach -s "$SOCK" --json sim:nvme,size=128M,dart=apple 2>&1)
	check "attach again: vfa3 in slot 2 ($out)" eval '[ "$(json_of "$out" id)/$(json_of "$out" slot)" = vfa3/2 ]'

	# ---- surprise removal
	wait_console 'VFA-RESULT phase=want-pull' 240 "$run_pid"
	check "verified fio on the re-attached device" eq "$(result reattach)/$(result fio_reattach_c)" seen/ok
	out=$(VFA sim vanish -s "$SOCK" vfa1 2>&1)
	check "sim vanish vfa1 ($out)" eval '[[ "$out" == *vanished* ]]'
	if [ "$mode" = vfio-user ]; then
		check "vfa1 goes to 'removed' (its slot unplugged, its broker kept)" wait_state vfa1 removed 180
		check "status shows vfa1 not present, with the reason, and 0 live DART mappings" \
			eval '[ "$(dev_field vfa1 present)" = false ] && [ -n "$(dev_field vfa1 removal)" ] && eq "$(dev_field vfa1 status.dma.live_mappings)" 0'
		check "run said vfa1 was removed and unplugged it" grep -q "vfa1 .*was removed from the host" "$RUNLOG"
	else
		check "vfa1 leaves the VM (the device asked QEMU to unplug it)" wait_dev_gone vfa1 180
		check "run said vfa1 was removed from the host" grep -q "vfa1 .*was removed from the host" "$RUNLOG"
	fi
	wait_console 'VFA-RESULT phase=want-replug' 240 "$run_pid"
	check "the guest saw B's function go" eq "$(result pulled)" gone
	check "the guest saw B's companion go" eq "$(result pulled_companion)" gone
	check "fio on the pulled disk ended with an error, not a hang (rc $(result pulled_fio_rc))" \
		eval '[ "$(result pulled_fio_rc)" != hung ] && [ "$(result pulled_fio_rc)" != 0 ]'
	check "the pulled disk was removed" eq "$(result pulled_disk)" removed
	if [ "$mode" = vfio-user ]; then
		out=$(VFA sim replug -s "$SOCK" vfa1 2>&1)
		check "sim replug vfa1 ($out)" eval '[[ "$out" == *"plugged back"* ]]'
		out=$(VFA attach -s "$SOCK" --json vfa1 2>&1)
		check "attach vfa1 brings the same device back into slot 1 ($out)" \
			eval '[ "$(json_of "$out" id)/$(json_of "$out" slot)" = vfa1/1 ]'
	else
		out=$(VFA attach -s "$SOCK" --json sim:nvme,size=256M,dart=apple 2>&1)
		check "attach brings a device back into slot 1 ($out)" eval '[ "$(json_of "$out" slot)" = 1 ]'
	fi
	# (counters now: once the guest is done it powers off and QEMU exits)
	check "vfa0, busy all along: still 0 DART faults" eq "$(dev_field vfa0 status.dma.faults)" 0
	wait_console 'VFA-RESULT phase=done' 300 "$run_pid"
	check "verified fio on the plugged-back device" eq "$(result replug)/$(result fio_replug_b)" seen/ok
	check "device A's background verified I/O never failed ($(result bg_a_rounds) rounds)" \
		eval 'gt "$(result bg_a_rounds)" 0 && eq "$(result bg_a_failed)" none'
	check "no kernel warning, oops or hung task in the guest" eq "$(result kernel_warnings)" 0
	wait "$run_pid"
	local rc=$?
	run_pid=""
	check "the guest's workload exited 0" eq "$(result rc)" 0
	check "run exited 0 after the guest powered off ($rc)" eq "$rc" 0
	check "no broker left running" eval '! pgrep -f "vfio-apple serve .*$SOCK" >/dev/null'
	check "no sanitizer report in run's log" eval '! grep -qE "ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:" "$RUNLOG"'
	[ $e2e_fail -eq 0 ] || show_run_context
}

show_run_context() {
	echo "---- last console lines ($CONSOLE) ----"
	tail -n 60 "$CONSOLE" | tr -d '\r'
	echo "---- run's log ($RUNLOG) ----"
	tail -n 40 "$RUNLOG"
	echo "----"
}

for mode in "${modes[@]}"; do
	case $mode in
	vfio-user) run_mode vfio-user ;;
	in-process)
		# The QEMU `run --in-process` would pick: $QEMU_BIN, the cache, PATH.
		ipq=""
		for cand in "${QEMU_BIN:-}" "$VFA_CACHE/qemu-inprocess/bin/qemu-system-x86_64" \
			"$(command -v qemu-system-x86_64 2>/dev/null)"; do
			[ -n "$cand" ] && [ -x "$cand" ] || continue
			if "$cand" -device help 2>/dev/null | grep -q 'name "vfio-apple-pci"'; then
				ipq=$cand
				break
			fi
		done
		if [ -z "$ipq" ]; then
			echo "hotplug in-process: SKIPPED (no QEMU with vfio-apple-pci: build one as docs/qemu.md says and install it under $VFA_CACHE/qemu-inprocess, or set QEMU_BIN)"
			continue
		fi
		QEMU_BIN=$ipq run_mode in-process
		;;
	*) die "unknown mode '$mode' (vfio-user, in-process)" ;;
	esac
done
echo "hotplug: $e2e_pass passed, $e2e_fail failed"
[ $e2e_fail -eq 0 ]
