/*
 * base/clock.h - time sources. Pure code takes `now` as a parameter; only loop code reads clocks.
 */
#ifndef SHROUD_BASE_CLOCK_H
#define SHROUD_BASE_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Monotonic seconds, for deadlines and cache expiry. */
static inline double clock_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Unix seconds, for anything stored or compared with another host. */
static inline int64_t clock_unix(void)
{
	return (int64_t)time(NULL);
}

#endif
