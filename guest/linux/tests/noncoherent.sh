# Guest workload (prepended by tests/e2e/guest/common.sh), arm64 virt with a
# device tree whose PCIe host bridge says dma-noncoherent: the managed
# function is not cache-coherent, and apple_dma, which cannot do the cache
# maintenance (arch_sync_dma_* is not exported), must refuse it, saying
# why, rather than corrupt data silently.
list_pci >/dev/null
result dt_noncoherent="$([ -e /proc/device-tree/pcie@10000000/dma-noncoherent ] && echo yes || echo no)"
modload apple_dma
result companion_driver="$(driver_of 0000:00:06.0)"
VFA_PARAMS_nvme_core="admin_timeout=5 io_timeout=5" modload nvme
sleep 3
result refusal="$(dmesg | grep -c 'refusing 0000:00:05.0: it is not DMA-coherent')"
dmesg | grep -i -E 'apple_dma|coherent' | tail -n 10
