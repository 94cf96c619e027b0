/* egress/bind.c - create, bind and connect the outgoing socket. */
#include "egress/bind.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/status.h"

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
		if ((flags & EGRESS_FREEBIND) &&
		    (addr_family(src) == AF_INET6
			     ? setsockopt(s, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof(one))
			     : setsockopt(s, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one))) < 0) {
			*bind_failed = 1;
			goto fail;
		}
		if (bind(s, &src->u.sa, src->len) < 0) {
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

int egress_connect_result(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return errno;
	return err;
}
