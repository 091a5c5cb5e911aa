# The VMM dies mid-I/O: apple_dma and nvme bound, fio running in the
# background when the host SIGKILLs QEMU on "VFA-RESULT fio=running".
if ! modload apple_dma; then
	result apple_dma=failed
	exit 1
fi
VFA_PARAMS_nvme_core="admin_timeout=30 io_timeout=60" modload nvme
wait_for /dev/nvme0n1 90 || { result nvme=absent; exit 1; }
result nvme=bound driver="$(driver_of 0000:00:05.0)"
fio --name=crash --filename=/dev/nvme0n1 --direct=1 --ioengine=psync --rw=randrw \
	--bsrange=4k-1m --time_based --runtime=300 --eta=never --output=/tmp/crash.out &
sleep 3
result fio=running
wait
result fio=ended
