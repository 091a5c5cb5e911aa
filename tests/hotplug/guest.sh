# Guest side of tests/hotplug/run.sh (tests/e2e/guest/common.sh is prepended:
# disk_of, wait_disk, wait_gone, driver_of).
# Each "VFA-RESULT phase=want-X" line asks the host to act (attach, detach,
# pull, replug); the guest then waits, bounded, for what that act must show.
#
# Slots: run's root ports are 00:02.S; slot S's function is BB:00.1 and its
# companion BB:00.0, BB being the bus the firmware or kernel gave the port
# (not always S + 1: qboot numbers them in its own order).  vfa0 is in
# slot 0 (A), vfa1 in slot 1 (B); devices attached later take slot 2 (C).
slot_fn() {
	b=$(ls /sys/bus/pci/devices/0000:00:02."$1"/pci_bus/ 2>/dev/null | head -n1)
	[ -n "$b" ] && echo "$b:00.1"
}
A=$(slot_fn 0)
B=$(slot_fn 1)
C=$(slot_fn 2)
result slots="$A,$B,$C"
rc=0
list_pci
if modload apple_dma; then
	result apple_dma=loaded
else
	result apple_dma=failed
	exit 1
fi
VFA_PARAMS_nvme_core="admin_timeout=15 io_timeout=15" modload nvme

# fio_verify NAME DISK SIZE: random writes of 4-128 KiB, all read back with
# crc32c; one result line.
fio_verify() {
	run_fio_on "$2" "$1" --rw=randwrite --bsrange=4k-128k --size="$3"
}

# disk_back KEY ADDR NAME: the disk of ADDR comes back (KEY=seen, else
# KEY=absent, within 120 s) and verifies 16 MiB of writes (fio_verify NAME).
disk_back() {
	if d=$(wait_disk "$2" 120); then
		result "$1"=seen
		fio_verify "$3" "$d" 16M
	else
		result "$1"=absent
		return 1
	fi
}

# ---- 1. several devices: both disks, verified I/O on both at once --------
DA=$(wait_disk "$A" 120) && DB=$(wait_disk "$B" 60)
if [ -z "$DA" ] || [ -z "$DB" ]; then
	result multi=absent a="$DA" b="$DB"
	dmesg | grep -iE 'nvme|apple|pci' | tail -n 40
	exit 1
fi
result multi=seen a_disk="$DA" b_disk="$DB" a_driver="$(driver_of "$A")" b_driver="$(driver_of "$B")" \
	a_companion="$(driver_of "${A%.1}.0")" b_companion="$(driver_of "${B%.1}.0")"
fio_verify multi_a "$DA" 24M &
pa=$!
fio_verify multi_b "$DB" 24M &
pb=$!
wait $pa || rc=1
wait $pb || rc=1
result phase=multi-done

# Device A keeps doing verified I/O in the background until the end.
(
	i=0
	while [ ! -e /tmp/stop-a ]; do
		fio --name=bg$i --filename="$DA" --direct=1 --ioengine=psync --rw=randwrite --bsrange=4k-64k \
			--size=8M --offset=64M --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_dump=0 \
			--eta=never --output=/tmp/fio-bg.out || { echo $i >/tmp/a-failed; tail -n 20 /tmp/fio-bg.out; }
		i=$((i + 1))
	done
	echo $i >/tmp/a-rounds
) &
pbg=$!

# ---- 2. hot-plug: attach, I/O, detach while A works, attach again --------
result phase=want-attach
if DC=$(wait_disk "$C" 120); then
	result attach=seen c_disk="$DC" c_driver="$(driver_of "$C")" c_companion="$(driver_of "${C%.1}.0")"
	fio_verify attach_c "$DC" 16M || rc=1
else
	result attach=absent
	rc=1
fi
result phase=want-detach
if wait_gone /sys/bus/pci/devices/"$C" 120 && wait_gone "/sys/bus/pci/devices/${C%.1}.0" 10; then
	result detach=gone
else
	result detach=stuck
	rc=1
fi
result phase=want-reattach
disk_back reattach "$C" reattach_c || rc=1

# ---- 3. surprise removal: B pulled in the middle of its writes -----------
rm -f /tmp/pulled-rc
(
	fio --name=pulled --filename="$DB" --direct=1 --ioengine=psync --rw=randwrite --bsrange=4k-128k \
		--size=200M --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_dump=0 --eta=never \
		--output=/tmp/fio-pulled.out
	echo $? >/tmp/pulled-rc
) &
sleep 3
result phase=want-pull
t0=$(date +%s)
if wait_gone /sys/bus/pci/devices/"$B" 180; then
	result pulled=gone pulled_seconds=$(($(date +%s) - t0))
else
	result pulled=stuck
	rc=1
fi
wait_gone "/sys/bus/pci/devices/${B%.1}.0" 30 && result pulled_companion=gone
# fio on the pulled disk ends with errors, bounded.
wait_for /tmp/pulled-rc 120
result pulled_fio_rc="$(cat /tmp/pulled-rc 2>/dev/null || echo hung)"
grep -m3 -iE 'err=|error' /tmp/fio-pulled.out
[ -b "$DB" ] && result pulled_disk=still-there || result pulled_disk=removed
result phase=want-replug
disk_back replug "$B" replug_b || rc=1

# ---- the end: A's background I/O, the kernel's log --------------------------
touch /tmp/stop-a
wait $pbg
result bg_a_rounds="$(cat /tmp/a-rounds 2>/dev/null || echo 0)" bg_a_failed="$(cat /tmp/a-failed 2>/dev/null || echo none)"
[ -e /tmp/a-failed ] && rc=1
warnings=$(dmesg | grep -cE 'BUG:|WARNING:|Oops|general protection|hung_task|Call Trace')
result kernel_warnings="$warnings"
dmesg | grep -E 'BUG:|WARNING:|Oops|Call Trace' -A5 | head -n 40
dmesg | grep -iE 'nvme|apple_dma|pciehp|acpiphp' | tail -n 40
result phase=done
exit $rc
