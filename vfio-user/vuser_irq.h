/* SPDX-License-Identifier: MIT */
/*
 * The interrupts of one vfio-user client: per IRQ index (VFIO_PCI_*_IRQ_
 * INDEX) and vector, the client's eventfd, its mask and a pending latch.
 * The server (vfu_server.c) decodes DEVICE_SET_IRQS and tells the device
 * (irqs_changed); this only keeps the state and signals.
 */
#ifndef VFA_VUSER_IRQ_H
#define VFA_VUSER_IRQ_H

#include <stdbool.h>
#include <stdint.h>

#include "vfu_protocol.h"

struct vuser_irqs;

struct vuser_irqs *vuser_irqs_create(void);
void vuser_irqs_destroy(struct vuser_irqs *q);
/* Close every eventfd and forget every vector (the client left). */
void vuser_irqs_clear(struct vuser_irqs *q);

/*
 * Apply a checked-only-for-framing DEVICE_SET_IRQS: is from the message,
 * bools its DATA_BOOL bytes (nbools of them), fds the fds sent with it (a
 * taken fd is set to -1 in the array), ndev the device's vector count for
 * is->index.  0 or -errno (nothing applied then); *changed when the
 * device must be told (irqs_changed).
 */
int vuser_irqs_set(struct vuser_irqs *q, const struct vfu_irq_set *is, const uint8_t *bools, uint32_t nbools,
		   int *fds, unsigned nfds, unsigned ndev, bool *changed);

bool vuser_irq_assigned(const struct vuser_irqs *q, unsigned index, unsigned vector);
bool vuser_irq_enabled(const struct vuser_irqs *q, unsigned index, unsigned vector);
/* Signal (or latch when masked): 0, -ENOENT (no eventfd), -EINVAL, -errno. */
int vuser_irq_trigger(struct vuser_irqs *q, unsigned index, unsigned vector);

/* eventfd writes, and triggers latched on masked vectors, since create. */
void vuser_irqs_counts(const struct vuser_irqs *q, uint64_t *triggered, uint64_t *latched);

#endif
