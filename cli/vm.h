/* SPDX-License-Identifier: MIT */
/*
 * The VM that `vfio-apple run -- QEMU-ARGUMENTS` supervises: QEMU, the
 * devices in its PCIe slots (launch.h: one slot per device, companion at
 * function 0, managed function at function 1), one broker per device in
 * vfio-user mode, and the launcher's socket DIR/run.sock through which
 * `vfio-apple attach`, `detach` and `status` reach it.
 *
 * One broker per device, not one broker serving several: each broker
 * already is one function with its DART and its companion, a fault in one
 * cannot reach the others, and a pulled device ends only its own broker's
 * part, as on a Mac, where each function is its own dext client.
 *
 * A device's life:
 *   attached   in the VM;
 *   unplugging device_del sent, QEMU (and the guest) letting go;
 *   removed    its host device vanished and the slot was unplugged; the
 *              broker stays, so that `attach ID` brings it back once the
 *              device is present again (docs: README, "Unplugging").
 * `detach ID` unplugs an attached device, then stops its broker.
 */
#ifndef VFA_CLI_VM_H
#define VFA_CLI_VM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "launch.h"

/* The launcher's socket (in the socket directory), its one-line requests. */
#define VM_SOCKET_NAME "run.sock"
#define VM_QMP_NAME "run-qmp.sock"
#define VM_REQUEST_MAX 1024
/* How long a detach waits for the guest to let go of a slot. */
#define VM_UNPLUG_TIMEOUT_MS 60000

enum vm_dev_state {
	VM_DEV_FREE = 0,
	VM_DEV_ATTACHED,
	VM_DEV_UNPLUGGING,
	VM_DEV_REMOVED,
};

struct vm_dev {
	enum vm_dev_state state;
	char id[16];        /* vfa<N>: the function's QEMU id */
	char spec[512];
	struct socket_paths sockets; /* vfio-user: DIR/<id>/ */
	struct child broker;
	bool present;       /* the host device, as its broker last said */
	char removal[256];  /* why it went, while !present */
	bool detaching;     /* unplugging for `detach` (else: pulled) */
	bool stuck;         /* removed, but QEMU cannot unplug it: it keeps its slot */
	int waiter_fd;      /* a `detach` waiting for the unplug, or -1 */
	int64_t unplug_deadline;
	int watch_fd;       /* the broker's control socket in "watch" mode, or -1 */
	char watch_buf[1024];
	size_t watch_len;
};

struct vm {
	struct launch *l;
	/* Each slot's bus number as the guest set it (QMP query-pci), 0 while
	 * unknown: firmware and kernels number bridges as they like. */
	uint8_t slot_bus[LAUNCH_SLOTS_MAX];
	int64_t next_bus_check;
	char run_socket[320];
	int listen_fd;
	unsigned next_id;
	struct vm_dev dev[LAUNCH_SLOTS_MAX]; /* indexed by slot */
};

/*
 * Run the VM: brokers for the devices given (specs[0..n-1]), QEMU with
 * them cold-plugged in slots 0..n-1 and l->slots slots in all, then serve
 * attach/detach/status and watch for pulled devices until QEMU ends or a
 * stop signal.  Returns the exit code (QEMU's, 128+N on signal N, 1 on a
 * setup failure).
 */
int vm_run(struct launch *l, const char *const specs[], size_t n, int qemu_argc, char *const qemu_argv[]);

/*
 * The launcher's reply to a request line ("attach SPEC|ID", "detach ID",
 * "list"), as the client side: connect to DIR/run.sock, send, read one JSON
 * line.  NULL with a reason in err.  json_object_put the result.
 */
struct json_object *vm_request(const char *socket_dir, const char *request, int timeout_ms, char *err, size_t errlen);

#endif
