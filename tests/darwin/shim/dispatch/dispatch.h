/* SPDX-License-Identifier: MIT */
/*
 * TEST MODEL shim (Linux only): the serial-queue subset of libdispatch the
 * darwin backend uses, with Apple's names.  Each queue is one worker thread.
 * dispatch_release takes a queue here (Apple's takes any dispatch object;
 * call sites are identical).
 */
#ifndef VFA_SHIM_DISPATCH_H
#define VFA_SHIM_DISPATCH_H

typedef struct dispatch_queue_s *dispatch_queue_t;
typedef struct dispatch_queue_attr_s *dispatch_queue_attr_t;
typedef void (*dispatch_function_t)(void *context);

#define DISPATCH_QUEUE_SERIAL ((dispatch_queue_attr_t)0)

dispatch_queue_t dispatch_queue_create(const char *label, dispatch_queue_attr_t attr);
void dispatch_async_f(dispatch_queue_t queue, void *context, dispatch_function_t work);
void dispatch_sync_f(dispatch_queue_t queue, void *context, dispatch_function_t work);
void dispatch_release(dispatch_queue_t queue);

#endif
