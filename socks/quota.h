/*
 * socks/quota.h - counts per key with a cap, shared by every worker: how many UDP associations each
 * user holds open at once.
 *
 * A key is a short string (a user name, or a client address for clients without one). quota_take
 * counts one more for a key unless it already holds `max`; quota_release gives one back. A key whose
 * count falls to zero is forgotten, so memory follows the keys in use, not every key ever seen.
 *
 * Thread-safe (one mutex): it is touched once when an association opens and once when it closes,
 * never per datagram. Never logs, never blocks but on its mutex.
 */
#ifndef SHROUD_SOCKS_QUOTA_H
#define SHROUD_SOCKS_QUOTA_H

#include <stdbool.h>
#include <stddef.h>

#include "base/compiler.h"

#define QUOTA_KEY_MAX 64 /* longer keys are cut: a user name is at most 64 bytes */

struct quota;

/* ST_OK or ST_ENOMEM. */
NODISCARD int quota_new(struct quota **out);

/* Free the table (counts still held are dropped). NULL is fine. */
void quota_free(struct quota *q);

/*
 * Count one more for key if it holds fewer than max: ST_OK. ST_EFULL when it already holds max
 * (nothing changed); ST_ENOMEM when a new key cannot be stored (nothing changed).
 */
NODISCARD int quota_take(struct quota *q, const char *key, unsigned max);

/* Give back one count taken for key. A key that holds nothing is left alone. */
void quota_release(struct quota *q, const char *key);

/* How many key holds now (for tests). */
unsigned quota_count(struct quota *q, const char *key);

#endif
