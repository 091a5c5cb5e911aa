// SPDX-License-Identifier: MIT
/* Guarded access to guest RAM (memguard.h). */
#include "memguard.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

static _Thread_local sigjmp_buf *volatile guard_jump;
static struct sigaction previous;
static atomic_bool installed;
static atomic_uint_fast64_t faults;

static void on_sigbus(int signo, siginfo_t *info, void *uctx)
{
	sigjmp_buf *jump = guard_jump;

	(void)info;
	(void)uctx;
	if (jump) {
		guard_jump = NULL;
		atomic_fetch_add(&faults, 1);
		siglongjmp(*jump, 1);
	}
	/* Not inside a guarded access: what would have happened without us. */
	sigaction(signo, &previous, NULL);
}

static void install_now(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	/* NODEFER: siglongjmp leaves the handler without restoring a mask, so
	 * SIGBUS must not be blocked while it runs (sigsetjmp(.., 0) is cheap). */
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &previous);
	atomic_store_explicit(&installed, true, memory_order_release);
}

static void install(void)
{
	if (!atomic_load_explicit(&installed, memory_order_acquire))
		vfa_memguard_install();
}

void vfa_memguard_install(void)
{
	struct sigaction cur;

	if (sigaction(SIGBUS, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_sigbus)
		return;
	install_now();
}

/*
 * The guarded region: the access runs with guard_jump set; a SIGBUS jumps
 * back here.  Kept out of line so that the compiler keeps nothing it needs
 * afterwards in registers clobbered by the jump.
 */
#define GUARDED(access)                                  \
	do {                                             \
		sigjmp_buf jump;                         \
		install();                               \
		if (sigsetjmp(jump, 0)) {                \
			guard_jump = NULL;               \
			return -EFAULT;                  \
		}                                        \
		guard_jump = &jump;                      \
		access;                                  \
		guard_jump = NULL;                       \
		return 0;                                \
	} while (0)

__attribute__((noinline)) int vfa_guarded_copy(void *dst, const void *src, size_t n)
{
	GUARDED(memcpy(dst, src, n));
}

__attribute__((noinline)) int vfa_guarded_set(void *dst, int c, size_t n)
{
	GUARDED(memset(dst, c, n));
}

__attribute__((noinline)) int vfa_guarded_store32_release(uint32_t *dst, uint32_t value)
{
	GUARDED(atomic_store_explicit((_Atomic uint32_t *)dst, value, memory_order_release));
}

uint64_t vfa_memguard_faults(void)
{
	return atomic_load(&faults);
}
