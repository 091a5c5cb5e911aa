# A guest driver written for the reference (tests/e2e/refguest/ref_guest.c)
# against the companion at 00:06.0 (non-posted writes: must pass) and, when
# the host attached one, a second companion at 00:07.0 whose writes QEMU
# posts (must fail).  The module runs its batches at probe and logs one
# "VFA-REFGUEST key=value..." line per companion; they become results here.
list_pci
if modload ref_guest; then
	result ref_guest=loaded companion_driver="$(driver_of 0000:00:06.0)"
else
	result ref_guest=failed
fi
dmesg | grep -a 'VFA-REFGUEST' | sed 's/.*VFA-REFGUEST //' | while read -r line; do
	# shellcheck disable=SC2086 # key=value words
	result $line
done
# The first failed checks of each companion, for the host's log.
dmesg | grep -a 'ref_guest' | grep -av 'VFA-REFGUEST' | tail -n 20
rmmod ref_guest && result ref_guest_unload=ok
