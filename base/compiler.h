/*
 * base/compiler.h - small portable helpers shared by every module.
 *
 * Header-only, libc only.
 */
#ifndef SHROUD_BASE_COMPILER_H
#define SHROUD_BASE_COMPILER_H

#include <stddef.h>

/* Every function that returns a status is NODISCARD: an ignored status is a bug. */
#define NODISCARD __attribute__((warn_unused_result))

#define UNUSED(x) ((void)(x))

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Recover the owning struct from a pointer to one of its members (watchers are embedded). */
#define container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

#define PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))

#endif
