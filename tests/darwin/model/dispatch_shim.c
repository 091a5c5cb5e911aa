// SPDX-License-Identifier: MIT
/*
 * TEST MODEL shim: serial dispatch queues for Linux, one worker thread per
 * queue running work items in FIFO order, as libdispatch's serial queues do.
 */
#include <dispatch/dispatch.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct work {
	struct work *next;
	dispatch_function_t fn;
	void *context;
	bool *done; /* dispatch_sync_f: set under the queue lock when fn returned */
};

struct dispatch_queue_s {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct work *head, *tail;
	bool stopping;
	pthread_t thread;
};

static void *queue_main(void *arg)
{
	dispatch_queue_t q = arg;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		struct work *w = q->head;

		if (!w) {
			if (q->stopping)
				break;
			pthread_cond_wait(&q->cond, &q->lock);
			continue;
		}
		q->head = w->next;
		if (!q->head)
			q->tail = NULL;
		pthread_mutex_unlock(&q->lock);
		w->fn(w->context);
		pthread_mutex_lock(&q->lock);
		if (w->done) {
			*w->done = true;
			pthread_cond_broadcast(&q->cond);
		}
		free(w);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

dispatch_queue_t dispatch_queue_create(const char *label, dispatch_queue_attr_t attr)
{
	dispatch_queue_t q = calloc(1, sizeof(*q));

	(void)label;
	(void)attr;
	if (!q)
		return NULL;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	if (pthread_create(&q->thread, NULL, queue_main, q)) {
		pthread_cond_destroy(&q->cond);
		pthread_mutex_destroy(&q->lock);
		free(q);
		return NULL;
	}
	return q;
}

static bool enqueue(dispatch_queue_t q, void *context, dispatch_function_t fn, bool *done)
{
	struct work *w = calloc(1, sizeof(*w));

	if (!w)
		return false;
	w->fn = fn;
	w->context = context;
	w->done = done;
	if (q->tail)
		q->tail->next = w;
	else
		q->head = w;
	q->tail = w;
	pthread_cond_broadcast(&q->cond);
	return true;
}

void dispatch_async_f(dispatch_queue_t queue, void *context, dispatch_function_t work)
{
	pthread_mutex_lock(&queue->lock);
	if (!enqueue(queue, context, work, NULL))
		abort(); /* libdispatch cannot fail here either */
	pthread_mutex_unlock(&queue->lock);
}

void dispatch_sync_f(dispatch_queue_t queue, void *context, dispatch_function_t work)
{
	bool done = false;

	pthread_mutex_lock(&queue->lock);
	if (!enqueue(queue, context, work, &done))
		abort();
	while (!done)
		pthread_cond_wait(&queue->cond, &queue->lock);
	pthread_mutex_unlock(&queue->lock);
}

/* Runs what is queued, then ends the worker. */
void dispatch_release(dispatch_queue_t queue)
{
	pthread_mutex_lock(&queue->lock);
	queue->stopping = true;
	pthread_cond_broadcast(&queue->cond);
	pthread_mutex_unlock(&queue->lock);
	pthread_join(queue->thread, NULL);
	pthread_cond_destroy(&queue->cond);
	pthread_mutex_destroy(&queue->lock);
	free(queue);
}
