/*
 * base/status.h - the one status table of shroud.
 *
 * Every fallible function returns an int: ST_OK (0) on success, a negative ST_* on failure.
 * Parsers return a positive byte count on success instead of ST_OK (picohttpparser's contract),
 * and ST_NEED_MORE when the input is a valid prefix of a message.
 *
 * ST_ESYS means "look at errno": the function that returns it leaves errno as the failing call set it.
 * ST_ECRYPTO carries no detail on purpose.
 */
#ifndef SHROUD_BASE_STATUS_H
#define SHROUD_BASE_STATUS_H

#define STATUS_TABLE(X)                                                   \
	X(ST_OK, 0, "success")                                            \
	X(ST_NEED_MORE, -1, "need more bytes")                            \
	X(ST_AGAIN, -2, "try again later")                                \
	X(ST_EPROTO, -3, "protocol violation")                            \
	X(ST_ESYS, -4, "system call failed")                              \
	X(ST_ECRYPTO, -5, "cryptographic failure")                        \
	X(ST_ENOMEM, -6, "out of memory")                                 \
	X(ST_EINVAL, -7, "invalid argument")                              \
	X(ST_ENOTFOUND, -8, "not found")                                  \
	X(ST_EEXIST, -9, "already exists")                                \
	X(ST_ECOMMAND, -10, "command not supported")                      \
	X(ST_EADDRTYPE, -11, "address type not supported")                \
	X(ST_ETOOBIG, -12, "too large")                                   \
	X(ST_EDB, -13, "database error")                                  \
	X(ST_EAUTH, -14, "authentication failed")                         \
	X(ST_EFULL, -15, "limit reached")                                 \
	X(ST_EVERSION, -16, "unsupported version")                        \
	X(ST_ETIMEDOUT, -17, "timed out")                                 \
	X(ST_EPERM, -18, "not permitted")

enum status {
#define STATUS_ENUM(name, value, text) name = value,
	STATUS_TABLE(STATUS_ENUM)
#undef STATUS_ENUM
};

/* A static, human-readable string for a status; "unknown status" for values outside the table. */
const char *status_str(int status);

#endif
