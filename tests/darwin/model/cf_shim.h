/* SPDX-License-Identifier: MIT */
/* TEST MODEL shim: how the IOKit shim makes CoreFoundation objects. */
#ifndef VFA_CF_SHIM_H
#define VFA_CF_SHIM_H

#include <CoreFoundation/CoreFoundation.h>
#include <stdbool.h>
#include <stddef.h>

CFStringRef cf_shim_string_create(const char *text);
CFDataRef cf_shim_data_create(const void *bytes, size_t len);
CFMutableDictionaryRef cf_shim_matching_create(const char *class_name);
/* The class name IOServiceMatching was given; NULL if dict is not one. */
const char *cf_shim_matching_class(CFDictionaryRef dict);

#endif
