/* SPDX-License-Identifier: MIT */
/*
 * Guarded access to memory another process can take away: guest RAM comes
 * from the VMM's file (DMA_MAP), and a file truncated under a MAP_SHARED
 * mapping raises SIGBUS on the next touch of a lost page (issue 11,
 * item 2).  Every access the broker makes to guest RAM goes through these:
 * a fault fails that one access (-EFAULT) and the broker keeps serving.
 *
 * The first call installs a SIGBUS handler (SA_SIGINFO | SA_NODEFER) for
 * the process.  A SIGBUS outside a guarded access is not ours: the handler
 * puts back the previous disposition and returns, so the fault repeats and
 * does what it would have done without us (kill the process, by default).
 * Per thread: a fault in one thread's guarded copy does not disturb another.
 */
#ifndef VFA_MEMGUARD_H
#define VFA_MEMGUARD_H

#include <stddef.h>
#include <stdint.h>

/*
 * Install the handler now (the first guarded access does it otherwise), or
 * again when someone replaced it (a test framework's own handlers).
 * Whatever handled SIGBUS before is what an unguarded SIGBUS gets.
 */
void vfa_memguard_install(void);
/* memcpy(dst, src, n): 0, or -EFAULT when a page of either side faulted
 * (what was copied before the fault stays copied). */
int vfa_guarded_copy(void *dst, const void *src, size_t n);
/* memset(dst, c, n) likewise. */
int vfa_guarded_set(void *dst, int c, size_t n);
/* A release-ordered 32-bit store (a completion's phase dword): 0 or -EFAULT. */
int vfa_guarded_store32_release(uint32_t *dst, uint32_t value);
/* Faults caught since the process started. */
uint64_t vfa_memguard_faults(void);

#endif
