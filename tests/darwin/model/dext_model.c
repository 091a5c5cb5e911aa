// SPDX-License-Identifier: MIT
/*
 * TEST MODEL of the VFIOUserPCIDriver dext and the IOKit calls that reach
 * it (see dext_model.h).  Written from shared/spec/dext-abi.md, then
 * corrected against facts read in the dext's published source (never
 * copied): per-client interrupt state on a 16 KiB page with the enable mask
 * starting all ones, SetupInterrupts refusing a second call, a second
 * WaitInterrupt silently replacing the first, waits released without a
 * completion when the client stops, completions without arguments, no byte
 * cap on registrations (chunks of 1.5 GiB, only the first chunk's bus range
 * returned), the client's own cache mode for BAR mappings.
 */
#include "dext_model.h"

#include <IOKit/IOKitLib.h>
#include <IOKit/IOMessage.h>

#include <errno.h>
#include <inttypes.h>
#include <mach/mach_vm.h>
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
#define DMA_CHUNK (3ull << 29)      /* the dext splits registrations into 1.5 GiB chunks */
#define MAX_DMA_CHUNKS 128u         /* ... and refuses more than 128 of them */
#define DART_MAX_BYTES (3ull << 29)  /* what the model's DART holds before it "panics" */
#define DART_MAX_MAPPINGS 65536u
#define CONFIG_SIZE 4096u
#define IRQ_PAGE_SIZE 16384u /* the dext's IOBufferMemoryDescriptor for memory type 7 */
#define IRQ_PAGE_ENABLE 0x20u
#define MEMORY_TYPES 8
#define CHAIN 5 /* root complex, host root, bridge, function, service */

const mach_port_t kIOMainPortDefault = MACH_PORT_NULL;

mach_port_t mach_task_self(void)
{
	return MODEL_TASK;
}

enum obj_kind { OBJ_FREE = 0, OBJ_ENTRY, OBJ_ITERATOR, OBJ_CONNECT, OBJ_PORT, OBJ_NOTIFY };

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
	uint64_t inner_key; /* the first chunk's key with the function behind; chunk i uses inner_key + i */
	unsigned chunks;
	void *va;
	uint64_t size;
	uint8_t *copy; /* copy-on-write simulation: the device's private copy of the pages */
};

/* An interest notification (IOServiceAddInterestNotification). */
struct notify {
	struct notify *next;
	struct service *svc;
	io_object_t handle;
	uint64_t serial;
	mach_port_t port;
	IOServiceInterestCallback callback;
	void *refcon;
};

struct client {
	struct client *next;
	io_connect_t handle;
	struct service *svc;
	bool claimed;
	void *dma_tree;
	unsigned ndma;
	/* Interrupt state is per client in the dext (SetupInterrupts on this client). */
	bool irq_ready;
	uint64_t pending[HD_IRQ_WORDS];
	uint64_t enable[HD_IRQ_WORDS];
	uint64_t *irq_page; /* memory type 7: pending words at 0x00, enable words at 0x20 */
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
	bool crashed; /* the dext process died: calls fail with MIG_SERVER_DIED */
	IOReturn device_error; /* dext_model_device_lost(): every call that reaches the device fails with it */
	bool hide_pci_properties;
	bool cow;
	uint64_t dart_max_bytes;
	uint64_t dart_bytes, dart_mappings; /* the DART's occupancy over every client */
	struct notify *notifies;
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

	bool dev_irq_ready; /* the function's interrupts set up (once, all vectors enabled) */
	unsigned nvectors;
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
static uint64_t next_notify_serial = 1;

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
	case -ENODEV: return kIOReturnNoDevice; /* the function behind it is gone (the sim vanished) */
	default: return kIOReturnError;
	}
}

static void page_sync(struct client *c)
{
	if (!c->irq_page)
		return;
	for (unsigned i = 0; i < HD_IRQ_WORDS; i++) {
		__atomic_store_n(&c->irq_page[i], c->pending[i], __ATOMIC_RELEASE);
		__atomic_store_n(&c->irq_page[IRQ_PAGE_ENABLE / 8 + i], c->enable[i], __ATOMIC_RELEASE);
	}
}

struct delivery {
	mach_port_t port;
	IOAsyncCallback0 callback;
	void *refcon;
	IOReturn result;
};

/*
 * On the waiter's dispatch queue: a destroyed port delivers nothing.  The
 * dext completes with AsyncCompletion(action, result, nullptr, 0): no
 * arguments, so IOKitLib calls the IOAsyncCallback0 shape.
 */
static void deliver(void *arg)
{
	struct delivery *d = arg;
	bool alive;

	lock();
	alive = obj_get(d->port, OBJ_PORT) != NULL;
	if (alive)
		stats.waits_completed++;
	unlock();
	if (alive)
		d->callback(d->refcon, d->result);
	free(d);
}

static void complete_wait(struct client *c)
{
	struct IONotificationPort *port = obj_get(c->wait_port, OBJ_PORT);
	struct delivery *d;

	c->wait_armed = false;
	if (!port || !port->queue)
		return; /* nobody listens: the message is lost, as with a dead port */
	d = calloc(1, sizeof(*d));
	if (!d)
		return;
	d->port = c->wait_port;
	d->callback = (IOAsyncCallback0)(uintptr_t)c->wait_ref[kIOAsyncCalloutFuncIndex];
	d->refcon = (void *)(uintptr_t)c->wait_ref[kIOAsyncCalloutRefconIndex];
	d->result = kIOReturnSuccess; /* the dext never completes a wait with anything else */
	dispatch_async_f(port->queue, d, deliver);
}

/* The dext releases a pending wait without completing it: nothing is ever delivered. */
static void drop_wait(struct client *c)
{
	if (!c->wait_armed)
		return;
	c->wait_armed = false;
	stats.waits_dropped++;
}

static bool any_pending(const struct client *c)
{
	for (unsigned i = 0; i < HD_IRQ_WORDS; i++) {
		if (c->pending[i])
			return true;
	}
	return false;
}

/*
 * Collect what the function has raised and hand it to every client with
 * interrupts set up, through that client's enable mask (a vector that fires
 * while disabled is dropped, as in the dext's InterruptOccurred); complete
 * the waits of clients with anything pending.
 */
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
	if (s->dev->ops->irq_read_pending(s->dev, p) != 0)
		memset(p, 0, sizeof(p));
	for (struct client *c = s->clients; c; c = c->next) {
		if (!c->irq_ready)
			continue;
		for (unsigned i = 0; i < HD_IRQ_WORDS; i++)
			c->pending[i] |= p[i] & c->enable[i];
		page_sync(c);
		if (c->wait_armed && any_pending(c))
			complete_wait(c);
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
	s->dev = cfg->dev;
	s->hide_pci_properties = cfg->hide_pci_properties;
	s->cow = cfg->copy_on_write;
	s->dart_max_bytes = cfg->dart_max_bytes ? cfg->dart_max_bytes : DART_MAX_BYTES;
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

struct interest_delivery {
	io_object_t handle;
	uint64_t serial;
	mach_port_t port;
	IOServiceInterestCallback callback;
	void *refcon;
};

/* On the notification port's queue: a released notification or a destroyed port delivers nothing. */
static void deliver_interest(void *arg)
{
	struct interest_delivery *d = arg;
	struct notify *n;
	bool alive;

	lock();
	n = obj_get(d->handle, OBJ_NOTIFY);
	alive = n && n->serial == d->serial && obj_get(d->port, OBJ_PORT);
	unlock();
	if (alive)
		d->callback(d->refcon, MACH_PORT_NULL, kIOMessageServiceIsTerminated, NULL);
	free(d);
}

/*
 * The service terminates: its user clients stop (pending waits are released
 * without a completion) and every interest notification is sent
 * kIOMessageServiceIsTerminated.
 */
static void terminate(struct service *s)
{
	if (s->terminated)
		return;
	s->terminated = true;
	for (struct client *c = s->clients; c; c = c->next)
		drop_wait(c);
	for (struct notify *n = s->notifies; n; n = n->next) {
		struct IONotificationPort *port = obj_get(n->port, OBJ_PORT);
		struct interest_delivery *d;

		if (!port || !port->queue || !(d = calloc(1, sizeof(*d))))
			continue;
		d->handle = n->handle;
		d->serial = n->serial;
		d->port = n->port;
		d->callback = n->callback;
		d->refcon = n->refcon;
		stats.interest_sent++;
		dispatch_async_f(port->queue, d, deliver_interest);
	}
}

static void unpublish(struct service *s, bool term)
{
	if (term)
		terminate(s);
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

int dext_model_crash(uint64_t service_id)
{
	struct service *s;

	lock();
	s = find_service(service_id);
	if (s) {
		s->crashed = true;
		unpublish(s, true);
	}
	unlock();
	return s ? 0 : -ENOENT;
}

int dext_model_device_lost(uint64_t service_id, int kr)
{
	struct service *s;

	lock();
	s = find_service(service_id);
	if (s)
		s->device_error = kr;
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
	struct notify *n;

	lock();
	if ((e = entry_of(object))) {
		obj_drop(object);
		svc_put(e->svc);
	} else if ((n = obj_get(object, OBJ_NOTIFY))) {
		struct service *s = n->svc;

		for (struct notify **pp = &s->notifies; *pp; pp = &(*pp)->next) {
			if (*pp == n) {
				*pp = n->next;
				break;
			}
		}
		obj_drop(object);
		free(n);
		svc_put(s);
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
	if (e && e == &e->svc->chain[CHAIN - 1] && !strcmp(name, "IOUserClass")) {
		value = cf_shim_string_create(e->svc->user_class);
	} else if (e && e == &e->svc->chain[CHAIN - 2] && !e->svc->hide_pci_properties) {
		/* What IOPCIFamily publishes on an IOPCIDevice: 4-byte little-endian data, and "bus:device:function". */
		const struct hd_identity *id = &e->svc->ident;
		uint32_t word = 0;
		bool data = true;

		if (!strcmp(name, "vendor-id"))
			word = id->vendor_id;
		else if (!strcmp(name, "device-id"))
			word = id->device_id;
		else if (!strcmp(name, "class-code"))
			word = id->class_code;
		else
			data = false;
		if (data) {
			uint8_t le[4] = {(uint8_t)word, (uint8_t)(word >> 8), (uint8_t)(word >> 16), (uint8_t)(word >> 24)};

			value = cf_shim_data_create(le, sizeof(le));
		} else if (!strcmp(name, "pcidebug")) {
			char text[32];

			snprintf(text, sizeof(text), "%u:%u:%u", id->bus, id->device, id->function);
			value = cf_shim_string_create(text);
		}
	}
	unlock();
	return value;
}

kern_return_t IOServiceAddInterestNotification(IONotificationPortRef notifyPort, io_service_t service,
					       const char *interestType, IOServiceInterestCallback callback,
					       void *refCon, io_object_t *notification)
{
	struct reg_entry *e;
	struct notify *n;
	kern_return_t kr = kIOReturnSuccess;

	if (!notifyPort || !interestType || strcmp(interestType, kIOGeneralInterest) || !callback || !notification)
		return kIOReturnBadArgument;
	lock();
	e = entry_of(service);
	if (!e || e != &e->svc->chain[CHAIN - 1] || !obj_get(notifyPort->handle, OBJ_PORT)) {
		kr = kIOReturnBadArgument;
	} else if (e->svc->terminated) {
		kr = kIOReturnNotAttached;
	} else if (!(n = calloc(1, sizeof(*n))) || !(n->handle = obj_new(OBJ_NOTIFY, n))) {
		free(n);
		kr = kIOReturnNoMemory;
	} else {
		n->svc = e->svc;
		n->serial = next_notify_serial++;
		n->port = notifyPort->handle;
		n->callback = callback;
		n->refcon = refCon;
		n->next = e->svc->notifies;
		e->svc->notifies = n;
		e->svc->refs++;
		*notification = n->handle;
	}
	unlock();
	return kr;
}

/*
 * Linux: the protection of the region containing (or following) *address,
 * from /proc/self/maps.
 */
kern_return_t mach_vm_region(mach_port_t target_task, mach_vm_address_t *address, mach_vm_size_t *size,
			     vm_region_flavor_t flavor, vm_region_info_t info, mach_msg_type_number_t *infoCnt,
			     mach_port_t *object_name)
{
	struct vm_region_basic_info_64 *bi = (struct vm_region_basic_info_64 *)(void *)info;
	FILE *maps;
	char line[512];
	kern_return_t kr = KERN_INVALID_ADDRESS;

	if (target_task != MODEL_TASK || flavor != VM_REGION_BASIC_INFO_64 || !address || !size || !info ||
	    !infoCnt || *infoCnt < VM_REGION_BASIC_INFO_COUNT_64)
		return kIOReturnBadArgument;
	maps = fopen("/proc/self/maps", "re");
	if (!maps)
		return kIOReturnError;
	while (fgets(line, sizeof(line), maps)) {
		uint64_t start, end;
		char perms[5];

		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s", &start, &end, perms) != 3 || end <= *address)
			continue;
		memset(bi, 0, sizeof(*bi));
		bi->protection = (perms[0] == 'r' ? VM_PROT_READ : 0) | (perms[1] == 'w' ? VM_PROT_WRITE : 0) |
				 (perms[2] == 'x' ? VM_PROT_EXECUTE : 0);
		bi->max_protection = bi->protection;
		bi->shared = perms[3] == 's';
		*address = start;
		*size = end - start;
		*infoCnt = VM_REGION_BASIC_INFO_COUNT_64;
		if (object_name)
			*object_name = MACH_PORT_NULL;
		kr = KERN_SUCCESS;
		break;
	}
	fclose(maps);
	return kr;
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
		kr = kIOReturnUnsupported; /* NewUserClient: type 0 is the only one */
	else if (!e->svc->published)
		kr = kIOReturnNotAttached;
	else
		take_failure(DEXT_MODEL_FAIL_OPEN, &kr);
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

static uint64_t chunk_size(const struct model_dma *d, unsigned i)
{
	uint64_t off = (uint64_t)i * DMA_CHUNK;

	return d->size - off < DMA_CHUNK ? d->size - off : DMA_CHUNK;
}

/* Undo the first n chunks of a registration in the function and the DART. */
static void unregister_chunks(struct service *s, struct model_dma *d, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		s->dev->ops->dma_unregister(s->dev, d->inner_key + i);
		s->dart_bytes -= chunk_size(d, i);
		s->dart_mappings--;
	}
}

static void drop_dma(struct client *c, struct model_dma *d)
{
	struct service *s = c->svc;

	unregister_chunks(s, d, d->chunks);
	tdelete(d, &c->dma_tree, dma_cmp);
	c->ndma--;
	stats.live_dma--;
	free(d->copy);
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
	/* The user client's Stop releases the pending wait without completing it. */
	drop_wait(c);
	if (c->irq_page)
		munmap(c->irq_page, IRQ_PAGE_SIZE);
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

/*
 * RegisterDMARegion as the dext does it: no cap on bytes, the region split
 * into chunks of 1.5 GiB (at most 128), each chunk one bus segment, and only
 * the first chunk's bus address and length returned.  What the dext leaves
 * to the DART (and so to luck) the model checks: a chunk beyond the DART's
 * capacity is counted as an overcommit (a host panic on a Mac) and fails.
 */
static IOReturn reg_dma(struct client *c, const uint64_t *in, uint64_t *out)
{
	struct service *s = c->svc;
	struct model_dma probe = {.key = in[0]}, *d;
	uint64_t bus, len, nchunks;
	unsigned done = 0;
	IOReturn kr = kIOReturnSuccess;
	int rc;

	if (!in[1] || !in[2] || in[1] > UINT64_MAX - in[2])
		return kIOReturnBadArgument;
	if (tfind(&probe, &c->dma_tree, dma_cmp))
		return kIOReturnStillOpen;
	if (c->ndma >= MAX_DMA_PER_CLIENT)
		return kIOReturnNoSpace;
	nchunks = (in[2] + DMA_CHUNK - 1) / DMA_CHUNK;
	if (nchunks > MAX_DMA_CHUNKS)
		return kIOReturnNoSpace;
	if (!mapped_in_process(in[1], in[2]))
		return kIOReturnVMError; /* the dext cannot wire memory the client does not have */
	d = calloc(1, sizeof(*d));
	if (!d)
		return kIOReturnNoMemory;
	d->key = in[0];
	d->va = (void *)(uintptr_t)in[1];
	d->size = in[2];
	d->chunks = (unsigned)nchunks;
	d->inner_key = s->next_inner_key;
	s->next_inner_key += nchunks;
	if (s->cow) {
		/* Copy-on-write: the device keeps the pages as they are now; the client's later writes go elsewhere. */
		d->copy = malloc(d->size);
		if (!d->copy) {
			free(d);
			return kIOReturnNoMemory;
		}
		memcpy(d->copy, d->va, d->size);
	}
	for (; done < d->chunks; done++) {
		uint64_t off = (uint64_t)done * DMA_CHUNK, size = chunk_size(d, done);
		uint8_t *at = (d->copy ? d->copy : (uint8_t *)d->va) + off;

		if (size > s->dart_max_bytes - s->dart_bytes || s->dart_mappings >= DART_MAX_MAPPINGS) {
			stats.dart_overcommits++;
			kr = kIOReturnNoResources;
			break;
		}
		rc = s->dev->ops->dma_register(s->dev, d->inner_key + done, at, size, &bus, &len);
		if (rc) {
			kr = errno_to_ioreturn(rc);
			break;
		}
		if (len != size) {
			s->dev->ops->dma_unregister(s->dev, d->inner_key + done);
			kr = kIOReturnNotAligned; /* the chunk did not resolve to one full-length segment */
			break;
		}
		s->dart_bytes += size;
		s->dart_mappings++;
		if (done == 0) {
			out[1] = bus;
			out[2] = len;
		}
	}
	if (!kr && !tsearch(d, &c->dma_tree, dma_cmp))
		kr = kIOReturnNoMemory;
	if (kr) {
		unregister_chunks(s, d, done);
		free(d->copy);
		free(d);
		return kr;
	}
	c->ndma++;
	stats.live_dma++;
	out[0] = 1;
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

/*
 * SetupInterrupts, per client: a second call on the same client fails with
 * kIOReturnStillOpen; the client's 16 KiB state page is created here, with
 * the enable mask all ones.  The function's vectors are set up (and left
 * enabled at the function: masking is the dext's) once per service.
 */
static IOReturn setup_irqs(struct client *c, uint64_t *out)
{
	struct service *s = c->svc;
	uint64_t all[HD_IRQ_WORDS];
	void *page;
	int rc;

	if (c->irq_ready)
		return kIOReturnStillOpen;
	if (!s->dev_irq_ready) {
		unsigned n = 0;

		memset(all, 0xff, sizeof(all));
		rc = s->dev->ops->irq_setup(s->dev, &n);
		if (!rc)
			rc = s->dev->ops->irq_set_mask(s->dev, all);
		if (rc)
			return errno_to_ioreturn(rc);
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
		s->dev_irq_ready = true;
		s->nvectors = n > HD_MAX_VECTORS ? HD_MAX_VECTORS : n;
	}
	page = mmap(NULL, IRQ_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		return kIOReturnNoMemory;
	c->irq_page = page;
	memset(c->pending, 0, sizeof(c->pending));
	memset(c->enable, 0xff, sizeof(c->enable));
	c->irq_ready = true;
	page_sync(c);
	out[0] = s->nvectors;
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
			return kIOReturnOverrun;
		/* Read through the descriptor: what the device sees (the private copy when copy-on-write). */
		memcpy(&out[0], (d->copy ? d->copy : (const uint8_t *)d->va) + in[1], 8);
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
		/*
		 * PCIDriverKit's GetBARInfo fails for an unused BAR or the upper
		 * half of a 64-bit one and the dext passes its code through; the
		 * code is undocumented, so the model picks a plain kIOReturnError.
		 */
		if (s->bar[in[0]].type == HD_BAR_UNUSED)
			return kIOReturnError;
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
		return setup_irqs(c, out);
	case 14:
		if (!c->irq_ready)
			return kIOReturnNotReady;
		harvest(s);
		for (unsigned i = 0; i < HD_IRQ_WORDS; i++) {
			out[i] = c->pending[i];
			c->pending[i] = 0;
		}
		page_sync(c);
		return kIOReturnSuccess;
	case 16:
		if (!c->irq_ready)
			return kIOReturnNotReady;
		memcpy(c->enable, in, sizeof(c->enable));
		page_sync(c);
		return kIOReturnSuccess;
	case 17:
		rc = s->dev->ops->reset(s->dev);
		return errno_to_ioreturn(rc);
	default:
		return kIOReturnBadArgument; /* 15 without a completion */
	}
}

static IOReturn begin_call(io_connect_t connection, uint32_t selector, const uint64_t *input, uint32_t inputCnt,
			   const uint32_t *outputCnt, struct client **out_client)
{
	struct client *c = obj_get(connection, OBJ_CONNECT);
	IOReturn kr;

	if (!c)
		return MACH_SEND_INVALID_DEST; /* no such port right */
	if (c->svc->crashed)
		return MIG_SERVER_DIED;
	if (selector >= DEXT_MODEL_SELECTORS)
		return kIOReturnUnsupported; /* the dext's ExternalMethod default */
	stats.calls[selector]++;
	if (take_failure(selector, &kr))
		return kr;
	if (c->svc->terminated)
		return kIOReturnNotAttached;
	/* A device that fell off the bus: the dext's own bookkeeping (Unregister) still works. */
	if (c->svc->device_error && selector != 6 && selector != 4 && selector != 2)
		return c->svc->device_error;
	/* The function behind it is gone (a vanished sim): PCIDriverKit sees no device. */
	if (!host_device_present(c->svc->dev) && selector != 6 && selector != 4 && selector != 2)
		return kIOReturnNoDevice;
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
	if (!kr && !c->irq_ready)
		kr = kIOReturnNotReady;
	if (!kr) {
		/* A second wait replaces the first, which is released without a completion. */
		if (c->wait_armed)
			stats.waits_replaced++;
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
	if (s->crashed)
		kr = MIG_SERVER_DIED;
	else if (s->terminated)
		kr = kIOReturnNotAttached;
	else if (!(options & kIOMapAnywhere))
		kr = kIOReturnBadArgument; /* the model maps only where it likes */
	else if (c->mapped[memoryType])
		kr = kIOReturnExclusiveAccess;
	else if (memoryType == 0) {
		if (!c->buffer)
			kr = kIOReturnNotReady;
		p = c->buffer;
		size = c->buffer_size;
	} else if (memoryType == 7) {
		if (!c->irq_page)
			kr = kIOReturnNotReady; /* created by SetupInterrupts */
		p = c->irq_page;
		size = IRQ_PAGE_SIZE;
	} else {
		unsigned bar = memoryType - 1;
		int rc;

		if (!c->claimed)
			kr = kIOReturnNotOpen;
		else if (s->bar[bar].type == HD_BAR_UNUSED || s->bar[bar].type == HD_BAR_IO)
			kr = kIOReturnBadArgument;
		/* The dext returns options 0: the client's cache mode is used, whatever it is. */
		else if (cache != kIOMapDefaultCache && cache != kIOMapInhibitCache && cache != kIOMapWriteThruCache &&
			 cache != kIOMapCopybackCache && cache != kIOMapWriteCombineCache)
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
