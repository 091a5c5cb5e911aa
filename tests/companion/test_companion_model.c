// SPDX-License-Identifier: MIT
/*
 * Randomized test of the companion against a reference model: random MAP and
 * UNMAP batches (good and bad entries), UNMAP_ALL, resets, guest RAM removal
 * and re-adding, with tight DART limits.  After every step the invariants:
 * live ids and DART registrations correspond one to one (same host address,
 * same size), and the byte and id counters add up everywhere.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "companion_fixture.h"

#define MAX_MAPPINGS 48
#define MAX_BYTES 0x40000ull

struct model_map {
	uint64_t id;
	uint64_t gpa;
	uint32_t len;
};

struct model {
	struct model_map live[MAX_MAPPINGS + 1];
	unsigned n;
	uint64_t bytes;
	uint64_t last_id;
	bool b_present;
	bool identity;
};

static uint64_t rng_state;

static uint32_t rnd(void)
{
	/* xorshift64*: reproducible from the seed */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}

static void model_drop(struct model *m, unsigned i)
{
	m->bytes -= m->live[i].len;
	m->live[i] = m->live[--m->n];
}

static int model_find(const struct model *m, uint64_t id)
{
	for (unsigned i = 0; i < m->n; i++)
		if (m->live[i].id == id)
			return (int)i;
	return -1;
}

/* Would the device accept this range as one writable host range? */
static bool model_reachable(const struct model *m, uint64_t gpa, uint32_t len)
{
	if (gpa >= GPA_A && gpa - GPA_A < SIZE_A)
		return len <= SIZE_A - (gpa - GPA_A);
	if (m->b_present && gpa >= GPA_B && gpa - GPA_B < SIZE_B)
		return len <= SIZE_B - (gpa - GPA_B);
	return false;
}

static void check_invariants(struct fixture *fx, const struct model *m)
{
	struct companion_stats st;

	companion_stats(fx->c, &st);
	assert_int_equal(st.live_ids, m->n);
	assert_int_equal(st.live_bytes, m->bytes);
	assert_true(st.peak_ids >= m->n);
	assert_true(st.peak_ids <= MAX_MAPPINGS);
	assert_true(st.peak_bytes >= m->bytes);
	assert_int_equal(companion_mmio_read(fx->c, APPLE_DMA_REG_LIVE_MAPPINGS, 4), m->n);
	assert_int_equal(companion_mmio_read(fx->c, APPLE_DMA_REG_LIVE_BYTES_LO, 4), (uint32_t)m->bytes);
	assert_int_equal(companion_mmio_read(fx->c, APPLE_DMA_REG_LIVE_BYTES_HI, 4), 0);
	if (m->identity) {
		assert_int_equal(fx->f->nregs, 0);
		assert_int_equal(fx->f->register_calls, 0);
		return;
	}
	/* one to one: same count, every model mapping registered exactly so */
	assert_int_equal(fx->f->nregs, m->n);
	assert_int_equal(fx->f->live_bytes, m->bytes);
	for (unsigned i = 0; i < m->n; i++) {
		const struct fake_reg *r = fake_hd_find(fx->f, m->live[i].id);

		assert_non_null(r);
		assert_ptr_equal(r->host_addr, gp(fx, m->live[i].gpa));
		assert_int_equal(r->size, m->live[i].len);
	}
}

/* A random MAP entry: mostly good, some of every bad kind. */
static void random_map_entry(uint64_t *gpa, uint32_t *len)
{
	uint32_t kind = rnd() % 16;

	*len = 1 + rnd() % 0x4000;
	switch (kind) {
	case 0:
		*len = 0;
		*gpa = BUF_GPA;
		break;
	case 1: /* straddles A|B */
		*gpa = GPA_B - 1 - rnd() % 0x100;
		*len = 0x200;
		break;
	case 2:
		*gpa = GPA_RO + rnd() % 0x1000;
		break;
	case 3:
		*gpa = GPA_NOVA + rnd() % 0x1000;
		break;
	case 4:
		*gpa = 0xfffffffffffff000ull + rnd() % 0x1000;
		break;
	case 5: /* anywhere in B, sometimes running off its end */
	case 6:
		*gpa = GPA_B + rnd() % SIZE_B;
		break;
	default: /* in A's buffer area, sometimes the same range twice */
		*gpa = BUF_GPA + (rnd() % 64) * 0x1000 + (rnd() % 2 ? rnd() % 0x1000 : 0);
		break;
	}
}

static void step_map(struct fixture *fx, struct model *m)
{
	uint32_t count = 1 + rnd() % 24;
	uint64_t gpas[24];
	uint32_t lens[24];
	uint32_t want_batch = APPLE_DMA_OK;

	for (uint32_t i = 0; i < count; i++) {
		random_map_entry(&gpas[i], &lens[i]);
		put_map_req(fx, REQ_GPA, i, gpas[i], lens[i]);
	}
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, count, REQ_GPA, RESP_GPA);
	uint32_t got = ring(fx, PAGE_GPA);

	for (uint32_t i = 0; i < count; i++) {
		uint32_t want;

		if (lens[i] == 0 || gpas[i] + lens[i] < gpas[i])
			want = APPLE_DMA_INVAL;
		else if (!model_reachable(m, gpas[i], lens[i]) || m->n >= MAX_MAPPINGS ||
			 (!m->identity && m->bytes + lens[i] > MAX_BYTES))
			want = APPLE_DMA_IOERR;
		else
			want = APPLE_DMA_OK;
		assert_int_equal(map_status(fx, i), want);
		if (want != APPLE_DMA_OK) {
			want_batch = APPLE_DMA_IOERR;
			continue;
		}
		uint64_t id = map_id(fx, i);

		/* this implementation's ids increase: unique and never 0 */
		assert_true(id > m->last_id);
		m->last_id = id;
		assert_int_equal(map_dma_len(fx, i), lens[i]);
		if (m->identity)
			assert_int_equal(map_dma(fx, i), gpas[i]);
		else
			assert_int_equal(map_dma(fx, i), fake_hd_find(fx->f, id)->bus);
		m->live[m->n++] = (struct model_map){ .id = id, .gpa = gpas[i], .len = lens[i] };
		m->bytes += lens[i];
	}
	assert_int_equal(got, want_batch);
	assert_int_equal(page_status(fx, PAGE_GPA), want_batch);
}

static void step_unmap(struct fixture *fx, struct model *m)
{
	uint32_t count = 1 + rnd() % 16;
	uint64_t ids[16], sizes[16];
	uint32_t want_batch = APPLE_DMA_OK;

	for (uint32_t i = 0; i < count; i++) {
		uint32_t kind = rnd() % 8;

		if (m->n > 0 && kind < 5) {
			const struct model_map *mm = &m->live[rnd() % m->n];

			ids[i] = mm->id;
			sizes[i] = kind == 4 ? mm->len + 1 : mm->len; /* 4: wrong size */
		} else {
			ids[i] = kind == 5 ? 0 : m->last_id + 1 + rnd() % 4;
			sizes[i] = rnd() % 0x1000;
		}
		put_unmap_req(fx, REQ_GPA, i, ids[i], sizes[i]);
	}
	put_page(fx, PAGE_GPA, APPLE_DMA_CMD_UNMAP, count, REQ_GPA, RESP_GPA);
	uint32_t got = ring(fx, PAGE_GPA);

	/* entries are processed in order: a duplicate finds the id gone */
	for (uint32_t i = 0; i < count; i++) {
		int k = model_find(m, ids[i]);
		uint32_t want = (k >= 0 && m->live[k].len == sizes[i]) ? APPLE_DMA_OK : APPLE_DMA_IOERR;

		assert_int_equal(ld64(gp(fx, RESP_GPA) + i * 16), ids[i]);
		assert_int_equal(unmap_status(fx, i), want);
		if (want == APPLE_DMA_OK)
			model_drop(m, (unsigned)k);
		else
			want_batch = APPLE_DMA_IOERR;
	}
	assert_int_equal(got, want_batch);
}

static void step_remove_b(struct fixture *fx, struct model *m)
{
	if (m->b_present) {
		companion_guest_ram_removed(fx->c, GPA_B, SIZE_B);
		assert_int_equal(guest_mem_remove(fx->gm, GPA_B, SIZE_B), 0);
		for (unsigned i = 0; i < m->n;)
			if (m->live[i].gpa >= GPA_B && m->live[i].gpa < GPA_B + SIZE_B)
				model_drop(m, i);
			else
				i++;
		m->b_present = false;
	} else {
		assert_int_equal(guest_mem_add(fx->gm, GPA_B, SIZE_B, fx->b, true), 0);
		m->b_present = true;
	}
}

static void run_model(bool identity, uint64_t seed, int steps)
{
	struct fixture *fx = fixture_new(MAX_BYTES, MAX_MAPPINGS, identity);
	struct model *m = calloc(1, sizeof(*m));
	unsigned counts[6] = { 0 };

	m->b_present = true;
	m->identity = identity;
	rng_state = seed;
	for (int s = 0; s < steps; s++) {
		uint32_t op = rnd() % 100;

		if (op < 45) {
			step_map(fx, m);
			counts[0]++;
		} else if (op < 85) {
			step_unmap(fx, m);
			counts[1]++;
		} else if (op < 90) {
			step_remove_b(fx, m);
			counts[2]++;
		} else if (op < 93) {
			companion_reset(fx->c);
			m->n = 0;
			m->bytes = 0;
			counts[3]++;
		} else if (op < 96) {
			put_page(fx, PAGE_GPA, APPLE_DMA_CMD_UNMAP_ALL, rnd(), rnd(), rnd());
			assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_OK);
			m->n = 0;
			m->bytes = 0;
			counts[4]++;
		} else {
			/* a malformed doorbell changes nothing */
			put_page(fx, PAGE_GPA, APPLE_DMA_CMD_MAP, 5000 + rnd() % 1000, REQ_GPA, RESP_GPA);
			assert_int_equal(ring(fx, PAGE_GPA), APPLE_DMA_INVAL);
			counts[5]++;
		}
		check_invariants(fx, m);
	}
	/* every kind of step ran */
	for (int i = 0; i < 6; i++)
		assert_true(counts[i] > 0);
	/* the VMM goes away: nothing stays in the DART */
	companion_destroy(fx->c);
	fx->c = NULL;
	assert_int_equal(fx->f->nregs, 0);
	assert_int_equal(fx->f->live_bytes, 0);
	if (!identity)
		assert_int_equal(fx->f->registers, fx->f->unregisters);
	if (!m->b_present)
		assert_int_equal(guest_mem_add(fx->gm, GPA_B, SIZE_B, fx->b, true), 0);
	free(m);
	fixture_free(fx);
}

static void test_model_dart(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 4; seed++)
		run_model(false, seed * 0x9E3779B97F4A7C15ull, 3000);
}

static void test_model_identity(void **state)
{
	(void)state;
	run_model(true, 0xC0FFEEull, 3000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_model_dart),
		cmocka_unit_test(test_model_identity),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
