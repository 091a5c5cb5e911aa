// SPDX-License-Identifier: MIT
/*
 * TEST MODEL shim: CoreFoundation strings (and the matching dictionary's
 * allocation) for Linux.  Constant strings are interned and never freed,
 * as on macOS.
 */
#include "cf_shim.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CF_STRING_TYPE_ID 7ul
#define CF_DICTIONARY_TYPE_ID 18ul
#define CF_DATA_TYPE_ID 20ul

struct cf_object {
	CFTypeID type;
	int refs;
	bool constant;
	struct cf_object *next_constant;
	size_t len; /* bytes of a data object */
	char text[]; /* string contents, the dictionary's class name, or data bytes */
};

static pthread_mutex_t constants_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cf_object *constants;

static struct cf_object *cf_new(CFTypeID type, const char *text)
{
	size_t len = strlen(text);
	struct cf_object *o = calloc(1, sizeof(*o) + len + 1);

	if (!o)
		return NULL;
	o->type = type;
	o->refs = 1;
	memcpy(o->text, text, len + 1);
	return o;
}

CFStringRef __CFStringMakeConstantString(const char *cstr)
{
	struct cf_object *o;

	pthread_mutex_lock(&constants_lock);
	for (o = constants; o; o = o->next_constant) {
		if (!strcmp(o->text, cstr))
			break;
	}
	if (!o) {
		o = cf_new(CF_STRING_TYPE_ID, cstr);
		if (!o)
			abort();
		o->constant = true;
		o->next_constant = constants;
		constants = o;
	}
	pthread_mutex_unlock(&constants_lock);
	return (CFStringRef)o;
}

CFStringRef cf_shim_string_create(const char *text)
{
	return (CFStringRef)cf_new(CF_STRING_TYPE_ID, text);
}

CFDataRef cf_shim_data_create(const void *bytes, size_t len)
{
	struct cf_object *o = calloc(1, sizeof(*o) + len + 1);

	if (!o)
		return NULL;
	o->type = CF_DATA_TYPE_ID;
	o->refs = 1;
	o->len = len;
	memcpy(o->text, bytes, len);
	return (CFDataRef)o;
}

CFTypeID CFDataGetTypeID(void)
{
	return CF_DATA_TYPE_ID;
}

CFIndex CFDataGetLength(CFDataRef data)
{
	return (CFIndex)((const struct cf_object *)data)->len;
}

const uint8_t *CFDataGetBytePtr(CFDataRef data)
{
	return (const uint8_t *)((const struct cf_object *)data)->text;
}

CFMutableDictionaryRef cf_shim_matching_create(const char *class_name)
{
	return (CFMutableDictionaryRef)cf_new(CF_DICTIONARY_TYPE_ID, class_name);
}

const char *cf_shim_matching_class(CFDictionaryRef dict)
{
	const struct cf_object *o = (const struct cf_object *)dict;

	return o && o->type == CF_DICTIONARY_TYPE_ID ? o->text : NULL;
}

void CFRelease(CFTypeRef cf)
{
	struct cf_object *o = (struct cf_object *)(uintptr_t)cf;

	if (!o)
		abort(); /* CFRelease(NULL) crashes on macOS too */
	if (o->constant)
		return;
	if (--o->refs == 0)
		free(o);
}

CFTypeID CFGetTypeID(CFTypeRef cf)
{
	return ((const struct cf_object *)cf)->type;
}

CFTypeID CFStringGetTypeID(void)
{
	return CF_STRING_TYPE_ID;
}

Boolean CFEqual(CFTypeRef a, CFTypeRef b)
{
	const struct cf_object *x = a, *y = b;

	if (x->type != y->type)
		return 0;
	if (x->type == CF_DATA_TYPE_ID)
		return x->len == y->len && !memcmp(x->text, y->text, x->len);
	return !strcmp(x->text, y->text);
}

Boolean CFStringGetCString(CFStringRef str, char *buffer, CFIndex size, CFStringEncoding encoding)
{
	const struct cf_object *o = (const struct cf_object *)str;
	size_t len;

	if (o->type != CF_STRING_TYPE_ID)
		return 0;
	len = strlen(o->text);
	if (encoding != kCFStringEncodingUTF8 || size <= 0 || len >= (size_t)size)
		return 0;
	memcpy(buffer, o->text, len + 1);
	return 1;
}
