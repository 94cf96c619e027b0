/*
 * egress/site.h - the "site" of a destination, the unit of stickiness.
 *
 * A host name's site is its registrable domain by the Public Suffix List (libpsl): a.example.co.uk
 * and b.example.co.uk are one site, example.co.uk. A name that has no registrable domain
 * ("localhost", a bare public suffix) is its own site. A literal address is its own site.
 * Names are compared lower-cased, without a trailing dot.
 *
 * Pure: no allocation after egress_site_init, no I/O, no logging.
 */
#ifndef SHROUD_EGRESS_SITE_H
#define SHROUD_EGRESS_SITE_H

#include <stddef.h>

#include "base/addr.h"
#include "base/compiler.h"

#define EGRESS_SITE_MAX 256 /* a DNS name of 1..253 bytes, NUL included, with room to spare */

/* Load the Public Suffix List (libpsl's built-in copy, else the system's file). Call once, before
 * any thread uses egress_site_of_name. ST_OK or ST_ENOTFOUND. */
NODISCARD int egress_site_init(void);

/* The site of a host name (1..255 bytes, NUL-terminated) into out. ST_OK, or ST_EINVAL for an
 * empty or over-long name. */
NODISCARD int egress_site_of_name(const char *name, char out[static EGRESS_SITE_MAX]);

/* The site of a literal address: its text (inet_ntop), without port. */
void egress_site_of_addr(const struct addr *a, char out[static EGRESS_SITE_MAX]);

#endif
