// SPDX-License-Identifier: MIT
/*
 * TEST MODEL of the VFIOUserPCIDriver dext and the IOKit calls that reach
 * it (see dext_model.h).  Written from shared/spec/dext-abi.md only.
 */
#include "dext_model.h"

#include <IOKit/IOKitLib.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cf_shim.h"

#define MODEL_TASK ((mach_port_t)0x103)
#define MAX_DMA_PER_CLIENT 65536u
#define MAX_DMA_BUFFER (3ull << 29) /* 1.5 GiB */
#define CONFIG_SIZE 4096u
#define IRQ_PAGE_SIZE 4096u
#define IRQ_PAGE_ENABLE 0x20u
#define MEMORY_TYPES 8
#define CHAIN 5 /* root complex, host root, bridge, function, service */

const mach_port_t kIOMainPortDefault = MACH_PORT_NULL;

mach_port_t mach_task_self(void)
{
	return MODEL_TASK;
}

enum obj_kind { OBJ_FREE = 0, OBJ_ENTRY, OBJ_ITERATOR, OBJ_CONNECT, OBJ_PORT };

struct service;

struct reg_entry {
	uint64_t id;
	char name[128];
	const char *class_name;
	struct reg_entry *parent;
	struct service *svc;
};

struct model_dma {
	uint64_t key;
	uint64_t inner_key; /* the key used with the function behind */
	void *va;
	uint64_t size;
};

struct client {
	struct client *next;
	io_connect_t handle;
	struct service *svc;
	bool claimed;
	void *dma_tree;
	unsigned ndma;
	bool wait_armed;
	mach_port_t wait_port;
	uint64_t wait_ref[kOSAsyncRef64Count];
	mach_vm_address_t mapped[MEMORY_TYPES];
	void *buffer; /* memory type 0 */
	uint64_t buffer_size;
	uint64_t buffer_key;
};

struct service {
	struct service *next;
	struct service *next_dead;
	unsigned refs; /* published + clients + entry handles + iterators */
	bool published;
	bool terminated;
	struct reg_entry chain[CHAIN];
	char user_class[64];
	struct host_device *dev;
	bool owns_dev;
	struct hd_identity ident;
	unsigned claims;
	struct client *clients;
	uint64_t next_inner_key;

	uint8_t bar_mem_index[HD_NUM_BARS];
	struct hd_bar_info bar[HD_NUM_BARS];

	bool irq_ready;
	uint64_t pending[HD_IRQ_WORDS];
	uint64_t enable[HD_IRQ_WORDS];
	uint64_t *irq_page;
	bool thread_running;
	pthread_t thread;
	int stop_pipe[2];
};

struct IONotificationPort {
	mach_port_t handle;
	dispatch_queue_t queue;
};

struct iterator {
	struct service **svcs;
	size_t count, pos;
};

struct object {
	enum obj_kind kind;
	void *ptr;
};

static pthread_mutex_t M = PTHREAD_MUTEX_INITIALIZER;
static struct object *objs;
static size_t nobjs;
static struct service *services;
static struct service *dead;
static uint64_t next_entry_id = 0x100000100ull;
static struct dext_model_stats stats;
static uint32_t fail_selector = UINT32_MAX;
static IOReturn fail_code;

/* ---- handles ---- */

static mach_port_t obj_new(enum obj_kind kind, void *ptr)
{
	for (size_t i = 0; i < nobjs; i++) {
		if (objs[i].kind == OBJ_FREE) {
			objs[i].kind = kind;
			objs[i].ptr = ptr;
			stats.objects_live++;
			return (mach_port_t)(i + 1);
		}
	}
	struct object *grown = realloc(objs, (nobjs + 16) * sizeof(*objs));

	if (!grown)
		return 0;
	memset(grown + nobjs, 0, 16 * sizeof(*objs));
	objs = grown;
	nobjs += 16;
	return obj_new(kind, ptr);
}

static void *obj_get(mach_port_t h, enum obj_kind kind)
{
	if (h == 0 || h > nobjs || objs[h - 1].kind != kind)
		return NULL;
	return objs[h - 1].ptr;
}

static void obj_drop(mach_port_t h)
{
	objs[h - 1].kind = OBJ_FREE;
	objs[h - 1].ptr = NULL;
	stats.objects_live--;
}

/* ---- services and their lifetime ---- */

static void svc_put(struct service *s)
{
	if (--s->refs)
		return;
	for (struct service **pp = &services; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	stats.services_live--;
	/* The interrupt thread needs the lock: finish the service after unlocking. */
	s->next_dead = dead;
	dead = s;
}

static void unlock(void)
{
	struct service *list = dead;

	dead = NULL;
	pthread_mutex_unlock(&M);
	while (list) {
		struct service *s = list;

		list = s->next_dead;
		if (s->thread_running) {
			char b = 0;
			ssize_t n = write(s->stop_pipe[1], &b, 1);

			(void)n;
			pthread_join(s->thread, NULL);
		}
		if (s->stop_pipe[0] >= 0) {
			close(s->stop_pipe[0]);
			close(s->stop_pipe[1]);
		}
		if (s->irq_page)
			munmap(s->irq_page, IRQ_PAGE_SIZE);
		if (s->owns_dev)
			s->dev->ops->destroy(s->dev);
		free(s);
	}
}

static void lock(void)
{
	pthread_mutex_lock(&M);
}

static IOReturn errno_to_ioreturn(int rc)
{
	switch (rc) {
	case 0: return kIOReturnSuccess;
	case -EINVAL: return kIOReturnBadArgument;
	case -EEXIST: return kIOReturnStillOpen;
	case -ENOENT: return kIOReturnNotFound;
	case -ENOSPC: return kIOReturnNoResources;
	case -ENOMEM: return kIOReturnNoMemory;
	case -EOPNOTSUPP: return kIOReturnUnsupported;
	case -EFAULT: return kIOReturnVMError;
	case -ERANGE: return kIOReturnNotAligned;
	case -EBUSY: return kIOReturnBusy;
	case -EPERM: return kIOReturnNotPermitted;
	case -EIO: return kIOReturnIOError;
	default: return kIOReturnError;
	}
}

static void page_sync(struct service *s)
{
	for (unsigned i = 0; i < HD_IRQ_WORDS; i++) {
		__atomic_store_n(&s->irq_page[i], s->pending[i], __ATOMIC_RELEASE);
		__atomic_store_n(&s->irq_page[IRQ_PAGE_ENABLE / 8 + i], s->enable[i], __ATOMIC_RELEASE);
	}
}

struct delivery {
	mach_port_t port;
	IOAsyncCallback callback;
	void *refcon;
	IOReturn result;
};

/* On the waiter's dispatch queue: a destroyed port delivers nothing. */
static void deliver(void *arg)
{
	struct delivery *d = arg;
	bool alive;

	lock();
	alive = obj_get(d->port, OBJ_PORT) != NULL;
	if (alive && d->result == kIOReturnSuccess)
		stats.waits_completed++;
	unlock();
	if (alive)
		d->callback(d->refcon, d->result, NULL, 0);
	free(d);
}

static void complete_wait(struct client *c, IOReturn result)
{
	struct IONotificationPort *port = obj_get(c->wait_port, OBJ_PORT);
	struct delivery *d;

	c->wait_armed = false;
	if (result != kIOReturnSuccess)
		stats.waits_aborted++;
	if (!port || !port->queue)
		return; /* nobody listens: the message is lost, as with a dead port */
	d = calloc(1, sizeof(*d));
	if (!d)
		return;
	d->port = c->wait_port;
	d->callback = (IOAsyncCallback)(uintptr_t)c->wait_ref[kIOAsyncCalloutFuncIndex];
	d->refcon = (void *)(uintptr_t)c->wait_ref[kIOAsyncCalloutRefconIndex];
	d->result = result;
	dispatch_async_f(port->queue, d, deliver);
}

static bool any_pending(const struct service *s)
{
	for (unsigned i = 0; i < HD_IRQ_WORDS; i++) {
		if (s->pending[i])
			return true;
	}
	return false;
}

/* Collect what the function has raised; complete waits if anything is pending. */
static void harvest(struct service *s)
{
	int fd = s->dev->ops->irq_wakeup_fd(s->dev);
	uint64_t p[HD_IRQ_WORDS] = {0};

	if (fd >= 0) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		uint64_t sink;

		while (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN)) {
			if (read(fd, &sink, sizeof(sink)) <= 0)
				break;
		}
	}
	if (s->dev->ops->irq_read_pending(s->dev, p) == 0) {
		for (unsigned i = 0; i < HD_IRQ_WORDS; i++)
			s->pending[i] |= p[i] & s->enable[i];
	}
	page_sync(s);
	if (!any_pending(s))
		return;
	for (struct client *c = s->clients; c; c = c->next) {
		if (c->wait_armed)
			complete_wait(c, kIOReturnSuccess);
	}
}

static void *irq_thread(void *arg)
{
	struct service *s = arg;

	for (;;) {
		struct pollfd pfd[2] = {
			{.fd = s->stop_pipe[0], .events = POLLIN},
			{.fd = -1, .events = POLLIN},
		};

		lock();
		pfd[1].fd = s->dev->ops->irq_wakeup_fd(s->dev);
		unlock();
		if (poll(pfd, 2, -1) < 0 && errno != EINTR)
			break;
		if (pfd[0].revents)
			break;
		if (pfd[1].revents) {
			lock();
			harvest(s);
			unlock();
		}
	}
	return NULL;
}

/* ---- publishing ---- */

static void set_entry(struct reg_entry *e, const char *name, const char *cls, struct reg_entry *parent, struct service *s)
{
	e->id = next_entry_id++;
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->class_name = cls;
	e->parent = parent;
	e->svc = s;
}

static void read_bars(struct service *s)
{
	uint8_t index = 0;

	for (unsigned i = 0; i < HD_NUM_BARS; i++) {
		if (s->dev->ops->bar_info(s->dev, i, &s->bar[i]) || !s->bar[i].size)
			memset(&s->bar[i], 0, sizeof(s->bar[i]));
		if (s->bar[i].type != HD_BAR_UNUSED)
			s->bar_mem_index[i] = index++;
	}
}

int dext_model_publish(const struct dext_model_service_config *cfg, uint64_t *service_id, char *err, size_t errlen)
{
	struct service *s;
	char fn_name[64];
	int rc;

	if (!cfg || !cfg->dev) {
		snprintf(err, errlen, "dext model: no device to publish");
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	s->stop_pipe[0] = s->stop_pipe[1] = -1;
	rc = cfg->dev->ops->identity(cfg->dev, &s->ident);
	if (rc) {
		snprintf(err, errlen, "dext model: identity: %s", host_device_error(cfg->dev));
		free(s);
		return rc;
	}
	if ((s->ident.class_code >> 16) == 0x04) {
		snprintf(err, errlen, "the dext refuses audio functions (class 0x%06x)", s->ident.class_code);
		free(s);
		return -EPERM;
	}
	if (cfg->set_location) {
		s->ident.bus = cfg->bus;
		s->ident.device = cfg->device & 0x1f;
		s->ident.function = cfg->function & 7;
	}
	s->irq_page = mmap(NULL, IRQ_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s->irq_page == MAP_FAILED) {
		snprintf(err, errlen, "dext model: cannot allocate the interrupt page");
		free(s);
		return -ENOMEM;
	}
	s->dev = cfg->dev;
	s->owns_dev = cfg->owns_dev;
	snprintf(s->user_class, sizeof(s->user_class), "%s", cfg->user_class ? cfg->user_class : "VFIOUserPCIDriver");
	snprintf(fn_name, sizeof(fn_name), "pci%x,%x", s->ident.vendor_id, s->ident.device_id);
	read_bars(s);

	lock();
	set_entry(&s->chain[0], "pcie-rc", "AppleT8xxxPCIe", NULL, s);
	set_entry(&s->chain[1], cfg->host_root ? cfg->host_root : "pcie-root0", "IOPCIDevice", &s->chain[0], s);
	set_entry(&s->chain[2], "pci-bridge", "IOPCIDevice", &s->chain[1], s);
	set_entry(&s->chain[3], fn_name, "IOPCIDevice", &s->chain[2], s);
	set_entry(&s->chain[4], "VFIOUserPCIDriver", "IOUserService", &s->chain[3], s);
	s->published = true;
	s->refs = 1;
	s->next = services;
	services = s;
	stats.services_live++;
	if (service_id)
		*service_id = s->chain[CHAIN - 1].id;
	unlock();
	return 0;
}

static struct service *find_service(uint64_t id)
{
	for (struct service *s = services; s; s = s->next) {
		if (s->chain[CHAIN - 1].id == id)
			return s;
	}
	return NULL;
}

static void unpublish(struct service *s, bool terminate)
{
	if (terminate)
		s->terminated = true;
	if (!s->published)
		return;
	s->published = false;
	svc_put(s);
}

int dext_model_unpublish(uint64_t service_id, bool terminate)
{
	struct service *s;

	lock();
	s = find_service(service_id);
	if (s)
		unpublish(s, terminate);
	unlock();
	return s ? 0 : -ENOENT;
}

void dext_model_fail_next(uint32_t selector, int kr)
{
	lock();
	fail_selector = selector;
	fail_code = kr;
	unlock();
}

static bool take_failure(uint32_t selector, IOReturn *kr)
{
	if (fail_selector != selector)
		return false;
	fail_selector = UINT32_MAX;
	*kr = fail_code;
	return true;
}

void dext_model_get_stats(struct dext_model_stats *out)
{
	lock();
	*out = stats;
	unlock();
}

int dext_model_claims(uint64_t service_id)
{
	struct service *s;
	int n;

	lock();
	s = find_service(service_id);
	n = s ? (int)s->claims : -ENOENT;
	unlock();
	return n;
}

/* ---- registry ---- */

static struct reg_entry *entry_of(io_object_t h)
{
	return obj_get(h, OBJ_ENTRY);
}

static io_object_t entry_handle(struct reg_entry *e)
{
	io_object_t h = obj_new(OBJ_ENTRY, e);

	if (h)
		e->svc->refs++;
	return h;
}

CFMutableDictionaryRef IOServiceMatching(const char *name)
{
	return name ? cf_shim_matching_create(name) : NULL;
}

kern_return_t IOServiceGetMatchingServices(mach_port_t mainPort, CFDictionaryRef matching, io_iterator_t *existing)
{
	const char *cls = cf_shim_matching_class(matching);
	struct iterator *it;
	size_t n = 0;

	(void)mainPort;
	if (!cls || !existing) {
		if (matching)
			CFRelease(matching);
		return kIOReturnBadArgument;
	}
	it = calloc(1, sizeof(*it));
	lock();
	for (struct service *s = services; s; s = s->next)
		n++;
	if (it)
		it->svcs = calloc(n ? n : 1, sizeof(*it->svcs));
	if (!it || !it->svcs) {
		unlock();
		free(it);
		CFRelease(matching);
		return kIOReturnNoMemory;
	}
	/* The model's only service class; IOService matches it as well. */
	for (struct service *s = services; s; s = s->next) {
		if (s->published && (!strcmp(cls, "IOUserService") || !strcmp(cls, "IOService"))) {
			s->refs++;
			it->svcs[it->count++] = s;
		}
	}
	*existing = obj_new(OBJ_ITERATOR, it);
	unlock();
	CFRelease(matching);
	return *existing ? kIOReturnSuccess : kIOReturnNoMemory;
}

io_object_t IOIteratorNext(io_iterator_t iterator)
{
	struct iterator *it;
	io_object_t h = 0;

	lock();
	it = obj_get(iterator, OBJ_ITERATOR);
	while (it && it->pos < it->count && !h) {
		struct service *s = it->svcs[it->pos++];

		if (s->published)
			h = entry_handle(&s->chain[CHAIN - 1]);
	}
	unlock();
	return h;
}

kern_return_t IOObjectRelease(io_object_t object)
{
	struct reg_entry *e;
	struct iterator *it;

	lock();
	if ((e = entry_of(object))) {
		obj_drop(object);
		svc_put(e->svc);
	} else if ((it = obj_get(object, OBJ_ITERATOR))) {
		obj_drop(object);
		for (size_t i = 0; i < it->count; i++)
			svc_put(it->svcs[i]);
		free(it->svcs);
		free(it);
	} else {
		unlock();
		return kIOReturnBadArgument;
	}
	unlock();
	return kIOReturnSuccess;
}

boolean_t IOObjectConformsTo(io_object_t object, const char *className)
{
	struct reg_entry *e;
	boolean_t yes = 0;

	lock();
	e = entry_of(object);
	if (e)
		yes = !strcmp(e->class_name, className) || !strcmp(className, "IOService") ||
		      !strcmp(className, "IORegistryEntry");
	unlock();
	return yes;
}

CFTypeRef IORegistryEntryCreateCFProperty(io_registry_entry_t entry, CFStringRef key, CFAllocatorRef allocator,
					  IOOptionBits options)
{
	char name[64];
	struct reg_entry *e;
	CFTypeRef value = NULL;

	(void)allocator;
	(void)options;
	if (!CFStringGetCString(key, name, sizeof(name), kCFStringEncodingUTF8))
		return NULL;
	lock();
	e = entry_of(entry);
	if (e && e == &e->svc->chain[CHAIN - 1] && !strcmp(name, "IOUserClass"))
		value = cf_shim_string_create(e->svc->user_class);
	unlock();
	return value;
}

kern_return_t IORegistryEntryGetParentEntry(io_registry_entry_t entry, const char *plane,
					    io_registry_entry_t *parent)
{
	struct reg_entry *e;
	kern_return_t kr = kIOReturnNoDevice;

	if (strcmp(plane, kIOServicePlane))
		return kIOReturnBadArgument;
	lock();
	e = entry_of(entry);
	if (!e) {
		kr = kIOReturnBadArgument;
	} else if (e->parent) {
		*parent = entry_handle(e->parent);
		kr = *parent ? kIOReturnSuccess : kIOReturnNoMemory;
	}
	unlock();
	return kr;
}

kern_return_t IORegistryEntryGetName(io_registry_entry_t entry, io_name_t name)
{
	struct reg_entry *e;

	lock();
	e = entry_of(entry);
	if (e)
		memcpy(name, e->name, sizeof(e->name));
	unlock();
	return e ? kIOReturnSuccess : kIOReturnBadArgument;
}

kern_return_t IORegistryEntryGetRegistryEntryID(io_registry_entry_t entry, uint64_t *entryID)
{
	struct reg_entry *e;

	lock();
	e = entry_of(entry);
	if (e)
		*entryID = e->id;
	unlock();
	return e ? kIOReturnSuccess : kIOReturnBadArgument;
}

/* ---- user clients ---- */

kern_return_t IOServiceOpen(io_service_t service, task_port_t owningTask, uint32_t type, io_connect_t *connect)
{
	struct reg_entry *e;
	struct client *c;
	kern_return_t kr = kIOReturnSuccess;

	lock();
	e = entry_of(service);
	if (!e || e != &e->svc->chain[CHAIN - 1] || owningTask != MODEL_TASK)
		kr = kIOReturnBadArgument;
	else if (type != 0)
		kr = kIOReturnBadArgument; /* user-client type 0 is the only one */
	else if (!e->svc->published)
		kr = kIOReturnNotAttached;
	if (kr) {
		unlock();
		return kr;
	}
	c = calloc(1, sizeof(*c));
	if (c)
		c->handle = obj_new(OBJ_CONNECT, c);
	if (!c || !c->handle) {
		free(c);
		unlock();
		return kIOReturnNoMemory;
	}
	c->svc = e->svc;
	c->svc->refs++;
	c->next = c->svc->clients;
	c->svc->clients = c;
	stats.service_opens++;
	stats.clients_live++;
	*connect = c->handle;
	unlock();
	return kIOReturnSuccess;
}

static int dma_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct model_dma *)a)->key, y = ((const struct model_dma *)b)->key;

	return x < y ? -1 : x > y;
}

static void drop_dma(struct client *c, struct model_dma *d)
{
	struct service *s = c->svc;

	s->dev->ops->dma_unregister(s->dev, d->inner_key);
	tdelete(d, &c->dma_tree, dma_cmp);
	c->ndma--;
	stats.live_dma--;
	free(d);
}

static void free_buffer(struct client *c)
{
	struct service *s = c->svc;

	s->dev->ops->dma_unregister(s->dev, c->buffer_key);
	free(c->buffer);
	c->buffer = NULL;
	c->buffer_size = 0;
}

kern_return_t IOServiceClose(io_connect_t connect)
{
	struct client *c;
	struct service *s;

	lock();
	c = obj_get(connect, OBJ_CONNECT);
	if (!c) {
		unlock();
		return kIOReturnBadArgument;
	}
	s = c->svc;
	/* The dext forgets everything the client held. */
	while (c->dma_tree)
		drop_dma(c, *(struct model_dma **)c->dma_tree);
	if (c->buffer)
		free_buffer(c);
	if (c->wait_armed)
		complete_wait(c, kIOReturnAborted);
	if (c->claimed && --s->claims == 0)
		s->dev->ops->release(s->dev);
	for (struct client **pp = &s->clients; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	obj_drop(connect);
	stats.clients_live--;
	free(c);
	svc_put(s);
	unlock();
	return kIOReturnSuccess;
}

/* ---- selectors ---- */

static const uint8_t n_in[DEXT_MODEL_SELECTORS] = {0, 0, 0, 2, 0, 3, 1, 2, 2, 3, 1, 3, 4, 0, 0, 0, 4, 0};
static const uint8_t n_out[DEXT_MODEL_SELECTORS] = {6, 0, 0, 6, 0, 3, 0, 1, 1, 0, 3, 1, 0, 1, 4, 0, 0, 0};

static int bar_of_mem_index(const struct service *s, uint64_t index)
{
	for (unsigned i = 0; i < HD_NUM_BARS; i++) {
		if (s->bar[i].type != HD_BAR_UNUSED && s->bar_mem_index[i] == index)
			return (int)i;
	}
	return -1;
}

static uint32_t synth_bar(const struct service *s, unsigned bar)
{
	/* The upper half of a 64-bit BAR reads as its address: 0. */
	if (bar > 0 && s->bar[bar - 1].type == HD_BAR_MEM64)
		return 0;
	switch (s->bar[bar].type) {
	case HD_BAR_IO: return 0x1;
	case HD_BAR_MEM32: return s->bar[bar].prefetchable ? 0x8 : 0x0;
	case HD_BAR_MEM64: return s->bar[bar].prefetchable ? 0xc : 0x4;
	default: return 0;
	}
}

static IOReturn config_read(struct service *s, uint64_t off, uint64_t width, uint64_t *out)
{
	uint32_t v;

	if ((width != 1 && width != 2 && width != 4) || off % width || off > CONFIG_SIZE - width)
		return kIOReturnBadArgument;
	if (off >= 0x10 && off < 0x28) {
		uint32_t reg = synth_bar(s, (unsigned)(off - 0x10) / 4);
		unsigned shift = 8 * (unsigned)(off % 4);

		*out = width == 4 ? reg : (reg >> shift) & ((1u << (8 * width)) - 1);
		return kIOReturnSuccess;
	}
	if (s->dev->ops->config_read(s->dev, (uint32_t)off, (unsigned)width, &v))
		return kIOReturnIOError;
	*out = v;
	return kIOReturnSuccess;
}

/* mincore fails with ENOMEM on any unmapped page of the range (and reads nothing). */
static bool mapped_in_process(uint64_t va, uint64_t size)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t at = va & ~(page - 1), end = va + size;
	unsigned char vec[1024];

	while (at < end) {
		uint64_t len = end - at < sizeof(vec) * page ? end - at : sizeof(vec) * page;

		if (mincore((void *)(uintptr_t)at, len, vec) != 0)
			return false;
		at += len;
	}
	return true;
}

static IOReturn reg_dma(struct client *c, const uint64_t *in, uint64_t *out)
{
	struct service *s = c->svc;
	struct model_dma probe = {.key = in[0]}, *d;
	uint64_t bus, len;
	int rc;

	if (!in[1] || !in[2] || in[1] > UINT64_MAX - in[2])
		return kIOReturnBadArgument;
	if (tfind(&probe, &c->dma_tree, dma_cmp))
		return kIOReturnStillOpen;
	if (c->ndma >= MAX_DMA_PER_CLIENT)
		return kIOReturnNoResources;
	if (in[2] > MAX_DMA_BUFFER)
		return kIOReturnNotAligned; /* more than one chunk: more than one bus segment */
	if (!mapped_in_process(in[1], in[2]))
		return kIOReturnVMError; /* the dext cannot wire memory the client does not have */
	d = calloc(1, sizeof(*d));
	if (!d)
		return kIOReturnNoMemory;
	d->key = in[0];
	d->inner_key = s->next_inner_key++;
	d->va = (void *)(uintptr_t)in[1];
	d->size = in[2];
	rc = s->dev->ops->dma_register(s->dev, d->inner_key, d->va, d->size, &bus, &len);
	if (rc) {
		free(d);
		return errno_to_ioreturn(rc);
	}
	if (!tsearch(d, &c->dma_tree, dma_cmp)) {
		s->dev->ops->dma_unregister(s->dev, d->inner_key);
		free(d);
		return kIOReturnNoMemory;
	}
	c->ndma++;
	stats.live_dma++;
	out[0] = 1;
	out[1] = bus;
	out[2] = len;
	return kIOReturnSuccess;
}

static IOReturn alloc_buffer(struct client *c, const uint64_t *in, uint64_t *out)
{
	struct service *s = c->svc;
	uint64_t size = (in[0] + 16383) & ~16383ull, align = in[1] < 16384 ? 16384 : in[1];
	uint64_t bus, len;
	void *p = NULL;
	int rc;

	if (c->buffer)
		return kIOReturnExclusiveAccess;
	if (!in[0] || in[0] > MAX_DMA_BUFFER || (align & (align - 1)) || align > (1u << 20))
		return kIOReturnBadArgument;
	if (posix_memalign(&p, align, size))
		return kIOReturnNoMemory;
	memset(p, 0, size);
	c->buffer_key = s->next_inner_key++;
	rc = s->dev->ops->dma_register(s->dev, c->buffer_key, p, size, &bus, &len);
	if (rc) {
		free(p);
		return errno_to_ioreturn(rc);
	}
	c->buffer = p;
	c->buffer_size = size;
	out[0] = size;
	out[1] = 0;
	out[2] = 1;
	out[3] = bus;
	out[4] = len;
	out[5] = s->ident.class_code;
	return kIOReturnSuccess;
}

static IOReturn setup_irqs(struct service *s, uint64_t *out)
{
	unsigned n = 0;
	int rc = s->dev->ops->irq_setup(s->dev, &n);

	if (rc)
		return errno_to_ioreturn(rc);
	if (!s->irq_ready) {
		if (pipe(s->stop_pipe) < 0) {
			s->stop_pipe[0] = s->stop_pipe[1] = -1;
			return kIOReturnNoResources;
		}
		if (pthread_create(&s->thread, NULL, irq_thread, s)) {
			close(s->stop_pipe[0]);
			close(s->stop_pipe[1]);
			s->stop_pipe[0] = s->stop_pipe[1] = -1;
			return kIOReturnNoResources;
		}
		s->thread_running = true;
		s->irq_ready = true;
	}
	out[0] = n > HD_MAX_VECTORS ? HD_MAX_VECTORS : n;
	return kIOReturnSuccess;
}

static IOReturn dispatch_selector(struct client *c, uint32_t sel, const uint64_t *in, uint64_t *out)
{
	struct service *s = c->svc;
	struct model_dma probe, *d;
	void **found;
	int bar, rc;

	if (sel != 0 && sel != 1 && sel != 2 && !c->claimed)
		return kIOReturnNotOpen;
	switch (sel) {
	case 0:
		out[0] = s->ident.bus;
		out[1] = s->ident.device;
		out[2] = s->ident.function;
		out[3] = s->ident.vendor_id;
		out[4] = s->ident.device_id;
		out[5] = s->ident.class_code;
		return kIOReturnSuccess;
	case 1:
		if (c->claimed)
			return kIOReturnSuccess;
		if (s->claims == 0) {
			uint32_t cmd;

			/* First claimer: open the provider, memory space + bus master on. */
			rc = s->dev->ops->claim(s->dev);
			if (!rc)
				rc = s->dev->ops->config_read(s->dev, 4, 2, &cmd);
			if (!rc)
				rc = s->dev->ops->config_write(s->dev, 4, 2, cmd | 0x6);
			if (rc)
				return errno_to_ioreturn(rc);
		}
		s->claims++;
		c->claimed = true;
		return kIOReturnSuccess;
	case 2:
		unpublish(s, true);
		return kIOReturnSuccess;
	case 3:
		return alloc_buffer(c, in, out);
	case 4:
		if (!c->buffer)
			return kIOReturnNotFound;
		if (c->mapped[0])
			return kIOReturnBusy;
		free_buffer(c);
		return kIOReturnSuccess;
	case 5:
		return reg_dma(c, in, out);
	case 6:
	case 7:
		probe.key = in[0];
		found = tfind(&probe, &c->dma_tree, dma_cmp);
		if (!found)
			return kIOReturnNotFound;
		d = *found;
		if (sel == 6) {
			drop_dma(c, d);
			return kIOReturnSuccess;
		}
		if (in[1] > d->size || d->size - in[1] < 8)
			return kIOReturnBadArgument;
		memcpy(&out[0], (const uint8_t *)d->va + in[1], 8);
		return kIOReturnSuccess;
	case 8:
		return config_read(s, in[0], in[1], out);
	case 9:
		if ((in[1] != 1 && in[1] != 2 && in[1] != 4) || in[0] % in[1] || in[0] > CONFIG_SIZE - in[1])
			return kIOReturnBadArgument;
		rc = s->dev->ops->config_write(s->dev, (uint32_t)in[0], (unsigned)in[1], (uint32_t)in[2]);
		return rc ? kIOReturnIOError : kIOReturnSuccess;
	case 10:
		if (in[0] >= HD_NUM_BARS)
			return kIOReturnBadArgument;
		if (s->bar[in[0]].type == HD_BAR_UNUSED)
			return kIOReturnNotFound;
		out[0] = s->bar_mem_index[in[0]];
		out[1] = s->bar[in[0]].size;
		out[2] = synth_bar(s, (unsigned)in[0]);
		return kIOReturnSuccess;
	case 11:
	case 12:
		bar = bar_of_mem_index(s, in[0]);
		if (bar < 0 || (in[2] != 1 && in[2] != 2 && in[2] != 4 && in[2] != 8) || in[1] % in[2] ||
		    in[2] > s->bar[bar].size || in[1] > s->bar[bar].size - in[2])
			return kIOReturnBadArgument;
		if (sel == 11)
			rc = s->dev->ops->mmio_read(s->dev, (unsigned)bar, in[1], (unsigned)in[2], &out[0]);
		else
			rc = s->dev->ops->mmio_write(s->dev, (unsigned)bar, in[1], (unsigned)in[2], in[3]);
		return rc ? kIOReturnIOError : kIOReturnSuccess;
	case 13:
		return setup_irqs(s, out);
	case 14:
		if (!s->irq_ready)
			return kIOReturnNotReady;
		harvest(s);
		for (unsigned i = 0; i < HD_IRQ_WORDS; i++) {
			out[i] = s->pending[i];
			s->pending[i] = 0;
		}
		page_sync(s);
		return kIOReturnSuccess;
	case 16:
		if (!s->irq_ready)
			return kIOReturnNotReady;
		rc = s->dev->ops->irq_set_mask(s->dev, in);
		if (rc)
			return errno_to_ioreturn(rc);
		memcpy(s->enable, in, sizeof(s->enable));
		page_sync(s);
		return kIOReturnSuccess;
	case 17:
		rc = s->dev->ops->reset(s->dev);
		return errno_to_ioreturn(rc);
	default:
		return kIOReturnBadArgument; /* 15 is asynchronous only */
	}
}

static IOReturn begin_call(io_connect_t connection, uint32_t selector, const uint64_t *input, uint32_t inputCnt,
			   const uint32_t *outputCnt, struct client **out_client)
{
	struct client *c = obj_get(connection, OBJ_CONNECT);
	IOReturn kr;

	if (!c)
		return kIOReturnBadArgument; /* MACH_SEND_INVALID_DEST on macOS */
	if (selector >= DEXT_MODEL_SELECTORS)
		return kIOReturnBadArgument;
	stats.calls[selector]++;
	if (take_failure(selector, &kr))
		return kr;
	if (c->svc->terminated)
		return kIOReturnNotAttached;
	if (inputCnt != n_in[selector] || (n_in[selector] && !input))
		return kIOReturnBadArgument;
	if (n_out[selector] && (!outputCnt || *outputCnt < n_out[selector]))
		return kIOReturnBadArgument;
	*out_client = c;
	return kIOReturnSuccess;
}

kern_return_t IOConnectCallScalarMethod(mach_port_t connection, uint32_t selector, const uint64_t *input,
					uint32_t inputCnt, uint64_t *output, uint32_t *outputCnt)
{
	struct client *c = NULL;
	uint64_t out[6] = {0};
	IOReturn kr;

	lock();
	kr = begin_call(connection, selector, input, inputCnt, outputCnt, &c);
	if (!kr && selector == 15)
		kr = kIOReturnBadArgument;
	if (!kr)
		kr = dispatch_selector(c, selector, input, out);
	if (!kr && n_out[selector]) {
		memcpy(output, out, n_out[selector] * sizeof(uint64_t));
		*outputCnt = n_out[selector];
	} else if (outputCnt) {
		*outputCnt = 0;
	}
	unlock();
	return kr;
}

kern_return_t IOConnectCallAsyncMethod(mach_port_t connection, uint32_t selector, mach_port_t wake_port,
				       uint64_t *reference, uint32_t referenceCnt, const uint64_t *input,
				       uint32_t inputCnt, const void *inputStruct, size_t inputStructCnt,
				       uint64_t *output, uint32_t *outputCnt, void *outputStruct,
				       size_t *outputStructCnt)
{
	struct client *c = NULL;
	IOReturn kr;

	(void)output;
	(void)outputStruct;
	(void)outputStructCnt;
	lock();
	kr = begin_call(connection, selector, input, inputCnt, outputCnt, &c);
	if (!kr && (selector != 15 || inputStruct || inputStructCnt || !reference ||
		    referenceCnt <= kIOAsyncCalloutRefconIndex || !obj_get(wake_port, OBJ_PORT)))
		kr = kIOReturnBadArgument;
	if (!kr && !c->claimed)
		kr = kIOReturnNotOpen;
	else if (!kr && !c->svc->irq_ready)
		kr = kIOReturnNotReady;
	else if (!kr && c->wait_armed)
		kr = kIOReturnExclusiveAccess; /* one wait at a time per client */
	if (!kr) {
		c->wait_armed = true;
		c->wait_port = wake_port;
		memset(c->wait_ref, 0, sizeof(c->wait_ref));
		memcpy(c->wait_ref, reference,
		       (referenceCnt < kOSAsyncRef64Count ? referenceCnt : kOSAsyncRef64Count) * sizeof(uint64_t));
		stats.waits_armed++;
		/* Completes at once if something is already pending. */
		harvest(c->svc);
	}
	if (outputCnt)
		*outputCnt = 0;
	unlock();
	return kr;
}

/* ---- memory ---- */

kern_return_t IOConnectMapMemory64(io_connect_t connect, uint32_t memoryType, task_port_t intoTask,
				   mach_vm_address_t *atAddress, mach_vm_size_t *ofSize, IOOptionBits options)
{
	struct client *c;
	struct service *s;
	volatile void *p = NULL;
	uint64_t size = 0;
	IOReturn kr = kIOReturnSuccess;
	IOOptionBits cache = options & kIOMapCacheMask;

	lock();
	c = obj_get(connect, OBJ_CONNECT);
	if (!c || intoTask != MODEL_TASK || !atAddress || !ofSize || memoryType >= MEMORY_TYPES) {
		unlock();
		return kIOReturnBadArgument;
	}
	s = c->svc;
	stats.maps++;
	stats.last_map_type = memoryType;
	stats.last_map_options = options;
	if (take_failure(100 + memoryType, &kr)) {
		unlock();
		return kr;
	}
	if (s->terminated)
		kr = kIOReturnNotAttached;
	else if (!(options & kIOMapAnywhere))
		kr = kIOReturnBadArgument; /* the model maps only where it likes */
	else if (c->mapped[memoryType])
		kr = kIOReturnExclusiveAccess;
	else if (memoryType == 0) {
		if (!c->buffer)
			kr = kIOReturnNotFound;
		p = c->buffer;
		size = c->buffer_size;
	} else if (memoryType == 7) {
		p = s->irq_page;
		size = IRQ_PAGE_SIZE;
	} else {
		unsigned bar = memoryType - 1;
		int rc;

		if (!c->claimed)
			kr = kIOReturnNotOpen;
		else if (s->bar[bar].type == HD_BAR_UNUSED || s->bar[bar].type == HD_BAR_IO)
			kr = kIOReturnBadArgument;
		/* Stricter than a dext need be: write-combining only where prefetchable. */
		else if (cache != kIOMapDefaultCache && cache != kIOMapInhibitCache &&
			 !(cache == kIOMapWriteCombineCache && s->bar[bar].prefetchable))
			kr = kIOReturnBadArgument;
		else if ((rc = s->dev->ops->bar_map(s->dev, bar, &p)) != 0)
			kr = errno_to_ioreturn(rc);
		size = s->bar[bar].size;
	}
	if (!kr) {
		c->mapped[memoryType] = (mach_vm_address_t)(uintptr_t)p;
		*atAddress = c->mapped[memoryType];
		*ofSize = size;
	}
	unlock();
	return kr;
}

kern_return_t IOConnectUnmapMemory64(io_connect_t connect, uint32_t memoryType, task_port_t fromTask,
				     mach_vm_address_t atAddress)
{
	struct client *c;
	IOReturn kr = kIOReturnSuccess;

	lock();
	c = obj_get(connect, OBJ_CONNECT);
	if (!c || fromTask != MODEL_TASK || memoryType >= MEMORY_TYPES || !atAddress ||
	    c->mapped[memoryType] != atAddress)
		kr = kIOReturnBadArgument;
	else
		c->mapped[memoryType] = 0;
	unlock();
	return kr;
}

/* ---- notification ports ---- */

IONotificationPortRef IONotificationPortCreate(mach_port_t mainPort)
{
	struct IONotificationPort *p = calloc(1, sizeof(*p));

	(void)mainPort;
	if (!p)
		return NULL;
	lock();
	p->handle = obj_new(OBJ_PORT, p);
	if (p->handle) {
		stats.ports_created++;
		stats.ports_live++;
	}
	unlock();
	if (!p->handle) {
		free(p);
		return NULL;
	}
	return p;
}

void IONotificationPortDestroy(IONotificationPortRef notify)
{
	lock();
	obj_drop(notify->handle);
	stats.ports_live--;
	unlock();
	free(notify);
}

mach_port_t IONotificationPortGetMachPort(IONotificationPortRef notify)
{
	return notify->handle;
}

void IONotificationPortSetDispatchQueue(IONotificationPortRef notify, dispatch_queue_t queue)
{
	lock();
	notify->queue = queue;
	unlock();
}
