// SPDX-License-Identifier: MIT
/* The interrupts of a vfio-user client (vuser_irq.h). */
#include "vuser_irq.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

struct vector {
	int fd; /* eventfd from the client, -1 when none */
	bool masked;
	bool pending; /* triggered while masked */
};

struct index_table {
	unsigned count;
	struct vector *v;
};

struct vuser_irqs {
	struct index_table idx[VFU_PCI_NUM_IRQS];
	uint64_t triggered, latched;
};

struct vuser_irqs *vuser_irqs_create(void)
{
	return calloc(1, sizeof(struct vuser_irqs));
}

static void close_index(struct vuser_irqs *q, unsigned index)
{
	struct index_table *t = &q->idx[index];

	for (unsigned i = 0; i < t->count; i++) {
		if (t->v[i].fd >= 0)
			close(t->v[i].fd);
		t->v[i] = (struct vector){ .fd = -1 };
	}
}

void vuser_irqs_clear(struct vuser_irqs *q)
{
	for (unsigned i = 0; i < VFU_PCI_NUM_IRQS; i++) {
		close_index(q, i);
		free(q->idx[i].v);
		q->idx[i] = (struct index_table){ 0 };
	}
}

void vuser_irqs_destroy(struct vuser_irqs *q)
{
	if (!q)
		return;
	vuser_irqs_clear(q);
	free(q);
}

/* The vector table of index, sized to the device's count. */
static struct index_table *table(struct vuser_irqs *q, unsigned index, unsigned count)
{
	struct index_table *t = &q->idx[index];

	if (t->count < count) {
		struct vector *v = realloc(t->v, count * sizeof(*v));

		if (!v)
			return NULL;
		for (unsigned i = t->count; i < count; i++)
			v[i] = (struct vector){ .fd = -1 };
		t->v = v;
		t->count = count;
	}
	return t;
}

static int signal_vector(struct vuser_irqs *q, struct vector *v)
{
	uint64_t one = 1;
	ssize_t n;

	do {
		n = write(v->fd, &one, sizeof(one));
	} while (n < 0 && errno == EINTR);
	/* EAGAIN: the counter is saturated, so the interrupt is pending anyway */
	if (n < 0 && errno != EAGAIN)
		return -errno;
	q->triggered++;
	return 0;
}

static int fire(struct vuser_irqs *q, struct vector *v)
{
	if (v->fd < 0)
		return -ENOENT;
	if (v->masked) {
		if (!v->pending)
			q->latched++;
		v->pending = true;
		return 0;
	}
	return signal_vector(q, v);
}

/*
 * An fd the client offers as an interrupt must be one whose write cannot
 * block the event loop: a Linux eventfd (an anonymous inode, no file type)
 * or a pipe (QEMU's event notifier where eventfd does not exist).  A
 * regular file ignores O_NONBLOCK (one on a FUSE mount the VMM serves could
 * hang every signal), and devices and sockets are no interrupts either.
 */
static bool is_event_fd(int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return false;
	return (st.st_mode & S_IFMT) == 0 || S_ISFIFO(st.st_mode);
}

int vuser_irqs_set(struct vuser_irqs *q, const struct vfu_irq_set *is, const uint8_t *bools, uint32_t nbools,
		   int *fds, unsigned nfds, unsigned ndev, bool *changed)
{
	uint32_t data = is->flags & VFU_IRQ_SET_DATA_MASK;
	uint32_t action = is->flags & VFU_IRQ_SET_ACTION_MASK_ALL;
	struct index_table *t;

	*changed = false;
	/* exactly one data type and one action, nothing else */
	if ((is->flags & ~(VFU_IRQ_SET_DATA_MASK | VFU_IRQ_SET_ACTION_MASK_ALL)) || data == 0 ||
	    (data & (data - 1)) || action == 0 || (action & (action - 1)))
		return -EINVAL;
	if (is->index >= VFU_PCI_NUM_IRQS)
		return -EINVAL;
	if (data != VFU_IRQ_SET_DATA_EVENTFD && nfds > 0)
		return -EINVAL;
	if (ndev > VFU_MAX_VECTORS)
		ndev = VFU_MAX_VECTORS;

	if (is->count == 0) {
		if (data != VFU_IRQ_SET_DATA_NONE)
			return -EINVAL;
		if (action == VFU_IRQ_SET_ACTION_TRIGGER) {
			/* disable the whole index */
			close_index(q, is->index);
			*changed = true;
		}
		return 0;
	}
	if (is->start >= ndev || is->count > ndev - is->start)
		return -EINVAL;
	if (data == VFU_IRQ_SET_DATA_BOOL && nbools < is->count)
		return -EINVAL;
	if (data == VFU_IRQ_SET_DATA_EVENTFD) {
		/* eventfds only trigger; all of them or none (de-assign) */
		if (action != VFU_IRQ_SET_ACTION_TRIGGER)
			return -EINVAL;
		if (nfds != 0 && nfds != is->count)
			return -EINVAL;
		for (unsigned i = 0; i < nfds; i++)
			if (!is_event_fd(fds[i]))
				return -EINVAL;
	}
	t = table(q, is->index, ndev);
	if (!t)
		return -ENOMEM;

	for (uint32_t i = 0; i < is->count; i++) {
		struct vector *v = &t->v[is->start + i];
		bool apply = data != VFU_IRQ_SET_DATA_BOOL || bools[i] != 0;

		if (data == VFU_IRQ_SET_DATA_EVENTFD) {
			if (v->fd >= 0)
				close(v->fd);
			v->fd = -1;
			if (nfds) {
				int fd = fds[i];
				int fl = fcntl(fd, F_GETFL);

				/* a signal must never block the event loop */
				if (fl >= 0 && !(fl & O_NONBLOCK))
					fcntl(fd, F_SETFL, fl | O_NONBLOCK);
				v->fd = fd;
				fds[i] = -1; /* taken */
			}
			*changed = true;
			continue;
		}
		if (!apply)
			continue;
		switch (action) {
		case VFU_IRQ_SET_ACTION_MASK:
			v->masked = true;
			*changed = true;
			break;
		case VFU_IRQ_SET_ACTION_UNMASK:
			v->masked = false;
			*changed = true;
			if (v->pending && v->fd >= 0) {
				v->pending = false;
				signal_vector(q, v);
			}
			break;
		default: /* loopback trigger, as Linux VFIO does */
			fire(q, v);
			break;
		}
	}
	return 0;
}

static const struct vector *vector_at(const struct vuser_irqs *q, unsigned index, unsigned vector)
{
	if (index >= VFU_PCI_NUM_IRQS || vector >= q->idx[index].count)
		return NULL;
	return &q->idx[index].v[vector];
}

bool vuser_irq_assigned(const struct vuser_irqs *q, unsigned index, unsigned vector)
{
	const struct vector *v = vector_at(q, index, vector);

	return v && v->fd >= 0;
}

bool vuser_irq_enabled(const struct vuser_irqs *q, unsigned index, unsigned vector)
{
	const struct vector *v = vector_at(q, index, vector);

	return v && v->fd >= 0 && !v->masked;
}

int vuser_irq_trigger(struct vuser_irqs *q, unsigned index, unsigned vector)
{
	if (index >= VFU_PCI_NUM_IRQS || vector >= VFU_MAX_VECTORS)
		return -EINVAL;
	if (vector >= q->idx[index].count)
		return -ENOENT;
	return fire(q, &q->idx[index].v[vector]);
}

void vuser_irqs_counts(const struct vuser_irqs *q, uint64_t *triggered, uint64_t *latched)
{
	*triggered = q->triggered;
	*latched = q->latched;
}
