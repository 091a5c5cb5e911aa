/* SPDX-License-Identifier: MIT */
/*
 * TEST MODEL shim (Linux only): the CoreFoundation subset the darwin
 * backend uses (strings from registry properties), with Apple's names.
 */
#ifndef VFA_SHIM_COREFOUNDATION_H
#define VFA_SHIM_COREFOUNDATION_H

#include <stdint.h>

typedef const void *CFTypeRef;
typedef const struct __CFString *CFStringRef;
typedef const struct __CFAllocator *CFAllocatorRef;
typedef const struct __CFDictionary *CFDictionaryRef;
typedef const struct __CFData *CFDataRef;
typedef struct __CFDictionary *CFMutableDictionaryRef;
typedef unsigned long CFTypeID;
typedef long CFIndex;
typedef unsigned char Boolean;
typedef uint32_t CFStringEncoding;

#define kCFStringEncodingUTF8 ((CFStringEncoding)0x08000100)
#define kCFAllocatorDefault ((CFAllocatorRef)0)

/* Constant strings live for the whole process, as on macOS. */
CFStringRef __CFStringMakeConstantString(const char *cstr);
#define CFSTR(cstr) __CFStringMakeConstantString("" cstr "")

void CFRelease(CFTypeRef cf);
CFTypeID CFGetTypeID(CFTypeRef cf);
CFTypeID CFStringGetTypeID(void);
Boolean CFEqual(CFTypeRef a, CFTypeRef b);
CFTypeID CFDataGetTypeID(void);
CFIndex CFDataGetLength(CFDataRef data);
const uint8_t *CFDataGetBytePtr(CFDataRef data);
Boolean CFStringGetCString(CFStringRef str, char *buffer, CFIndex size, CFStringEncoding encoding);

#endif
