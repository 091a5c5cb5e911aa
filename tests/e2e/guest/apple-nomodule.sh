# Apple DART mode without the guest module: the driver's DMA goes to
# guest-physical addresses the DART never registered.  The probe must fail
# cleanly (timeouts, controller reset, removal); the guest must not hang.
list_pci
VFA_PARAMS_nvme_core="admin_timeout=5 io_timeout=5 max_retries=1" modload nvme
n=0
state=waiting
while [ $n -lt 90 ]; do
	if [ -e /dev/nvme0n1 ]; then
		state=namespace
		break
	fi
	if dmesg | grep -qiE 'nvme .*(probe failure|failed|not ready|disabling|removing)'; then
		state=probe_failed
		sleep 2
		break
	fi
	sleep 1
	n=$((n + 1))
done
result nvme_state=$state driver="$(driver_of 0000:00:05.0)" waited_s=$n
if [ "$state" = namespace ]; then
	# Reads must fail, not return garbage silently.
	if dd if=/dev/nvme0n1 of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null; then
		result read=succeeded
	else
		result read=failed
	fi
fi
dmesg | grep -i nvme | tail -n 15
exit 0
