// SPDX-License-Identifier: GPL-2.0
/* apple_dma: windows: trees, cache, eviction, resolution ladder, reset, idle release. */

#include "apple_dma.h"

INTERVAL_TREE_DEFINE(struct ad_window, gpa_node, u64, gpa_subtree_last,
		     AD_GPA_START, AD_GPA_LAST, static, ad_gpa_tree)
INTERVAL_TREE_DEFINE(struct ad_window, bus_node, u64, bus_subtree_last,
		     AD_BUS_START, AD_BUS_LAST, static, ad_bus_tree)

/* ---- windows ------------------------------------------------------------ */

static u64 ad_win_len(const struct ad_window *w)
{
	return w->gpa_last - w->gpa_start + 1;
}

/* Caller holds ad->lock and is inside a tree_seq write section. */
static void ad_win_unlink(struct apple_dma *ad, struct ad_window *w)
{
	if (w->in_gpa)
		ad_gpa_tree_remove(w, &ad->gpa_root);
	if (w->in_bus)
		ad_bus_tree_remove(w, &ad->bus_root);
	w->in_gpa = false;
	w->in_bus = false;
}

void ad_win_unlink_seq(struct apple_dma *ad, struct ad_window *w)
{
	write_seqcount_begin(&ad->tree_seq);
	ad_win_unlink(ad, w);
	write_seqcount_end(&ad->tree_seq);
}

/* Return a window's slot (and budget); its host mapping is gone. */
void ad_win_free(struct apple_dma *ad, struct ad_window *w)
{
	if (w->in_gpa || w->in_bus)
		ad_win_unlink_seq(ad, w);
	ad->live_bytes -= ad_win_len(w);
	ad->live_mappings--;
	if (w->free_page)
		__free_pages(w->free_page, w->free_order);
	w->free_page = NULL;
	w->state = AD_WIN_FREE;
	atomic_set(&w->refs, AD_REFS_DEAD);
	w->unmap_tries = 0;
	list_move(&w->link, &ad->free_list);
}

/*
 * Unmap every window on @list (claimed: DYING or STUCK, off the trees),
 * batched, and free their slots.  A window the device refuses to unmap is
 * still held by the host: it stays counted and goes to the stuck list, to
 * be retried; it is never forgotten.
 */
void ad_release_list(struct apple_dma *ad, struct list_head *list)
{
	struct ad_unmap_req *req = ad->req;
	struct ad_unmap_resp *resp = ad->resp;
	struct ad_window *w, *tmp;
	u64 gen = ad->reset_gen;
	u32 n, i, status;

	while (!list_empty(list)) {
		if (ad->reset_gen != gen) {
			/* A reset dropped them on the host. */
			list_for_each_entry_safe(w, tmp, list, link)
				ad_win_free(ad, w);
			break;
		}
		n = 0;
		list_for_each_entry(w, list, link) {
			if (n == ad->batch_max)
				break;
			req[n].id = cpu_to_le64(w->id);
			req[n].size = cpu_to_le64(ad_win_len(w));
			n++;
		}
		memset(resp, 0, n * sizeof(*resp));
		status = ad_doorbell(ad, AD_CMD_UNMAP, n);
		ad->stats.unmap_entries += n;
		i = 0;
		list_for_each_entry_safe(w, tmp, list, link) {
			if (i++ == n)
				break;
			if (status == AD_ST_RESET || status == AD_ST_GONE ||
			    ((status == AD_ST_OK || status == AD_ST_IOERR) &&
			     le32_to_cpu(resp[i - 1].status) == AD_ST_OK)) {
				/* Done, or dropped by the reset: nothing left on the host. */
				ad_win_free(ad, w);
				continue;
			}
			ad->stats.unmap_errors++;
			w->unmap_tries++;
			w->state = AD_WIN_STUCK;
			list_move_tail(&w->link, &ad->stuck_list);
			if (w->unmap_tries == AD_UNMAP_TRIES)
				dev_err(ad->dev,
					"host refused %u times to unmap id %#llx (gpa %#llx, %llu bytes): it stays mapped and counted%s\n",
					w->unmap_tries, w->id, w->gpa_start, ad_win_len(w),
					w->free_page ? "; its pages are kept" : "");
			else
				dev_warn_ratelimited(ad->dev,
						     "host refused to unmap id %#llx (%llu bytes); will retry\n",
						     w->id, ad_win_len(w));
		}
	}
}

/*
 * Claim @w for release if it has no users: lockless users can no longer
 * take it.  Caller holds ad->lock.  Unlinks it; the caller releases it.
 */
static bool ad_win_claim(struct apple_dma *ad, struct ad_window *w)
{
	if (w->state != AD_WIN_LIVE || atomic_cmpxchg(&w->refs, 0, AD_REFS_DEAD) != 0)
		return false;
	w->state = AD_WIN_DYING;
	ad_win_unlink_seq(ad, w);
	list_del_init(&w->link);	/* leaves the live list */
	return true;
}

bool ad_win_idle(const struct ad_window *w)
{
	return w->state == AD_WIN_LIVE && w->kind == AD_KIND_SHARED && !atomic_read(&w->refs);
}

/*
 * Evict idle windows, older than the average idle one first, until @bytes
 * and @count are freed or at least AD_EVICT_MIN windows went; at most one
 * batch.  Returns how many went.
 */
static u32 ad_evict(struct apple_dma *ad, u64 bytes, u64 count)
{
	LIST_HEAD(victims);
	struct ad_window *w, *tmp;
	u64 freed_bytes = 0, sum = 0, avg, nidle = 0;
	u32 n = 0;
	int pass;

	count = max_t(u64, count, AD_EVICT_MIN);
	list_for_each_entry(w, &ad->live_list, link) {
		if (ad_win_idle(w)) {
			sum += READ_ONCE(w->idle_since) >> 10;
			nidle++;
		}
	}
	if (!nidle)
		return 0;
	avg = div64_u64(sum, nidle) << 10;
	for (pass = 0; pass < 2; pass++) {
		list_for_each_entry_safe(w, tmp, &ad->live_list, link) {
			if ((freed_bytes >= bytes && n >= count) || n == ad->batch_max)
				break;
			if (!ad_win_idle(w) || (!pass && READ_ONCE(w->idle_since) > avg))
				continue;
			if (!ad_win_claim(ad, w))
				continue;
			list_add_tail(&w->link, &victims);
			freed_bytes += ad_win_len(w);
			n++;
		}
	}
	if (n) {
		ad->stats.evictions += n;
		ad_release_list(ad, &victims);
	}
	return n;
}

static bool ad_room_for(struct apple_dma *ad, u64 len)
{
	return ad->live_bytes + len <= ad->budget_bytes &&
	       ad->live_mappings + 1 <= ad->budget_mappings &&
	       !list_empty(&ad->free_list);
}

/*
 * What must go before @count more windows of @bytes in all fit: the bytes
 * and windows over the budgets, and the windows beyond the free slots.
 */
static void ad_shortfall(struct apple_dma *ad, u64 bytes, u64 count, u64 *over_bytes,
			 u64 *over_count)
{
	struct ad_window *w;
	u64 free_slots = 0;

	list_for_each_entry(w, &ad->free_list, link)
		if (++free_slots >= count)
			break;
	*over_bytes = ad->live_bytes + bytes > ad->budget_bytes ?
		      ad->live_bytes + bytes - ad->budget_bytes : 0;
	*over_count = ad->live_mappings + count > ad->budget_mappings ?
		      ad->live_mappings + count - ad->budget_mappings : 0;
	*over_count = max(*over_count, count - free_slots);
}

/* Make room for one more mapping of @len bytes, evicting idle windows. */
static bool ad_make_room(struct apple_dma *ad, u64 len)
{
	u64 over_bytes, over_count;

	while (!ad_room_for(ad, len)) {
		ad_shortfall(ad, len, 1, &over_bytes, &over_count);
		if (!ad_evict(ad, over_bytes, over_count))
			return false;
	}
	return true;
}

static void ad_kick_idle(struct apple_dma *ad)
{
	if (READ_ONCE(ad->idle_work_ready) && !delayed_work_pending(&ad->idle_work))
		queue_delayed_work(system_highpri_wq, &ad->idle_work, ad->idle_delay);
}

/* Take a user on a window found under ad->lock (never DEAD there). */
static void ad_win_get(struct apple_dma *ad, struct ad_window *w)
{
	atomic_inc(&w->refs);
}

/* Drop a user; lockless.  The last one starts the idle clock.  False: no user. */
bool ad_win_put(struct apple_dma *ad, struct ad_window *w)
{
	int left = atomic_dec_if_positive(&w->refs);

	if (left < 0)
		return false;
	if (left == 0 && w->kind == AD_KIND_SHARED) {
		WRITE_ONCE(w->idle_since, ktime_get_ns());
		WRITE_ONCE(w->used, 1);
		ad_kick_idle(ad);
	}
	return true;
}

static bool ad_win_holds(const struct ad_window *w, u64 gpa, u64 last)
{
	return w->gpa_start <= gpa && w->gpa_last >= last;
}

/*
 * A live (or, under the lock, pending) shared window that holds all of
 * [gpa, gpa + len).  Lockless callers pass @locked false and see only LIVE
 * windows, within AD_LOCKLESS_STEPS nodes.
 */
static struct ad_window *ad_lookup_gpa(struct apple_dma *ad, u64 gpa, u64 len, bool locked)
{
	u64 last = gpa + len - 1;
	struct ad_window *w;
	int steps = 0;

	for (w = ad_gpa_tree_iter_first(&ad->gpa_root, gpa, last); w;
	     w = ad_gpa_tree_iter_next(w, gpa, last)) {
		u8 state = READ_ONCE(w->state);

		if (!locked && ++steps > AD_LOCKLESS_STEPS)
			return NULL;
		if (!ad_win_holds(w, gpa, last) || w->kind != AD_KIND_SHARED ||
		    !(state == AD_WIN_LIVE || (locked && state == AD_WIN_PENDING)))
			continue;
		/* Strict: only a mapping of exactly this range's granules. */
		if (ad->strict && (w->gpa_start != ALIGN_DOWN(gpa, ad->granule) ||
				   w->gpa_last != ALIGN(last + 1, ad->granule) - 1))
			continue;
		return w;
	}
	return NULL;
}

/*
 * The window that owns a mapping of [bus, bus + len): a live shared window
 * with users that holds it.  When two live windows share bus addresses
 * (identity mode) the owner is the one that went live first, the same rule
 * the map side follows (ad_canonical()), so unmaps never drop the wrong one.
 */
struct ad_window *ad_lookup_bus(struct apple_dma *ad, u64 bus, u64 len, bool locked)
{
	u64 last = bus + len - 1;
	struct ad_window *w, *best = NULL;
	int steps = 0;

	if (!len || last < bus)
		return NULL;
	for (w = ad_bus_tree_iter_first(&ad->bus_root, bus, last); w;
	     w = ad_bus_tree_iter_next(w, bus, last)) {
		if (!locked && ++steps > AD_LOCKLESS_STEPS)
			return NULL;
		if (w->bus_start <= bus && w->bus_last >= last && w->kind != AD_KIND_POOL &&
		    READ_ONCE(w->state) == AD_WIN_LIVE && atomic_read(&w->refs) > 0 &&
		    (!best || w->seq < best->seq))
			best = w;
		if (best && !READ_ONCE(ad->bus_alias))
			break;
	}
	return best;
}

/*
 * With aliasing bus ranges, a mapping of [bus, bus + len) must belong to
 * the earliest live window holding it with the same translation.
 */
static struct ad_window *ad_canonical(struct apple_dma *ad, struct ad_window *w,
				      u64 bus, u64 len)
{
	u64 last = bus + len - 1, delta = w->bus_start - w->gpa_start;
	struct ad_window *o, *best = w;
	int steps = 0;

	for (o = ad_bus_tree_iter_first(&ad->bus_root, bus, last); o;
	     o = ad_bus_tree_iter_next(o, bus, last)) {
		if (++steps > AD_LOCKLESS_STEPS)
			break;
		if (o->bus_start <= bus && o->bus_last >= last && o->kind == AD_KIND_SHARED &&
		    READ_ONCE(o->state) == AD_WIN_LIVE && o->seq < best->seq &&
		    o->bus_start - o->gpa_start == delta)
			best = o;
	}
	if (best == w || !atomic_inc_unless_negative(&best->refs))
		return w;
	/* Pairs with the release in ad_flush_maps(): a LIVE window's fields are set. */
	if (smp_load_acquire(&best->state) != AD_WIN_LIVE) {
		ad_win_put(ad, best);
		return w;
	}
	ad_win_put(ad, w);
	return best;
}

/*
 * Cache hit without the lock: a live window holding [gpa, gpa + len), with
 * a user taken.  NULL sends the caller to the locked slow path.
 */
struct ad_window *ad_hit(struct apple_dma *ad, u64 gpa, u64 len)
{
	struct ad_window *w;
	unsigned int seq;
	int tries;

	for (tries = 0; tries < 3; tries++) {
		seq = read_seqcount_begin(&ad->tree_seq);
		w = ad_lookup_gpa(ad, gpa, len, false);
		if (read_seqcount_retry(&ad->tree_seq, seq))
			continue;
		if (!w || !atomic_inc_unless_negative(&w->refs))
			return NULL;
		/*
		 * Evicted and reused meanwhile?  Only a live one that still holds
		 * it; the acquire pairs with the release in ad_flush_maps().
		 */
		if (smp_load_acquire(&w->state) == AD_WIN_LIVE && w->kind == AD_KIND_SHARED &&
		    ad_win_holds(w, gpa, gpa + len - 1))
			return w;
		ad_win_put(ad, w);
		return NULL;
	}
	return NULL;
}

/*
 * The guest range a new window for @r takes at its level: the aligned
 * window around it, or just its granules.  0 when the range runs past the
 * top or no window can hold it.
 */
static u64 ad_win_span(struct apple_dma *ad, const struct ad_range *r, u64 *startp)
{
	u64 start, end;

	start = ALIGN_DOWN(r->gpa, ad->window);
	end = start + ad->window;
	if (r->level != AD_LVL_WINDOW || end < start || r->gpa + r->len > end) {
		start = ALIGN_DOWN(r->gpa, ad->granule);
		end = ALIGN(r->gpa + r->len, ad->granule);
		if (end <= start)
			return 0;
	}
	if (end - start > AD_MAX_SPAN || end - start > ad->budget_bytes)
		return 0;
	*startp = start;
	return end - start;
}

/*
 * Make room for a round's misses (@count windows, @bytes) with one
 * eviction batch, one UNMAP doorbell, rather than one batch every few
 * misses.  An exact retry (@exact) follows a refusal or a miss of the
 * host, so its room is freed on the host too, even when the module's own
 * budget has it.
 */
static void ad_reserve(struct apple_dma *ad, u64 bytes, u64 count, bool exact)
{
	u64 over_bytes, over_count;

	ad_shortfall(ad, bytes, count, &over_bytes, &over_count);
	if (exact) {
		over_bytes = max(over_bytes, bytes);
		over_count = max(over_count, count);
	}
	if (over_bytes || over_count)
		ad_evict(ad, over_bytes, over_count);
}

/* A new pending window for @r at its level, or NULL when there is no room. */
static struct ad_window *ad_win_new(struct apple_dma *ad, struct ad_range *r)
{
	u64 start = 0, end, len;
	struct ad_window *w;

	len = ad_win_span(ad, r, &start);
	if (!len || !ad_make_room(ad, len))
		return NULL;
	end = start + len;

	w = list_first_entry(&ad->free_list, struct ad_window, link);
	list_del_init(&w->link);
	w->gpa_start = start;
	w->gpa_last = end - 1;
	w->bus_start = 0;
	w->bus_last = 0;
	w->id = 0;
	w->kind = r->kind;
	w->free_page = NULL;
	w->unmap_tries = 0;
	w->idle_since = 0;
	atomic_set(&w->refs, 0);
	WRITE_ONCE(w->state, AD_WIN_PENDING);
	write_seqcount_begin(&ad->tree_seq);
	ad_gpa_tree_insert(w, &ad->gpa_root);
	write_seqcount_end(&ad->tree_seq);
	w->in_gpa = true;
	ad->live_bytes += len;
	ad->live_mappings++;
	return w;
}

/*
 * Is the bus range the device gave @w usable?  Its offset within the
 * granule must be the guest range's, and it must not alias another live
 * window with a different translation.  Sets bus_alias for benign aliasing
 * (identity mode: bus == gpa for every window).
 */
static bool ad_bus_ok(struct apple_dma *ad, struct ad_window *w, u64 dma, u64 len)
{
	struct ad_window *o;

	if ((dma ^ w->gpa_start) & (ad->granule - 1))
		return false;
	for (o = ad_bus_tree_iter_first(&ad->bus_root, dma, dma + len - 1); o;
	     o = ad_bus_tree_iter_next(o, dma, dma + len - 1)) {
		if (o->bus_start - o->gpa_start != dma - w->gpa_start)
			return false;
		WRITE_ONCE(ad->bus_alias, true);
	}
	return true;
}

/*
 * Map the pending windows on @batch with one doorbell.  Each becomes LIVE
 * or FAILED (moved to @failed); a mapping the device made but answered
 * wrongly (short, wrapping, misaligned, aliasing) is released again.
 */
static void ad_flush_maps(struct apple_dma *ad, struct list_head *batch, u32 n,
			  struct list_head *failed)
{
	struct ad_map_req *req = ad->req;
	struct ad_map_resp *resp = ad->resp;
	LIST_HEAD(bad);
	struct ad_window *w, *tmp;
	u32 i = 0, status;
	u64 len, dma;

	list_for_each_entry(w, batch, link) {
		req[i].gpa = cpu_to_le64(w->gpa_start);
		req[i].len = cpu_to_le32((u32)ad_win_len(w));
		req[i].flags = 0;
		i++;
	}
	memset(resp, 0, n * sizeof(*resp));
	status = ad_doorbell(ad, AD_CMD_MAP, n);
	ad->stats.map_entries += n;

	i = 0;
	list_for_each_entry_safe(w, tmp, batch, link) {
		len = ad_win_len(w);
		list_del_init(&w->link);
		if ((status != AD_ST_OK && status != AD_ST_IOERR) ||
		    le32_to_cpu(resp[i].status) != AD_ST_OK) {
			ad->stats.map_refused++;
			ad_win_unlink_seq(ad, w);
			w->state = AD_WIN_FAILED;
			list_add_tail(&w->link, failed);
			i++;
			continue;
		}
		w->id = le64_to_cpu(resp[i].id);
		dma = le64_to_cpu(resp[i].dma_addr);
		if (le32_to_cpu(resp[i].dma_len) < len || dma + len - 1 < dma ||
		    !ad_bus_ok(ad, w, dma, len)) {
			ad->stats.bad_bus++;
			dev_warn_ratelimited(ad->dev,
					     "device mapped gpa %#llx+%#llx as %#llx+%#x: unusable (short, wrapping, misaligned or aliasing), released\n",
					     w->gpa_start, len, dma,
					     le32_to_cpu(resp[i].dma_len));
			ad_win_unlink_seq(ad, w);
			w->state = AD_WIN_DYING;
			list_add_tail(&w->link, &bad);
			i++;
			continue;
		}
		write_seqcount_begin(&ad->tree_seq);
		w->bus_start = dma;
		w->bus_last = dma + len - 1;
		w->seq = ++ad->next_seq;
		ad_bus_tree_insert(w, &ad->bus_root);
		w->in_bus = true;
		/* Lockless readers that see LIVE (acquire) see the bus range too. */
		smp_store_release(&w->state, AD_WIN_LIVE);
		write_seqcount_end(&ad->tree_seq);
		list_add_tail(&w->link, &ad->live_list);
		i++;
	}
	ad->stats.peak_live_bytes = max(ad->stats.peak_live_bytes, ad->live_bytes);
	ad->stats.peak_live_mappings = max(ad->stats.peak_live_mappings, ad->live_mappings);

	/* Free them on the host; their ranges see a non-live window and move on. */
	if (!list_empty(&bad))
		ad_release_list(ad, &bad);
}

/* ---- resolving ranges to bus addresses ---------------------------------- */

/* Map the pool's pages as one exact mapping of their own.  ad->lock held. */
int ad_pool_map(struct apple_dma *ad)
{
	struct ad_range r = { .dir = DMA_BIDIRECTIONAL, .kind = AD_KIND_POOL };
	unsigned long flags;
	u32 pages = 1U << ad->bounce_order;
	int ret;

	r.gpa = page_to_phys(ad->bounce_page);
	r.len = (u64)pages * PAGE_SIZE;
	ret = ad_resolve(ad, &r, 1, AD_LVL_EXACT, false, U64_MAX);
	spin_lock_irqsave(&ad->bounce_lock, flags);
	if (!ret) {
		ad->bounce_win = r.win;
		ad->bounce_bus = r.bus;
		ad->bounce_len = r.len;
		ad->bounce_pages = pages;
		ad->pool_lost = false;
	}
	spin_unlock_irqrestore(&ad->bounce_lock, flags);
	return ret;
}

static void ad_range_put(struct apple_dma *ad, struct ad_range *r)
{
	if (r->bounced)
		ad_bounce_unmap(ad, r->bus, false);
	else if (r->win)
		ad_win_put(ad, r->win);
	r->win = NULL;
	r->bounced = false;
	r->done = false;
}

/*
 * Drop @r's window because its bus range missed the mask; if idle, claim
 * it onto @victims, which the caller releases in one batch.
 */
static void ad_drop_missed(struct apple_dma *ad, struct ad_range *r, struct list_head *victims)
{
	struct ad_window *w = r->win;

	ad->stats.mask_misses++;
	r->win = NULL;
	ad_win_put(ad, w);
	if (w->kind == AD_KIND_SHARED && ad_win_claim(ad, w)) {
		list_add_tail(&w->link, victims);
		ad->stats.evictions++;
	}
}

/* Take a cached shared window (live, or pending in this round) for @ri. */
static bool ad_range_hit(struct apple_dma *ad, struct ad_range *ri)
{
	struct ad_window *w;

	if (ri->kind != AD_KIND_SHARED)
		return false;
	w = ad_lookup_gpa(ad, ri->gpa, ri->len, true);
	if (!w)
		return false;
	ad_win_get(ad, w);
	ri->win = w;
	ad->stats.cache_hits++;
	return true;
}

/*
 * Give each of @n ranges a bus address at or below @limit.  Cached windows
 * cost nothing; the misses of one round share one eviction batch and one
 * MAP doorbell, and the windows that missed @limit one UNMAP.  A range
 * goes down the ladder WINDOW -> EXACT -> BOUNCE (if @may_bounce) -> FAIL
 * when its window finds no room, is refused, or misses @limit (the missed
 * window is evicted); each step only goes down, so there are at most two
 * rounds with doorbells, and this ends.  A companion reset in the middle
 * restarts the ranges once.  Returns 0, or -ENOMEM with nothing left
 * mapped.  Caller holds ad->lock, with interrupts off: every doorbell
 * carries at most batch_max entries, and one call rings a bounded number.
 */
int ad_resolve(struct apple_dma *ad, struct ad_range *r, u32 n, u8 first_level, bool may_bounce,
	       u64 limit)
{
	LIST_HEAD(batch);
	LIST_HEAD(failed);
	LIST_HEAD(missed);
	struct ad_window *w, *tmp;
	bool again, exact, failed_any = false;
	u64 gen = ad->reset_gen, doorbells = ad->stats.doorbells;
	u64 need_bytes, need_count, span, start = 0, last_start;
	int restarts = 0, ret;
	u32 i, nb;

	ad->stats.slow_paths++;
	if (ad->gone)
		return -EIO;
restart:
	for (i = 0; i < n; i++) {
		r[i].win = NULL;
		r[i].level = max(first_level, r[i].first);
		r[i].done = false;
		r[i].bounced = false;
	}
	do {
		again = false;
		nb = 0;
		/* Hits first: their windows have users, so the eviction cannot take them. */
		need_bytes = 0;
		need_count = 0;
		exact = false;
		last_start = U64_MAX;
		for (i = 0; i < n; i++) {
			struct ad_range *ri = &r[i];

			if (ri->done || ri->win || ri->level >= AD_LVL_BOUNCE)
				continue;
			if (ad_range_hit(ad, ri))
				continue;
			span = ad_win_span(ad, ri, &start);
			if (span && start != last_start && need_count < ad->batch_max) {
				need_bytes += span;
				need_count++;
				last_start = start;	/* neighbours often share a window */
			}
			exact |= ri->level == AD_LVL_EXACT && ri->kind == AD_KIND_SHARED;
		}
		if (need_count)
			ad_reserve(ad, need_bytes, need_count, exact);
		for (i = 0; i < n; i++) {
			struct ad_range *ri = &r[i];

			if (ri->done || ri->win)
				continue;
			if (ri->level == AD_LVL_BOUNCE) {
				if (may_bounce && ad->pool_lost && ad->bounce_page && !ad->gone)
					ad_pool_map(ad);
				if (may_bounce && !ad_bounce_map(ad, ri, limit)) {
					ri->done = true;
				} else {
					ri->level = AD_LVL_FAIL;
					failed_any = true;
				}
				continue;
			}
			if (ri->level == AD_LVL_FAIL)
				continue;
			if (ad_range_hit(ad, ri))
				continue;
			if (nb == ad->batch_max) {
				again = true;	/* next round, next doorbell */
				continue;
			}
			w = ad_win_new(ad, ri);
			if (!w) {
				ri->level++;	/* no room: a smaller mapping, then a bounce */
				again = true;
				continue;
			}
			ad->stats.cache_misses++;
			list_add_tail(&w->link, &batch);
			nb++;
			ad_win_get(ad, w);
			ri->win = w;
		}
		if (nb)
			ad_flush_maps(ad, &batch, nb, &failed);
		list_for_each_entry_safe(w, tmp, &failed, link)
			ad_win_free(ad, w);
		if (ad->reset_gen != gen) {
			/* Every bus address handed out above is dead. */
			for (i = 0; i < n; i++)
				if (r[i].bounced && !ad->gone)
					r[i].bounced = false;	/* the pool was reset */
				else if (r[i].done || r[i].win)
					ad_range_put(ad, &r[i]);
			gen = ad->reset_gen;
			if (restarts++ || ad->broken || ad->gone)
				goto fail;
			failed_any = false;
			goto restart;
		}
		for (i = 0; i < n; i++) {
			struct ad_range *ri = &r[i];

			if (ri->done || !ri->win)
				continue;
			if (ri->win->state != AD_WIN_LIVE) {
				/* Its window was refused: try the next level. */
				ad_win_put(ad, ri->win);
				ri->win = NULL;
				ri->level++;
				again = true;
				continue;
			}
			ri->bus = ri->win->bus_start + (ri->gpa - ri->win->gpa_start);
			if (ri->bus + ri->len - 1 > limit) {
				ad_drop_missed(ad, ri, &missed);
				ri->level++;
				again = true;
				continue;
			}
			if (READ_ONCE(ad->bus_alias) && ri->kind == AD_KIND_SHARED)
				ri->win = ad_canonical(ad, ri->win, ri->bus, ri->len);
			ri->done = true;
		}
		if (!list_empty(&missed))
			ad_release_list(ad, &missed);
		if (failed_any)
			break;
	} while (again);

	/* After a reset, map the pool again before anything needs it. */
	if (may_bounce && ad->pool_lost && ad->bounce_page && !ad->gone)
		ad_pool_map(ad);
	if (!failed_any && !ad->gone) {
		ret = 0;
		goto out;
	}
fail:
	for (i = 0; i < n; i++)
		if (r[i].done)
			ad_range_put(ad, &r[i]);
	ret = ad->gone ? -EIO : -ENOMEM;
out:
	ad->stats.max_resolve_doorbells = max(ad->stats.max_resolve_doorbells,
					      ad->stats.doorbells - doorbells);
	return ret;
}

/* ---- companion reset, companion gone ------------------------------------ */

/*
 * Forget every window: the host holds none of them any more.  Idle ones
 * are freed, ones in use become orphans (their users hold dead bus
 * addresses; their unmaps find nothing), ones on a release list being
 * processed are left to it.  The bounce pool's mapping is gone too: with
 * @keep_bounces (the companion is gone, nothing will be mapped again) the
 * slots in flight are kept so that their unmaps still copy back; otherwise
 * (a reset, the pool is mapped again) they are dropped.  ad->lock held.
 */
void ad_forget_all(struct apple_dma *ad, bool keep_bounces)
{
	unsigned long flags;
	u32 i;

	write_seqcount_begin(&ad->tree_seq);
	for (i = 0; i < ad->nr_windows; i++) {
		struct ad_window *w = &ad->windows[i];

		if (w->state != AD_WIN_LIVE && w->state != AD_WIN_STUCK &&
		    w->state != AD_WIN_DYING)
			continue;
		ad_win_unlink(ad, w);
		if (w->state == AD_WIN_LIVE && w->kind != AD_KIND_POOL &&
		    atomic_cmpxchg(&w->refs, 0, AD_REFS_DEAD) != 0) {
			w->state = AD_WIN_ORPHAN;
			list_del_init(&w->link);
			ad->live_bytes -= ad_win_len(w);
			ad->live_mappings--;
			ad->stats.reset_lost++;
			continue;
		}
		if (w->state == AD_WIN_DYING)
			continue;	/* on a release list being processed */
		w->in_gpa = false;
		w->in_bus = false;
		ad->live_bytes -= ad_win_len(w);
		ad->live_mappings--;
		if (w->free_page)
			__free_pages(w->free_page, w->free_order);
		w->free_page = NULL;
		w->state = AD_WIN_FREE;
		atomic_set(&w->refs, AD_REFS_DEAD);
		list_move(&w->link, &ad->free_list);
	}
	ad->bus_alias = false;
	write_seqcount_end(&ad->tree_seq);
	/* Bounced buffers in flight pointed into the dead pool mapping. */
	spin_lock_irqsave(&ad->bounce_lock, flags);
	if (ad->bounce_page) {
		ad->pool_lost = true;
		ad->bounce_win = NULL;
		if (!keep_bounces) {
			bitmap_zero(ad->bounce_map, 1U << ad->bounce_order);
			memset(ad->bounce_slots, 0,
			       sizeof(*ad->bounce_slots) << ad->bounce_order);
		}
	}
	spin_unlock_irqrestore(&ad->bounce_lock, flags);
}

/*
 * The companion lost our command page: it was reset, and a reset drops
 * every mapping.  Restore the page, then forget every window; the pool is
 * mapped again before its next use.  Called from ad_doorbell() (or
 * reset_done) with ad->lock held.
 */
void ad_recover(struct apple_dma *ad)
{
	ad->stats.resets++;
	ad->reset_gen++;
	ad_set_cmd(ad, ad->cmd_gpa);
	ad_forget_all(ad, false);
	if (ad->stats.reset_lost)
		dev_warn(ad->dev, "%llu mappings in use were lost with the reset\n",
			 ad->stats.reset_lost);
}

/* ---- idle release -------------------------------------------------------- */

/*
 * Release idle windows: strict mode every window without users, lazy mode
 * those idle for idle_ms; retry refused UNMAPs.  One batch (batch_cap
 * entries) per pass with the lock, so interrupts are never off for more
 * than one doorbell of batch_cap entries here.  Re-arms while idle windows
 * remain.
 */
static void ad_idle_scan(struct apple_dma *ad, bool *rearm)
{
	LIST_HEAD(victims);
	struct ad_window *w, *tmp;
	unsigned long flags;
	u64 now, age, soonest = U64_MAX;
	u32 n;

	*rearm = false;
	do {
		n = 0;
		spin_lock_irqsave(&ad->lock, flags);
		if (ad->dead) {
			spin_unlock_irqrestore(&ad->lock, flags);
			return;
		}
		now = ktime_get_ns();
		list_for_each_entry_safe(w, tmp, &ad->live_list, link) {
			if (n == ad->batch_max)
				break;
			if (!ad_win_idle(w))
				continue;
			age = now - min(now, READ_ONCE(w->idle_since));
			/*
			 * Lazy: idle for idle_ms and not used since the last
			 * pass, so that a window in steady use is not released
			 * because the vCPU (or this worker) ran late.
			 */
			if (!ad->strict && (READ_ONCE(w->used) || age < ad->idle_ns)) {
				WRITE_ONCE(w->used, 0);
				soonest = min(soonest, ad->idle_ns);
				continue;
			}
			if (!ad_win_claim(ad, w))
				continue;
			list_add_tail(&w->link, &victims);
			ad->stats.idle_release_max_ns = max(ad->stats.idle_release_max_ns, age);
			n++;
		}
		if (n) {
			if (ad->strict)
				ad->stats.strict_releases += n;
			else
				ad->stats.idle_releases += n;
			ad_release_list(ad, &victims);
		}
		if (n < ad->batch_max) {
			/* Retry what the host refused to unmap: one batch per pass. */
			u32 retry = 0;

			list_for_each_entry_safe(w, tmp, &ad->stuck_list, link)
				if (w->unmap_tries < AD_UNMAP_TRIES && retry++ < ad->batch_max)
					list_move_tail(&w->link, &victims);
			if (!list_empty(&victims))
				ad_release_list(ad, &victims);
			list_for_each_entry(w, &ad->stuck_list, link)
				if (w->unmap_tries < AD_UNMAP_TRIES)
					*rearm = true;
		}
		spin_unlock_irqrestore(&ad->lock, flags);
	} while (n == ad->batch_max);
	if (soonest != U64_MAX)
		*rearm = true;
}

void ad_idle_work(struct work_struct *work)
{
	struct apple_dma *ad = container_of(to_delayed_work(work), struct apple_dma, idle_work);
	bool rearm;

	ad_idle_scan(ad, &rearm);
	if (rearm)
		ad_kick_idle(ad);
}

/* Drop one user of the mapping at [bus, bus + len); lockless. */
void ad_unmap_bus(struct apple_dma *ad, u64 bus, u64 len, bool copy_back)
{
	struct ad_window *w;
	unsigned int seq;
	int tries;

	ad_add(&ad->pstats->unmap_calls, 1);
	if (ad_is_bounce(ad, bus)) {
		ad_bounce_unmap(ad, bus, copy_back);
		return;
	}
	/* Gone: every window was dropped with the host; nothing to find. */
	if (READ_ONCE(ad->gone))
		return;
	for (tries = 0; tries < 3; tries++) {
		seq = read_seqcount_begin(&ad->tree_seq);
		w = ad_lookup_bus(ad, bus, len, false);
		if (!read_seqcount_retry(&ad->tree_seq, seq))
			break;
		w = NULL;
	}
	if (!w) {
		unsigned long flags;

		/* A busy tree or a long walk: look again under the lock. */
		spin_lock_irqsave(&ad->lock, flags);
		w = ad_lookup_bus(ad, bus, len, true);
		if (w && !ad_win_put(ad, w))
			w = NULL;
		spin_unlock_irqrestore(&ad->lock, flags);
	} else if (!ad_win_put(ad, w)) {
		w = NULL;
	}
	if (!w) {
		ad_add(&ad->pstats->unknown_unmaps, 1);
		dev_warn_ratelimited(ad->dev,
				     "unmap of unknown bus range %#llx+%#llx ignored\n", bus, len);
	}
}

u64 ad_mask_limit(struct device *dev, bool coherent)
{
	u64 mask = coherent ? dev->coherent_dma_mask : dma_get_mask(dev);

	return min_not_zero(mask, dev->bus_dma_limit);
}

/* The live private window of the coherent allocation at @bus.  ad->lock held. */
struct ad_window *ad_find_private(struct apple_dma *ad, u64 bus, u64 len, phys_addr_t gpa)
{
	struct ad_window *w;

	for (w = ad_bus_tree_iter_first(&ad->bus_root, bus, bus + len - 1); w;
	     w = ad_bus_tree_iter_next(w, bus, bus + len - 1))
		if (w->kind == AD_KIND_PRIVATE && w->state == AD_WIN_LIVE &&
		    w->bus_start == bus && w->gpa_start == gpa)
			return w;
	return NULL;
}
