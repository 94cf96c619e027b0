/*
 * crypto/access.h - the access key of the encrypted link: everything a client needs in one line.
 *
 * LINK.md, "Keys": the operator's `shroud link add` prints one access key; the user's `shroud link`
 * reads it from a file or stdin (never from argv). Version 1 of the line:
 *
 *     shroud-link1:HOST:PORT/SERVER_KEY.PSK[.CLIENT_KEY].CHECK
 *
 *   shroud-link1:  the version tag, lower case.
 *   HOST           a DNS name (labels of 1..63 letters, digits and '-', not starting or ending
 *                  with '-'; 253 characters at most, no final '.'), an IPv4 address in dotted
 *                  decimal, or an IPv6 address in brackets ("[2001:db8::1]", no zone). Address
 *                  literals are written in canonical form (inet_ntop) and only so.
 *   PORT           1..65535, decimal, no leading zero.
 *   SERVER_KEY     the server's static X25519 public key (S_srv.pub),
 *   PSK            the client's 32-byte pre-shared key,
 *   CLIENT_KEY     the client's static X25519 private key (S_cli), absent when the client made its
 *                  own key pair (`shroud link allow`): each is 32 bytes in base64url without
 *                  padding (RFC 4648 §5), 43 characters.
 *   CHECK          the first 6 bytes of BLAKE2b-256 (unkeyed) over every character before the
 *                  '.' that starts CHECK, in base64url: 8 characters.
 *
 * Every character is one of A-Z a-z 0-9 - _ . : / [ ], so the line survives copy and paste,
 * e-mail and terminals without quoting, and a double click selects most of it. The fields have
 * fixed lengths and CHECK covers the whole line, so a truncated or mistyped key is refused with
 * a reason instead of failing the handshake later (where the server stays silent on purpose).
 * CHECK catches accidents, not forgeries: whoever can change a key can recompute it.
 *
 * Pure: no I/O, no logging. link_access_parse allocates the secret containers (crypto/keys.h);
 * nothing else allocates. The line itself carries secrets: callers keep it in a keys_secret or
 * wipe it (explicit_bzero) after use.
 */
#ifndef SHROUD_CRYPTO_ACCESS_H
#define SHROUD_CRYPTO_ACCESS_H

#include <stddef.h>
#include <stdint.h>

#include "base/compiler.h"
#include "crypto/keys.h"

#define LINK_ACCESS_TAG "shroud-link1:"

/* The longest host: a DNS name of 253 characters (an IPv6 address is at most 45). */
#define LINK_ACCESS_HOST_MAX 253

/* Room for the longest access key, NUL included (the longest is 413 characters). */
#define LINK_ACCESS_MAX 512

/*
 * Parse "HOST:PORT" (the HOST and PORT forms above; an IPv6 address in brackets) into host
 * (NUL-terminated; an address without brackets, in canonical form) and *port. ST_OK, or ST_EINVAL
 * with *why a static sentence naming the problem and host and *port unchanged.
 */
NODISCARD int link_access_server_parse(const char *text, char host[static LINK_ACCESS_HOST_MAX + 1],
				       uint16_t *port, const char **why);

/*
 * Write the access key for (host, port, server_public, psk[, client_private]) into out, NUL-
 * terminated, no line end. host is what link_access_server_parse gives (an IPv6 address without
 * brackets); client_private may be NULL (a client with its own key pair). ST_OK, ST_EINVAL (host
 * or port not valid), ST_ETOOBIG (size too small); on failure out is zero-filled.
 */
NODISCARD int link_access_format(char *out, size_t size, const char *host, uint16_t port,
				 const uint8_t server_public[static KEYS_X25519_BYTES],
				 const uint8_t psk[static KEYS_PSK_BYTES],
				 const uint8_t *client_private);

/* A parsed access key. The secrets are locked keys_secret containers owned by the struct. */
struct link_access {
	char host[LINK_ACCESS_HOST_MAX + 1]; /* a DNS name, or an address without brackets */
	uint16_t port;
	uint8_t server_public[KEYS_X25519_BYTES];
	struct keys_secret *psk;	    /* KEYS_PSK_BYTES */
	struct keys_secret *client_private; /* KEYS_X25519_BYTES; NULL when the key has none */
};

/*
 * Parse exactly len bytes of text as an access key: one line without its line end (the caller
 * strips "\n" or "\r\n"), nothing before or after. Strict: any deviation from the format above is
 * refused, and so is a server key that is a low-order point. The secrets are decoded straight
 * into new locked containers. ST_OK; ST_EINVAL with *why a static sentence naming what is wrong
 * ("the PSK is not valid base64url", ...); ST_ENOMEM, ST_ESYS. On failure *out is unchanged and
 * nothing is left allocated.
 */
NODISCARD int link_access_parse(const char *text, size_t len, struct link_access *out,
				const char **why);

/* Free the secrets of a parsed key and zero the struct. Safe on a zeroed struct. */
void link_access_clear(struct link_access *a);

#endif
