/* egress/site.c - registrable domains with libpsl. */
#include "egress/site.h"

#include <libpsl.h>
#include <string.h>

#include "base/status.h"

static const psl_ctx_t *site_psl;

int egress_site_init(void)
{
	if (site_psl != NULL)
		return ST_OK;
	site_psl = psl_builtin();
	if (site_psl == NULL)
		site_psl = psl_latest(NULL); /* leaked on purpose: it lives as long as the process */
	return site_psl != NULL ? ST_OK : ST_ENOTFOUND;
}

int egress_site_of_name(const char *name, char out[static EGRESS_SITE_MAX])
{
	char lower[EGRESS_SITE_MAX];
	const char *reg = NULL;
	size_t len = strlen(name);

	if (len > 0 && name[len - 1] == '.')
		len--; /* "example.com." is "example.com" */
	if (len == 0 || len >= EGRESS_SITE_MAX)
		return ST_EINVAL;
	/* DNS names are case-insensitive (RFC 4343): one site whatever the client's spelling. */
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		lower[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	lower[len] = '\0';
	if (site_psl != NULL)
		reg = psl_registrable_domain(site_psl, lower);
	/* psl returns a pointer into its argument, or NULL when there is no registrable domain. */
	memmove(out, reg != NULL ? reg : lower, strlen(reg != NULL ? reg : lower) + 1);
	return ST_OK;
}

void egress_site_of_addr(const struct addr *a, char out[static EGRESS_SITE_MAX])
{
	addr_format_ip(a, out, EGRESS_SITE_MAX);
}
