/* egress/bind.c - create and bind the outgoing sockets: TCP to connect, TCP to listen (BIND), UDP. */
#include "egress/bind.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/status.h"

/* Bind s to src, with IPV6_FREEBIND/IP_FREEBIND first when asked. -1 (errno set) on failure. */
static int egress_bind_src(int s, const struct addr *src, unsigned flags)
{
	int one = 1;

	if ((flags & EGRESS_FREEBIND) &&
	    (addr_family(src) == AF_INET6
		     ? setsockopt(s, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof(one))
		     : setsockopt(s, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one))) < 0)
		return -1;
	return bind(s, &src->u.sa, src->len);
}

int egress_connect(const struct addr *src, const struct addr *dst, unsigned flags, int *fd,
		   int *bind_failed)
{
	int one = 1;
	int s, saved;

	*bind_failed = 0;
	s = socket(addr_family(dst), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
	if (s < 0)
		return ST_ESYS;
	/* A relay forwards what it has at once; Nagle would only add delay on top of the client's. */
	(void)setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (src != NULL) {
		/* Reserve the port at connect(), not bind(): the 4-tuple is then what must be unique,
		 * so one source address can carry far more than 64k connections. */
		(void)setsockopt(s, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (egress_bind_src(s, src, flags) < 0) {
			*bind_failed = 1;
			goto fail;
		}
	}
	if (connect(s, &dst->u.sa, dst->len) < 0 && errno != EINPROGRESS)
		goto fail;
	*fd = s;
	return ST_OK;
fail:
	saved = errno;
	close(s);
	errno = saved;
	return ST_ESYS;
}

int egress_listen(const struct addr *src, unsigned flags, int *fd, int *bind_failed)
{
	int s, saved;

	*bind_failed = 0;
	s = socket(addr_family(src), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
	if (s < 0)
		return ST_ESYS;
	if (egress_bind_src(s, src, flags) < 0) {
		*bind_failed = 1;
		goto fail;
	}
	/* One connection is awaited; a few more may queue while the wrong ones are turned away. */
	if (listen(s, 4) < 0)
		goto fail;
	*fd = s;
	return ST_OK;
fail:
	saved = errno;
	close(s);
	errno = saved;
	return ST_ESYS;
}

int egress_udp(int family, const struct addr *src, unsigned flags, int *fd, int *bind_failed)
{
	int one = 1;
	int s, saved;

	*bind_failed = 0;
	s = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
	if (s < 0)
		return ST_ESYS;
	/* A wildcard IPv6 socket would also take IPv4 datagrams, mapped: each family has its own. */
	if (family == AF_INET6 && setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		goto fail;
	if (src != NULL) {
		if (egress_bind_src(s, src, flags) < 0) {
			*bind_failed = 1;
			goto fail;
		}
	} else {
		struct addr any;

		memset(&any, 0, sizeof(any));
		any.u.sa.sa_family = (sa_family_t)family;
		any.len = family == AF_INET6 ? sizeof(any.u.sin6) : sizeof(any.u.sin);
		if (bind(s, &any.u.sa, any.len) < 0)
			goto fail;
	}
	*fd = s;
	return ST_OK;
fail:
	saved = errno;
	close(s);
	errno = saved;
	return ST_ESYS;
}

int egress_connect_result(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return errno;
	return err;
}
