// SPDX-License-Identifier: MIT
#include "guest_mem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Ranges sorted by gpa, never overlapping: lookup is a binary search. */
struct guest_mem {
	struct guest_mem_range *ranges;
	size_t count;
	size_t capacity;
};

struct guest_mem *guest_mem_create(void)
{
	return calloc(1, sizeof(struct guest_mem));
}

void guest_mem_destroy(struct guest_mem *gm)
{
	if (!gm)
		return;
	free(gm->ranges);
	free(gm);
}

/* Index of the first range whose gpa is greater than gpa (0..count). */
static size_t upper_bound(const struct guest_mem *gm, uint64_t gpa)
{
	size_t lo = 0, hi = gm->count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (gm->ranges[mid].gpa <= gpa)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The range containing gpa, or NULL. */
static const struct guest_mem_range *containing(const struct guest_mem *gm, uint64_t gpa)
{
	size_t i = upper_bound(gm, gpa);
	const struct guest_mem_range *r;

	if (i == 0)
		return NULL;
	r = &gm->ranges[i - 1];
	/* r->gpa <= gpa; the range's end never overflows (checked on add) */
	return gpa - r->gpa < r->len ? r : NULL;
}

int guest_mem_add(struct guest_mem *gm, uint64_t gpa, uint64_t len, void *va, bool writable)
{
	size_t i;

	/* also refuses a range ending exactly at 2^64 (gpa + len wraps to 0) */
	if (len == 0 || gpa + len < gpa)
		return -EINVAL;
	i = upper_bound(gm, gpa);
	if (i > 0) {
		const struct guest_mem_range *prev = &gm->ranges[i - 1];

		if (gpa - prev->gpa < prev->len)
			return -EEXIST;
	}
	if (i < gm->count && gm->ranges[i].gpa - gpa < len)
		return -EEXIST;
	if (gm->count == gm->capacity) {
		size_t cap = gm->capacity ? gm->capacity * 2 : 16;
		struct guest_mem_range *r = realloc(gm->ranges, cap * sizeof(*r));

		if (!r)
			return -ENOMEM;
		gm->ranges = r;
		gm->capacity = cap;
	}
	memmove(&gm->ranges[i + 1], &gm->ranges[i], (gm->count - i) * sizeof(gm->ranges[0]));
	gm->ranges[i] = (struct guest_mem_range){ .gpa = gpa, .len = len, .va = va, .writable = writable };
	gm->count++;
	return 0;
}

int guest_mem_remove(struct guest_mem *gm, uint64_t gpa, uint64_t len)
{
	size_t i = upper_bound(gm, gpa);

	if (i == 0 || gm->ranges[i - 1].gpa != gpa || gm->ranges[i - 1].len != len)
		return -ENOENT;
	i--;
	memmove(&gm->ranges[i], &gm->ranges[i + 1], (gm->count - i - 1) * sizeof(gm->ranges[0]));
	gm->count--;
	return 0;
}

void *guest_mem_translate(const struct guest_mem *gm, uint64_t gpa, uint64_t len, bool write)
{
	const struct guest_mem_range *r;
	uint64_t off;

	if (len == 0)
		return NULL;
	r = containing(gm, gpa);
	if (!r || !r->va || (write && !r->writable))
		return NULL;
	off = gpa - r->gpa;
	/* off < r->len, so r->len - off cannot underflow */
	if (len > r->len - off)
		return NULL;
	return (char *)r->va + off;
}

int guest_mem_find(const struct guest_mem *gm, uint64_t gpa, struct guest_mem_range *out)
{
	const struct guest_mem_range *r = containing(gm, gpa);

	if (!r)
		return -ENOENT;
	if (out)
		*out = *r;
	return 0;
}

size_t guest_mem_count(const struct guest_mem *gm)
{
	return gm->count;
}

void guest_mem_for_each(const struct guest_mem *gm, guest_mem_cb cb, void *opaque)
{
	for (size_t i = 0; i < gm->count; i++) {
		const struct guest_mem_range *r = &gm->ranges[i];

		cb(r->gpa, r->len, r->va, r->writable, opaque);
	}
}
