#!/bin/bash
# The in-process devices end to end: a QEMU that has vfio-apple-pci (the
# project's qemu/ devices, docs/qemu.md) boots real Debian guests under TCG
# with the device at 00:05.0 and its auto-created apple-dma-pci companion at
# 00:06.0.  No broker: the counters are the devices' QOM properties, read
# over QMP with `vfio-apple status --qmp --json`; QEMU runs with
# -no-shutdown so that the last ones are read after the guest powered off.
# The guest side is tests/e2e/guest/ (unchanged) plus guest/reset.sh.
#
#   identity   dart=identity: both functions enumerate with their IDs, the
#              unmodified nvme driver binds, a pattern and fio verify, MSI-X
#              vectors count in the guest and in irqs-delivered, 0 faults;
#   apple      dart=apple WITHOUT apple_dma: the driver gets no working disk,
#              dart-faults counts the faults, QEMU keeps answering QMP;
#   module     dart=apple WITH apple_dma: 256 MiB of verified mixed I/O,
#              doorbells counted, 0 DART faults, and 0 live mappings (DART
#              and companion ids) after the guest powered off;
#   reset      dart=apple with apple_dma, posted-writes=on: a function-level
#              reset of 00:05.0 (sysfs reset) while fio writes; the reset
#              reaches the backend
#              (resets counter), the I/O verifies, later I/O works, 0 faults,
#              0 live mappings after power-off;
#   dext       host=sim-dext:nvme: the darwin backend over the dext test
#              model, apple_dma bound, a pattern verifies, unloading gives
#              every mapping back.
#
# Usage: tests/inprocess/run.sh [--arch x86|arm64]... [scenario...]
#        (default: both architectures, every scenario)
# QEMU:  $QEMU_BIN (x86_64, q35, Debian 6.1 guest) and $QEMU_BIN_ARM (aarch64,
#        virt, Debian 6.12 arm64 guest); default
#        $VFA_CACHE/qemu-inprocess/bin/qemu-system-{x86_64,aarch64}, then PATH.
#        Without any, one line "inprocess: SKIPPED (...)" and exit 0.
# Env:   VFA_BIN (default ./build/cli/vfio-apple), VFA_CACHE, E2E_KEEP=1.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VFA_CACHE=${VFA_CACHE:-/var/cache/vfio-apple}

# ---- which QEMUs: before anything else, so that a skip is one line ----------
# find_qemu SYSTEM ENVVAR: the first candidate whose -device help lists
# vfio-apple-pci; an explicitly named one (ENVVAR) that lacks it is an error.
find_qemu() {
	local system=$1 var=$2 cand
	if [ -n "${!var:-}" ]; then
		if "${!var}" -device help 2>/dev/null | grep -q 'name "vfio-apple-pci"'; then
			echo "${!var}"
			return 0
		fi
		echo "inprocess: $var=${!var} has no vfio-apple-pci (its -device help does not list it)" >&2
		return 2
	fi
	for cand in "$VFA_CACHE/qemu-inprocess/bin/$system" "$(command -v "$system" 2>/dev/null)"; do
		[ -n "$cand" ] && [ -x "$cand" ] || continue
		if "$cand" -device help 2>/dev/null | grep -q 'name "vfio-apple-pci"'; then
			echo "$cand"
			return 0
		fi
	done
	return 1
}

arches=()
scenarios=()
while [ $# -gt 0 ]; do
	case $1 in
	--arch)
		[ $# -ge 2 ] || { echo "inprocess: --arch needs x86 or arm64" >&2; exit 2; }
		case $2 in x86 | arm64) arches+=("$2") ;; *) echo "inprocess: --arch x86 or arm64" >&2; exit 2 ;; esac
		shift 2
		;;
	identity | apple | module | reset | dext) scenarios+=("$1"); shift ;;
	*) echo "inprocess: unknown argument '$1' (--arch x86|arm64, identity, apple, module, reset, dext)" >&2; exit 2 ;;
	esac
done
[ ${#arches[@]} -gt 0 ] || arches=(x86 arm64)
[ ${#scenarios[@]} -gt 0 ] || scenarios=(identity apple module reset dext)

QEMU_X86_IP="" QEMU_ARM_IP=""
missing=()
for a in "${arches[@]}"; do
	if [ "$a" = x86 ]; then
		QEMU_X86_IP=$(find_qemu qemu-system-x86_64 QEMU_BIN)
		rc=$?
		[ $rc = 2 ] && exit 1
		[ -n "$QEMU_X86_IP" ] || missing+=(x86)
	else
		QEMU_ARM_IP=$(find_qemu qemu-system-aarch64 QEMU_BIN_ARM)
		rc=$?
		[ $rc = 2 ] && exit 1
		[ -n "$QEMU_ARM_IP" ] || missing+=(arm64)
	fi
done
HOWTO="build QEMU >= 10.2 with the project's devices as docs/qemu.md says and install it under $VFA_CACHE/qemu-inprocess (bin/qemu-system-x86_64, bin/qemu-system-aarch64), or set QEMU_BIN / QEMU_BIN_ARM"
if [ ${#missing[@]} -eq ${#arches[@]} ]; then
	echo "inprocess: SKIPPED (no QEMU with vfio-apple-pci: $HOWTO)"
	exit 0
fi

. "$HERE/../e2e/lib.sh"
E2E_GUEST=$HERE/../e2e/guest
# This stage's own prefix on the shared helpers' lines.
say() { echo "inprocess: $*"; }
die() {
	echo "inprocess: $*" >&2
	exit 1
}
check() {
	local what=$1
	shift
	if "$@"; then
		echo "inprocess:   ok    $what"
		e2e_pass=$((e2e_pass + 1))
	else
		echo "inprocess:   FAIL  $what"
		e2e_fail=$((e2e_fail + 1))
	fi
}
for a in "${missing[@]}"; do
	say "NOT RUN on $a: no qemu-system-$([ "$a" = x86 ] && echo x86_64 || echo aarch64) with vfio-apple-pci ($HOWTO)"
	e2e_fail=$((e2e_fail + 1))
done

find_vfio_apple
want_arm=()
[ -n "$QEMU_ARM_IP" ] && want_arm=(--arm64)
provision_env --headers "${want_arm[@]}"
make_work
BROKER_LOG=/dev/null # no broker here (lib.sh's show_context prints it)

# ---- one guest in the in-process QEMU ---------------------------------------
# run_ip_guest NAME HOST INITRD LIMIT_S: boots $ARCH's kernel with
# vfio-apple-pci,host=HOST; the console goes to $WORK/NAME.console, the
# first counters QMP gave to $WORK/NAME.first, the latest to $WORK/NAME.status,
# those after the guest powered off to $WORK/NAME.final.  Sets GUEST_RC and
# GUEST_SECONDS.
run_ip_guest() {
	local name=$1 host=$2 initrd=$3 limit=$4
	local qmp=$WORK/$name.qmp t0=$SECONDS qemu args
	# IP_DEVICE_EXTRA: more vfio-apple-pci properties (PROP=VALUE,...)
	local dev="vfio-apple-pci,id=vfa0,host=${host//,/,,},addr=0x5,companion-addr=0x6${IP_DEVICE_EXTRA:+,$IP_DEVICE_EXTRA}"
	CONSOLE=$WORK/$name.console
	if [ "$ARCH" = arm64 ]; then
		qemu=$QEMU_ARM_IP
		args=(-machine virt -cpu max -append "console=ttyAMA0 $GUEST_CMDLINE")
	else
		qemu=$QEMU_X86_IP
		# qboot: no firmware NVMe probe before the kernel
		args=(-machine q35 -bios qboot.rom -append "console=ttyS0 $GUEST_CMDLINE")
	fi
	rm -f "$WORK/$name.status" "$WORK/$name.final" "$WORK/$name.first"
	setpriv --pdeathsig TERM -- timeout -k 5 "$limit" "$qemu" -accel tcg -nodefaults -no-reboot -no-shutdown \
		-display none -m 1G -smp 1 -serial stdio -kernel "$KERNEL" -initrd "$initrd" "${args[@]}" \
		-device "$dev" -qmp "unix:$qmp,server=on,wait=off" </dev/null >"$CONSOLE" 2>&1 &
	qemu_pid=$!
	while kill -0 "$qemu_pid" 2>/dev/null; do
		sleep 1
		"$VFA_BIN" status --qmp "$qmp" --json --timeout 3000 >"$WORK/$name.status.new" 2>/dev/null || continue
		mv "$WORK/$name.status.new" "$WORK/$name.status"
		# the first counters, before the guest's kernel did anything
		[ -f "$WORK/$name.first" ] || cp "$WORK/$name.status" "$WORK/$name.first"
		case $(json_get "$WORK/$name.status" run_state) in
		shutdown | guest-panicked)
			cp "$WORK/$name.status" "$WORK/$name.final"
			kill -TERM "$qemu_pid" 2>/dev/null
			break
			;;
		esac
	done
	{ wait "$qemu_pid"; } 2>/dev/null
	GUEST_RC=$?
	qemu_pid=""
	GUEST_SECONDS=$((SECONDS - t0))
	[ -f "$WORK/$name.final" ] || say "guest $name: QEMU ended (exit $GUEST_RC) without a powered-off state (limit ${limit} s?)"
	say "guest $name ($ARCH): $GUEST_SECONDS s; results:"
	grep -a 'VFA-RESULT' "$CONSOLE" | grep -av 'VFA-RESULT ad_' | tr -d '\r' | sed 's/^/inprocess:     /'
	return 0
}

# final FIELD: a counter read after the guest powered off ("" if none).
final() { json_get "$WORK/$NAME.final" "$1"; }

# initrd NAME SCRIPT... [-- mkinitramfs options]: the scripts concatenated
# after tests/e2e/guest/common.sh.
initrd() {
	local name=$1 parts=()
	shift
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		parts+=("$1")
		shift
	done
	[ "${1:-}" = -- ] && shift
	cat "$E2E_GUEST/common.sh" "${parts[@]}" >"$WORK/$ARCH.$name.sh"
	"$PROVISION/mkinitramfs.sh" -o "$WORK/$ARCH.$name.cpio.gz" -m "$MODULES" --load nvme \
		--script "$WORK/$ARCH.$name.sh" --arch "$MKARCH" "$@" >"$WORK/$ARCH.$name.mkinitramfs.log" 2>&1 ||
		{ cat "$WORK/$ARCH.$name.mkinitramfs.log"; die "mkinitramfs failed for $name"; }
	INITRD=$WORK/$ARCH.$name.cpio.gz
}

# apple_dma for this architecture's kernel, once.
module() {
	local krel_var=KREL_$TAG
	KO=$WORK/ko/${!krel_var}/apple_dma.ko
	[ -f "$KO" ] && return 0
	OUT=$WORK/ko "$REPO/guest/linux/build.sh" "${!krel_var}" >"$WORK/$ARCH.module-build.log" 2>&1
	[ -f "$KO" ] || { cat "$WORK/$ARCH.module-build.log"; check "apple_dma builds for ${!krel_var}" false; return 1; }
}

enumeration() {
	check "guest sees vfio-apple-pci's function at 00:05.0 (1b36:00f0, class 0x010802)" \
		grep -aq 'VFA-RESULT pci=0000:00:05.0 id=1b36:00f0 class=0x010802' "$CONSOLE"
	check "guest sees the auto-created apple-dma-pci at 00:06.0 (1b36:0015, class 0x088000)" \
		grep -aq 'VFA-RESULT pci=0000:00:06.0 id=1b36:0015 class=0x088000' "$CONSOLE"
	check "the guest ran its workload to the end" grep -aq 'VFA-RESULT init=done' "$CONSOLE"
}

powered_off() {
	check "counters read over QMP after the guest powered off (QEMU state $(final run_state))" \
		test -f "$WORK/$NAME.final"
}

no_mapping_left() {
	check "no mapping left after power-off (DART $(final dma.live_mappings), companion ids $(final companion.live_ids))" \
		eq "$(final dma.live_mappings)/$(final companion.live_ids)" 0/0
}

context() {
	[ $e2e_fail -eq $fails_before ] && return 0
	echo "---- last console lines ($CONSOLE) ----"
	tail -n 40 "$CONSOLE" | tr -d '\r'
	echo "---- last counters ----"
	cat "$WORK/$NAME.status" 2>/dev/null
	echo "----"
}

s_identity() {
	NAME=$ARCH-identity
	say "=== $ARCH identity: dart=identity, unmodified nvme driver, verified I/O ==="
	initrd identity "$E2E_GUEST/identity.sh" -- --fio
	run_ip_guest "$NAME" "sim:nvme,size=256M,dart=identity" "$INITRD" 300
	powered_off
	enumeration
	check "nvme driver bound to 00:05.0" eq "$(result driver)" nvme
	check "the guest exited its workload with 0" eq "$(result rc)" 0
	check "pattern written and read back equal" eq "$(result pattern)" match
	check "fio verify passed with 0 errors" eq "$(result fio_identity)/$(result errors)" ok/0
	check "guest nvme MSI-X vectors counted interrupts ($(result nvme_irqs))" gt "$(result nvme_irqs)" 0
	local delivered
	delivered=$(final interrupts.delivered)
	check "irqs-delivered ($delivered) at least the $(result nvme_irqs) the guest counted" \
		eval 'gt "$delivered" 0 && [ "$delivered" -ge "$(result nvme_irqs)" ]'
	check "no DART faults in identity mode" eq "$(final dma.faults)" 0
}

s_apple() {
	NAME=$ARCH-apple
	say "=== $ARCH apple: dart=apple without apple_dma, DMA must fail cleanly ==="
	initrd apple "$E2E_GUEST/apple-nomodule.sh"
	run_ip_guest "$NAME" "sim:nvme,size=256M,dart=apple" "$INITRD" 300
	powered_off
	enumeration
	check "the guest's driver did not get a working disk ($(result nvme_state))" \
		eval '[ "$(result nvme_state)" != namespace ] || [ "$(result read)" = failed ]'
	check "dart-faults counted the driver's DMA ($(final dma.faults))" gt "$(final dma.faults)" 0
}

s_module() {
	NAME=$ARCH-module
	say "=== $ARCH module: dart=apple with apple_dma, 256 MiB verified mixed I/O ==="
	module || return
	initrd module "$E2E_GUEST/apple-module.sh" -- --fio --ko "$KO"
	run_ip_guest "$NAME" "sim:nvme,size=512M,dart=apple" "$INITRD" 900
	powered_off
	enumeration
	check "apple_dma loaded and bound the auto-created companion" \
		eq "$(result apple_dma)/$(result companion_driver)" loaded/apple_dma
	check "apple_dma manages 00:05.0 (the companion's MANAGED_BDF)" eq "$(result ad_managed)" 0000:00:05.0
	check "nvme driver bound to 00:05.0 through the module" eq "$(result driver)" nvme
	check "the guest exited its workload with 0" eq "$(result rc)" 0
	check "pattern written and read back equal" eq "$(result pattern)" match
	check "fio: 256 MiB mixed I/O verified, 0 errors ($(result fio_seconds) s)" \
		eq "$(result fio_mixed)/$(result errors)" ok/0
	check "module rang doorbells ($(result ad_doorbells)) without errors" \
		eval 'gt "$(result ad_doorbells)" 0 && eq "$(result ad_doorbell_errors)" 0'
	check "companion counted the doorbells ($(final companion.doorbells) >= $(result ad_doorbells))" \
		eval 'gt "$(final companion.doorbells)" 0 && [ "$(final companion.doorbells)" -ge "$(result ad_doorbells)" ]'
	check "DART peak use counted ($(final dma.peak_mappings) mappings, $(final dma.peak_bytes) bytes)" \
		gt "$(final dma.peak_mappings)" 0
	check "irqs-delivered ($(final interrupts.delivered)) at least the $(result nvme_irqs) the guest counted" \
		eval '[ "$(final interrupts.delivered)" -ge "$(result nvme_irqs)" ] && gt "$(result nvme_irqs)" 0'
	check "zero DART faults" eq "$(final dma.faults)" 0
	check "unloading apple_dma gave every mapping back (companion LIVE_MAPPINGS $(result companion_live_before) -> $(result companion_live_mappings))" \
		eval 'gt "$(result companion_live_before)" 0 && eq "$(result unload)/$(result companion_live_mappings)" ok/0'
	no_mapping_left
}

s_reset() {
	NAME=$ARCH-reset
	say "=== $ARCH reset: function-level reset of 00:05.0 in the middle of verified I/O ==="
	module || return
	initrd reset "$HERE/guest/reset.sh" -- --fio --ko "$KO"
	# Posted trapped-BAR writes here (the other scenarios run the default,
	# synchronous ones): the reset must drain them in order.
	IP_DEVICE_EXTRA=posted-writes=on run_ip_guest "$NAME" "sim:nvme,size=256M,dart=apple" "$INITRD" 600
	powered_off
	check "nvme bound through apple_dma" eq "$(result driver)" nvme
	check "the reset was issued while fio was writing ($(result written_before_reset) bytes out)" \
		eq "$(result reset)/$(result fio_running_at_reset)/$(result fio_running_after_reset)" ok/yes/yes
	local first
	first=$(json_get "$WORK/$NAME.first" device.resets)
	check "the guest's reset reached the backend (resets ${first:-?} at start -> $(final device.resets))" \
		eval '[ -n "$first" ] && [ "$(final device.resets)" -eq $((first + 1)) ]'
	check "fio across the reset verified, 0 errors" eq "$(result fio_reset)/$(result errors)" ok/0
	check "the controller works after the reset (pattern)" eq "$(result pattern)" match
	check "nvme still bound after the reset" eq "$(result driver_after)" nvme
	check "the guest exited its workload with 0" eq "$(result rc)" 0
	check "zero DART faults" eq "$(final dma.faults)" 0
	check "unloading gave every mapping back ($(result companion_live_before) -> $(result companion_live_mappings))" \
		eq "$(result unload)/$(result companion_live_mappings)" ok/0
	no_mapping_left
}

s_dext() {
	NAME=$ARCH-dext
	say "=== $ARCH dext: host=sim-dext:nvme (darwin backend over the dext test model), apple_dma ==="
	module || return
	printf 'QUICK=1\n' >"$WORK/quick.sh"
	initrd dext "$WORK/quick.sh" "$E2E_GUEST/apple-module.sh" -- --ko "$KO"
	run_ip_guest "$NAME" "sim-dext:nvme,size=256M" "$INITRD" 300
	powered_off
	enumeration
	check "apple_dma bound the companion, nvme bound through it" \
		eq "$(result apple_dma)/$(result companion_driver)/$(result driver)" loaded/apple_dma/nvme
	check "pattern written and read back equal (16 MiB through the darwin backend)" eq "$(result pattern)" match
	check "the guest exited its workload with 0" eq "$(result rc)" 0
	check "companion counted doorbells ($(final companion.doorbells))" gt "$(final companion.doorbells)" 0
	check "unloading gave every mapping back ($(result companion_live_before) -> $(result companion_live_mappings))" \
		eval 'gt "$(result companion_live_before)" 0 && eq "$(result unload)/$(result companion_live_mappings)" ok/0'
	no_mapping_left
}

for ARCH in "${arches[@]}"; do
	if [ "$ARCH" = x86 ]; then
		[ -n "$QEMU_X86_IP" ] || continue
		TAG=6_1 MKARCH=amd64
	else
		[ -n "$QEMU_ARM_IP" ] || continue
		TAG=6_12_ARM64 MKARCH=arm64
	fi
	kernel_var=KERNEL_$TAG modules_var=MODULES_$TAG
	KERNEL=${!kernel_var:-}
	MODULES=${!modules_var:-}
	[ -n "$KERNEL" ] && [ -n "$MODULES" ] || die "no provisioned kernel for $TAG"
	say "$ARCH: $("$([ "$ARCH" = x86 ] && echo "$QEMU_X86_IP" || echo "$QEMU_ARM_IP")" --version | head -n1) ($([ "$ARCH" = x86 ] && echo "$QEMU_X86_IP" || echo "$QEMU_ARM_IP"))"
	for s in "${scenarios[@]}"; do
		fails_before=$e2e_fail
		"s_$s"
		context
	done
done
say "${arches[*]}: $e2e_pass checks passed, $e2e_fail failed"
[ $e2e_fail -eq 0 ]
