# Guest workload (prepended by tests/e2e/guest/common.sh): the VM has a
# vIOMMU, so the managed function's DMA would use the vIOMMU's addresses:
# apple_dma must refuse to bind, saying why, and change nothing.
list_pci >/dev/null
result iommu_groups="$(ls /sys/kernel/iommu_groups 2>/dev/null | wc -l)"
modload apple_dma
result companion_driver="$(driver_of 0000:00:06.0)"
result refusal="$(dmesg | grep -c 'guest IOMMU')"
dmesg | grep -i -E 'apple_dma|DMAR|iommu' | tail -n 10
