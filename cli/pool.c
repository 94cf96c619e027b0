/* cli/pool.c - `shroud pool add|rm|enable|disable|list`: the egress pool. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "base/status.h"
#include "cli/cli.h"
#include "store/snapshot.h"
#include "store/store.h"

/* An IPv4 network adds each of its addresses: a /20 (4096) at most, so a typo such as /2 for /24
 * does not write millions of rows. */
#define POOL_V4_PREFIX_MIN 20
#define POOL_V4_NETWORK_MAX (1u << (32 - POOL_V4_PREFIX_MIN))
/* An IPv6 prefix entry: /32 to /127 (the CHECK on pool.prefix); /128 is one address. */
#define POOL_V6_PREFIX_MIN 32
#define POOL_WEIGHT_MAX 1000000
/* A note is for `pool list`: one line of reasonable length. */
#define POOL_NOTE_MAX 256

static const char pool_forms_help[] =
	"Addresses:\n"
	"  192.0.2.7         one IPv4 address\n"
	"  192.0.2.0/24      each address of an IPv4 network, /20 (4096 addresses) to /32; the\n"
	"                    network and broadcast addresses are skipped, except in a /31 or /32\n"
	"  2001:db8::7       one IPv6 address\n"
	"  2001:db8:7::/64   an IPv6 prefix, /32 to /127, kept as one entry: each sticky key draws\n"
	"                    its own address from it. Host bits must be zero.\n";

static void pool_usage_add(FILE *f)
{
	fprintf(f,
		"Usage: %s pool add ADDR|PREFIX... [--tag KEY=VALUE]... [--weight N] [--note TEXT]\n"
		"                      [--db PATH]\n\n"
		"Add source addresses to the egress pool, all or nothing: an argument that is not a\n"
		"valid address, or an address already in the pool or given twice, is refused by name\n"
		"and nothing is added. Prints \"added N\". The addresses must be this host's (an IPv6\n"
		"prefix routed to it): one that cannot be bound cools down and is tried again later.\n\n"
		"Options:\n"
		"  --tag KEY=VALUE   tag every address added, e.g. country=de or kind=residential;\n"
		"                    repeatable, up to %d. KEY: 1 to %d of a-z 0-9 _ .  VALUE: 1 to %d\n"
		"                    of A-Z a-z 0-9 _ .  Clients ask for tags in their username:\n"
		"                    alice-country-de, alice-tag-residential\n"
		"  --weight N        share of connections against the other entries, 1 to %d\n"
		"                    (default 1)\n"
		"  --note TEXT       free text shown by 'pool list' (up to %d bytes, one line)\n"
		"  --db PATH         database (default $SHROUD_DB, else ./shroud.db); created if missing\n"
		"  --help            this text\n\n"
		"%s",
		cli_progname, STORE_POOL_TAGS_MAX, STORE_TAG_MAX, STORE_TAG_MAX, POOL_WEIGHT_MAX,
		POOL_NOTE_MAX, pool_forms_help);
}

static void pool_usage_select(FILE *f)
{
	fprintf(f,
		"Usage: %s pool rm|disable|enable ADDR|PREFIX... [--db PATH]\n\n"
		"rm removes entries from the pool; disable keeps them but sends no connection from\n"
		"them; enable uses disabled entries again. All or nothing: an argument that is not in\n"
		"the pool is named and nothing changes. Prints \"removed N\", \"disabled N\" or\n"
		"\"enabled N\".\n\n"
		"The arguments take the forms 'pool add' takes and select the entries it made of them:\n"
		"an IPv4 network selects each of its addresses (without the network and broadcast\n"
		"addresses from /20 to /30); an IPv6 prefix selects that one prefix entry.\n\n"
		"Options:\n"
		"  --db PATH   database (default $SHROUD_DB, else ./shroud.db)\n"
		"  --help      this text\n\n"
		"%s",
		cli_progname, pool_forms_help);
}

static void pool_usage_list(FILE *f)
{
	fprintf(f,
		"Usage: %s pool list [--json] [--db PATH]\n\n"
		"One line per entry, oldest first: address, state, weight, tags (KEY=VALUE,... or -),\n"
		"note. The state is enabled, disabled, or \"cooling until <UTC time>\" after the daemon\n"
		"failed to bind or connect from the entry (it comes back by itself).\n\n"
		"Options:\n"
		"  --json      a JSON array instead, one object per entry: address, family (4 or 6),\n"
		"              prefix, weight, enabled, cooling_until (Unix seconds, or null),\n"
		"              failures, tags (an object), note, added (Unix seconds)\n"
		"  --db PATH   database (default $SHROUD_DB, else ./shroud.db)\n"
		"  --help      this text\n",
		cli_progname);
}

static void pool_usage(FILE *f, const char *action)
{
	if (action != NULL && strcmp(action, "add") == 0) {
		pool_usage_add(f);
		return;
	}
	if (action != NULL && (strcmp(action, "rm") == 0 || strcmp(action, "disable") == 0 ||
			       strcmp(action, "enable") == 0)) {
		pool_usage_select(f);
		return;
	}
	if (action != NULL && strcmp(action, "list") == 0) {
		pool_usage_list(f);
		return;
	}
	fprintf(f,
		"Usage: %s pool ACTION [ADDR|PREFIX]... [OPTIONS]\n\n"
		"Manage the egress pool: the source addresses outgoing connections leave from. A\n"
		"running daemon applies every change within about a second. While the pool is empty,\n"
		"connections leave from the system's default address.\n\n"
		"Actions:\n"
		"  add ADDR|PREFIX...       add entries (--tag KEY=VALUE, --weight N, --note TEXT)\n"
		"  rm ADDR|PREFIX...        remove entries\n"
		"  disable ADDR|PREFIX...   keep entries but send no connection from them\n"
		"  enable ADDR|PREFIX...    use disabled entries again\n"
		"  list                     one line per entry: address, state, weight, tags, note;\n"
		"                           --json for a JSON array\n\n"
		"Every change is all or nothing: an argument that is invalid, already in the pool\n"
		"(add) or not in it (rm, disable, enable) is named and nothing changes.\n"
		"'%s pool ACTION --help' tells more.\n\n"
		"Options:\n"
		"  --db PATH   database (default $SHROUD_DB, else ./shroud.db)\n"
		"  --help      this text\n\n"
		"%s",
		cli_progname, cli_progname, pool_forms_help);
}

/* ---- the command line ------------------------------------------------------------------------ */

struct pool_args {
	const char *action;
	const char *const *addrs; /* the arguments after the action */
	size_t naddrs;
	const char *db;
	bool json;
	bool has_weight;
	uint32_t weight;
	const char *note;
	size_t ntags;
	char tag_key[STORE_POOL_TAGS_MAX][STORE_TAG_MAX + 1];
	char tag_value[STORE_POOL_TAGS_MAX][STORE_TAG_MAX + 1];
};

enum { OPT_DB = 256, OPT_TAG, OPT_WEIGHT, OPT_NOTE, OPT_JSON, OPT_HELP };

static const struct option pool_options[] = {
	{ "db", required_argument, NULL, OPT_DB },
	{ "tag", required_argument, NULL, OPT_TAG },
	{ "weight", required_argument, NULL, OPT_WEIGHT },
	{ "note", required_argument, NULL, OPT_NOTE },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

/* --tag KEY=VALUE into a; CLI_OK or CLI_USAGE with a message naming the argument. */
static int pool_tag_parse(struct pool_args *a, const char *text)
{
	const char *eq = strchr(text, '=');
	size_t klen = eq != NULL ? (size_t)(eq - text) : 0;
	char *key, *value;

	if (a->ntags == STORE_POOL_TAGS_MAX) {
		cli_error("--tag: at most %d tags", STORE_POOL_TAGS_MAX);
		return CLI_USAGE;
	}
	key = a->tag_key[a->ntags];
	value = a->tag_value[a->ntags];
	if (eq == NULL || klen > STORE_TAG_MAX || strlen(eq + 1) > STORE_TAG_MAX) {
		cli_error("--tag: '%s' is not KEY=VALUE (KEY: 1 to %d of a-z 0-9 _ .  VALUE: 1 to %d "
			  "of A-Z a-z 0-9 _ .)",
			  text, STORE_TAG_MAX, STORE_TAG_MAX);
		return CLI_USAGE;
	}
	memcpy(key, text, klen);
	key[klen] = '\0';
	strcpy(value, eq + 1); /* fits: checked above */
	if (!store_pool_tag_valid(key, true) || !store_pool_tag_valid(value, false)) {
		cli_error("--tag: '%s' is not KEY=VALUE (KEY: 1 to %d of a-z 0-9 _ .  VALUE: 1 to %d "
			  "of A-Z a-z 0-9 _ .)",
			  text, STORE_TAG_MAX, STORE_TAG_MAX);
		return CLI_USAGE;
	}
	for (size_t i = 0; i < a->ntags; i++) {
		if (strcmp(a->tag_key[i], key) == 0) {
			cli_error("--tag: '%s': the key '%s' is given twice (one value per key)", text,
				  key);
			return CLI_USAGE;
		}
	}
	a->ntags++;
	return CLI_OK;
}

static int pool_weight_parse(struct pool_args *a, const char *text)
{
	unsigned v;

	if (a->has_weight) {
		cli_error("--weight: given twice");
		return CLI_USAGE;
	}
	if (!cli_parse_count("--weight", text, 1, POOL_WEIGHT_MAX, &v))
		return CLI_USAGE;
	a->has_weight = true;
	a->weight = v;
	return CLI_OK;
}

static int pool_note_parse(struct pool_args *a, const char *text)
{
	if (a->note != NULL) {
		cli_error("--note: given twice");
		return CLI_USAGE;
	}
	if (strlen(text) > POOL_NOTE_MAX) {
		cli_error("--note: longer than %d bytes", POOL_NOTE_MAX);
		return CLI_USAGE;
	}
	/* Control characters would break the one-line-per-entry listing (or drive the terminal). */
	for (const char *p = text; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			cli_error("--note: control characters (a newline, a tab, ...) are not allowed");
			return CLI_USAGE;
		}
	}
	a->note = text;
	return CLI_OK;
}

/* ---- address arguments ----------------------------------------------------------------------- */

/* One address argument, parsed: the entries it stands for. */
struct pool_arg {
	const char *text; /* as written */
	int family;
	uint8_t addr[16];   /* the address or network, host bits zero */
	uint8_t prefix_len; /* of each entry: 32 for IPv4, 32..128 for IPv6 */
	uint32_t first;	    /* IPv4: the first address selected, host order */
	uint32_t count;	    /* how many entries: 1, or those of an IPv4 network */
	bool network;	    /* an IPv4 network: its entries are named "X (from TEXT)" */
};

/* "192.0.2.0/24" or "2001:db8::/48": the network of addr under prefix_len, for a message. */
static void pool_network_text(int family, const uint8_t addr[static 16], unsigned prefix_len,
			      char *out, size_t size)
{
	uint8_t net[16] = { 0 };
	char ip[INET6_ADDRSTRLEN];

	for (unsigned bit = 0; bit < prefix_len; bit++)
		net[bit / 8] |= addr[bit / 8] & (0x80u >> (bit % 8));
	if (inet_ntop(family, net, ip, sizeof(ip)) == NULL)
		ip[0] = '\0';
	snprintf(out, size, "%s/%u", ip, prefix_len);
}

static bool pool_host_bits_zero(const uint8_t addr[static 16], unsigned prefix_len, unsigned bits)
{
	for (unsigned bit = prefix_len; bit < bits; bit++) {
		if (addr[bit / 8] & (0x80u >> (bit % 8)))
			return false;
	}
	return true;
}

/* Why addr cannot be a source address, or NULL: nothing can be sent from these. */
static const char *pool_source_problem(const struct pool_arg *p)
{
	static const uint8_t zero[16];
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (p->family == AF_INET) {
		/* A /20 never straddles these, so the network's first byte judges every address. */
		if (p->addr[0] == 0)
			return "\"this network\" (0.0.0.0/8) is not a source address";
		if (p->addr[0] >= 224 && p->addr[0] <= 239)
			return "a multicast address is not a source address";
		if (memcmp(p->addr, "\xff\xff\xff\xff", 4) == 0)
			return "the broadcast address is not a source address";
		return NULL;
	}
	if (p->prefix_len == 128 && memcmp(p->addr, zero, 16) == 0)
		return "the unspecified address is not a source address";
	if (p->addr[0] == 0xff)
		return "a multicast address is not a source address";
	if (p->prefix_len >= 96 && memcmp(p->addr, mapped, sizeof(mapped)) == 0)
		return "an IPv4-mapped address: give the IPv4 address itself";
	return NULL;
}

/* Parse one ADDR|PREFIX argument. CLI_OK, or CLI_FAIL with a message naming it. */
static int pool_arg_parse(const char *action, const char *text, bool add, struct pool_arg *out)
{
	char head[INET6_ADDRSTRLEN], net[STORE_ADDRESS_MAX];
	const char *slash = strchr(text, '/');
	size_t len = slash != NULL ? (size_t)(slash - text) : strlen(text);
	const char *problem;
	unsigned plen = 0;
	uint32_t ip;

	memset(out, 0, sizeof(*out));
	out->text = text;
	if (len >= sizeof(head))
		goto not_address;
	memcpy(head, text, len);
	head[len] = '\0';
	if (slash != NULL) {
		const char *digits = slash + 1;

		if (digits[0] == '\0' || strlen(digits) > 3 ||
		    strspn(digits, "0123456789") != strlen(digits))
			goto not_address;
		plen = (unsigned)strtoul(digits, NULL, 10);
	}

	if (inet_pton(AF_INET, head, out->addr) == 1) {
		if (slash == NULL)
			plen = 32;
		if (plen > 32) {
			cli_error("pool %s: '%s': an IPv4 prefix length is 0 to 32", action, text);
			return CLI_FAIL;
		}
		if (plen < POOL_V4_PREFIX_MIN) {
			cli_error("pool %s: '%s' is too large: an IPv4 network is added address by "
				  "address, at most %u at a time (a /%d); give it in /%d pieces",
				  action, text, POOL_V4_NETWORK_MAX, POOL_V4_PREFIX_MIN,
				  POOL_V4_PREFIX_MIN);
			return CLI_FAIL;
		}
		if (!pool_host_bits_zero(out->addr, plen, 32)) {
			pool_network_text(AF_INET, out->addr, plen, net, sizeof(net));
			cli_error("pool %s: '%s' has host bits set (the network is %s)", action, text,
				  net);
			return CLI_FAIL;
		}
		memcpy(&ip, out->addr, 4);
		ip = ntohl(ip);
		out->family = AF_INET;
		out->prefix_len = 32;
		out->network = plen < 32;
		/* RFC 3021: a /31 has no network or broadcast address; a /32 is the address. */
		if (plen <= 30) {
			out->first = ip + 1;
			out->count = (1u << (32 - plen)) - 2;
		} else {
			out->first = ip;
			out->count = 1u << (32 - plen);
		}
	} else if (inet_pton(AF_INET6, head, out->addr) == 1) {
		if (slash == NULL)
			plen = 128;
		if (plen < POOL_V6_PREFIX_MIN || plen > 128) {
			cli_error("pool %s: '%s': an IPv6 prefix is /%d to /128", action, text,
				  POOL_V6_PREFIX_MIN);
			return CLI_FAIL;
		}
		if (!pool_host_bits_zero(out->addr, plen, 128)) {
			pool_network_text(AF_INET6, out->addr, plen, net, sizeof(net));
			cli_error("pool %s: '%s' has host bits set (the prefix is %s)", action, text,
				  net);
			return CLI_FAIL;
		}
		out->family = AF_INET6;
		out->prefix_len = (uint8_t)plen;
		out->count = 1;
	} else {
		goto not_address;
	}
	problem = add ? pool_source_problem(out) : NULL;
	if (problem != NULL) {
		cli_error("pool %s: '%s': %s", action, text, problem);
		return CLI_FAIL;
	}
	return CLI_OK;

not_address:
	cli_error("pool %s: '%s' is not an IPv4 or IPv6 address or prefix (192.0.2.7, "
		  "192.0.2.0/24, 2001:db8::7, 2001:db8:7::/64)",
		  action, text);
	return CLI_FAIL;
}

/* The entries the arguments stand for, in order, each with the index of its argument. */
struct pool_selection {
	struct pool_arg *args;
	size_t n;
	struct store_pool_new *entries;
	size_t *owner;
};

static void pool_selection_free(struct pool_selection *sel)
{
	free(sel->args);
	free(sel->entries);
	free(sel->owner);
}

static int pool_selection_build(const struct pool_args *a, struct pool_selection *sel)
{
	bool add = strcmp(a->action, "add") == 0;
	size_t k = 0;
	int rc;

	memset(sel, 0, sizeof(*sel));
	sel->args = calloc(a->naddrs, sizeof(*sel->args));
	if (sel->args == NULL)
		goto nomem;
	for (size_t i = 0; i < a->naddrs; i++) {
		rc = pool_arg_parse(a->action, a->addrs[i], add, &sel->args[i]);
		if (rc != CLI_OK)
			return rc;
		/* At most argc * 4094: no overflow. */
		sel->n += sel->args[i].count;
	}
	sel->entries = calloc(sel->n, sizeof(*sel->entries));
	sel->owner = calloc(sel->n, sizeof(*sel->owner));
	if (sel->entries == NULL || sel->owner == NULL)
		goto nomem;
	for (size_t i = 0; i < a->naddrs; i++) {
		const struct pool_arg *p = &sel->args[i];

		for (uint32_t j = 0; j < p->count; j++, k++) {
			struct store_pool_new *e = &sel->entries[k];

			e->family = p->family;
			e->prefix_len = p->prefix_len;
			memcpy(e->addr, p->addr, sizeof(e->addr));
			if (p->family == AF_INET) {
				uint32_t ip = htonl(p->first + j);

				memcpy(e->addr, &ip, 4);
			}
			sel->owner[k] = i;
		}
	}
	return CLI_OK;
nomem:
	cli_error("out of memory");
	return CLI_FAIL;
}

/* "192.0.2.7" or "192.0.2.7 (from 192.0.2.0/24)": entry i as the user can find it. */
static void pool_entry_name(const struct pool_selection *sel, size_t i, char *out, size_t size)
{
	const struct pool_arg *p = &sel->args[sel->owner[i]];
	const struct store_pool_new *e = &sel->entries[i];
	char text[STORE_ADDRESS_MAX];

	store_pool_address_text(e->family, e->addr, e->prefix_len, text);
	if (p->network)
		snprintf(out, size, "%s (from '%s')", text, p->text);
	else if (strcmp(text, p->text) != 0)
		snprintf(out, size, "%s (written '%s')", text, p->text);
	else
		snprintf(out, size, "%s", text);
}

/* ---- actions --------------------------------------------------------------------------------- */

static int pool_add(struct store *s, const struct pool_args *a, struct pool_selection *sel)
{
	char name[2 * STORE_ADDRESS_MAX + 64], text[STORE_ADDRESS_MAX], other[STORE_ADDRESS_MAX];
	size_t bad = 0, first;
	int rc;

	for (size_t i = 0; i < sel->n; i++) {
		struct store_pool_new *e = &sel->entries[i];

		e->weight = a->has_weight ? a->weight : 1;
		e->note = a->note;
		e->ntags = a->ntags;
		for (size_t t = 0; t < a->ntags; t++) {
			e->tag_keys[t] = a->tag_key[t];
			e->tag_values[t] = a->tag_value[t];
		}
	}
	rc = store_pool_add(s, sel->entries, sel->n, &bad);
	if (rc == ST_OK) {
		printf("added %zu\n", sel->n);
		return CLI_OK;
	}
	if (rc != ST_EEXIST && rc != ST_EINVAL) {
		cli_error("pool add: %s (%s); nothing added", status_str(rc), store_errmsg(s));
		return CLI_FAIL;
	}
	pool_entry_name(sel, bad, name, sizeof(name));
	if (rc == ST_EINVAL) {
		cli_error("pool add: %s: %s; nothing added", name, store_errmsg(s));
		return CLI_FAIL;
	}
	/* Twice on the command line, or already in the pool? */
	store_pool_address_text(sel->entries[bad].family, sel->entries[bad].addr,
				sel->entries[bad].prefix_len, text);
	for (first = 0; first < bad; first++) {
		store_pool_address_text(sel->entries[first].family, sel->entries[first].addr,
					sel->entries[first].prefix_len, other);
		if (strcmp(text, other) == 0)
			break;
	}
	if (first < bad)
		cli_error("pool add: %s is given twice ('%s' and '%s'); nothing added", text,
			  sel->args[sel->owner[first]].text, sel->args[sel->owner[bad]].text);
	else
		cli_error("pool add: %s is already in the pool; nothing added", name);
	return CLI_FAIL;
}

/* rm, disable, enable: by the canonical texts of the selected entries. */
static int pool_change(struct store *s, const struct pool_args *a, struct pool_selection *sel)
{
	char name[2 * STORE_ADDRESS_MAX + 64];
	char (*texts)[STORE_ADDRESS_MAX] = calloc(sel->n, sizeof(*texts));
	const char **ptrs = calloc(sel->n, sizeof(*ptrs));
	size_t bad = 0;
	int rc;

	if (texts == NULL || ptrs == NULL) {
		cli_error("out of memory");
		rc = CLI_FAIL;
		goto out;
	}
	for (size_t i = 0; i < sel->n; i++) {
		store_pool_address_text(sel->entries[i].family, sel->entries[i].addr,
					sel->entries[i].prefix_len, texts[i]);
		ptrs[i] = texts[i];
	}
	if (strcmp(a->action, "rm") == 0)
		rc = store_pool_remove(s, ptrs, sel->n, &bad);
	else
		rc = store_pool_set_enabled(s, ptrs, sel->n, strcmp(a->action, "enable") == 0, &bad);
	if (rc == ST_OK) {
		printf("%s %zu\n",
		       strcmp(a->action, "rm") == 0	    ? "removed"
		       : strcmp(a->action, "enable") == 0 ? "enabled"
							  : "disabled",
		       sel->n);
		rc = CLI_OK;
	} else if (rc == ST_ENOTFOUND) {
		pool_entry_name(sel, bad, name, sizeof(name));
		cli_error("pool %s: %s is not in the pool; nothing changed", a->action, name);
		rc = CLI_FAIL;
	} else {
		cli_error("pool %s: %s (%s); nothing changed", a->action, status_str(rc),
			  store_errmsg(s));
		rc = CLI_FAIL;
	}
out:
	free(texts);
	free(ptrs);
	return rc;
}

static void pool_state_text(const struct snapshot_pool_entry *e, int64_t now, char *out,
			    size_t size)
{
	char when[64];

	if (!e->enabled) {
		snprintf(out, size, "disabled");
	} else if (e->cooldown_until > now) {
		cli_time_text(e->cooldown_until, when, sizeof(when));
		snprintf(out, size, "cooling until %s", when);
	} else {
		snprintf(out, size, "enabled");
	}
}

/* "k=v,k=v", or "-" for none. Fits: 16 tags of 32 + 1 + 32 + 1 bytes. */
#define POOL_TAGS_TEXT_MAX (STORE_POOL_TAGS_MAX * (2 * STORE_TAG_MAX + 2) + 2)

static void pool_tags_text(const struct snapshot_pool_entry *e, char *out, size_t size)
{
	size_t used = 0;

	snprintf(out, size, "-");
	for (size_t t = 0; t < e->ntags && used < size; t++)
		used += (size_t)snprintf(out + used, size - used, "%s%s=%s", t > 0 ? "," : "",
					 e->tags[t].key, e->tags[t].value);
}

static void pool_list_lines(const struct snapshot *snap, int64_t now)
{
	char state[96], tags[POOL_TAGS_TEXT_MAX], weight[16];
	int wa = 0, ws = 0, ww = 0, wt = 0;

	/* Columns as wide as their widest value. */
	for (size_t i = 0; i < snap->npool; i++) {
		const struct snapshot_pool_entry *e = &snap->pool[i];
		int len_weight = snprintf(weight, sizeof(weight), "%u", e->weight);
		int len_address = (int)strlen(e->address);

		pool_state_text(e, now, state, sizeof(state));
		pool_tags_text(e, tags, sizeof(tags));
		wa = MAX(wa, len_address);
		ws = MAX(ws, (int)strlen(state));
		ww = MAX(ww, len_weight);
		wt = MAX(wt, (int)strlen(tags));
	}
	for (size_t i = 0; i < snap->npool; i++) {
		const struct snapshot_pool_entry *e = &snap->pool[i];

		pool_state_text(e, now, state, sizeof(state));
		pool_tags_text(e, tags, sizeof(tags));
		if (e->note[0] == '\0') {
			printf("%-*s  %-*s  %*u  %s\n", wa, e->address, ws, state, ww, e->weight,
			       tags);
			continue;
		}
		printf("%-*s  %-*s  %*u  %-*s  ", wa, e->address, ws, state, ww, e->weight, wt, tags);
		/* The CLI refuses control characters in a note; a hand-edited file may have them. */
		for (const char *p = e->note; *p != '\0'; p++)
			putchar((unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p);
		putchar('\n');
	}
}

/* Length of the valid UTF-8 sequence at p (RFC 3629 §4), or 0. */
static size_t utf8_len(const unsigned char *p)
{
	size_t n;
	unsigned lo = 0x80, hi = 0xbf;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4;
	else
		return 0;
	/* The second byte's range excludes overlong forms, surrogates and > U+10FFFF. */
	if (p[0] == 0xe0)
		lo = 0xa0;
	else if (p[0] == 0xed)
		hi = 0x9f;
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f;
	if (p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++) {
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	}
	return n;
}

/* A JSON string (RFC 8259 §7); bytes that are not UTF-8 become U+FFFD. */
static void json_string(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	putchar('"');
	while (*p != '\0') {
		size_t n = utf8_len(p);

		if (n == 0) {
			fputs("\\ufffd", stdout);
			p++;
		} else if (*p == '"' || *p == '\\') {
			printf("\\%c", *p++);
		} else if (*p < 0x20) {
			printf("\\u%04x", *p++);
		} else {
			fwrite(p, 1, n, stdout);
			p += n;
		}
	}
	putchar('"');
}

static void pool_list_json(const struct snapshot *snap, int64_t now)
{
	putchar('[');
	for (size_t i = 0; i < snap->npool; i++) {
		const struct snapshot_pool_entry *e = &snap->pool[i];

		fputs(i > 0 ? ",\n  {" : "\n  {", stdout);
		fputs("\"address\": ", stdout);
		json_string(e->address);
		printf(", \"family\": %d, \"prefix\": %u, \"weight\": %u, \"enabled\": %s",
		       e->family == AF_INET ? 4 : 6, (unsigned)e->prefix_len, e->weight,
		       e->enabled ? "true" : "false");
		if (e->cooldown_until > now)
			printf(", \"cooling_until\": %lld", (long long)e->cooldown_until);
		else
			fputs(", \"cooling_until\": null", stdout);
		printf(", \"failures\": %u, \"tags\": {", e->failures);
		for (size_t t = 0; t < e->ntags; t++) {
			if (t > 0)
				fputs(", ", stdout);
			json_string(e->tags[t].key);
			fputs(": ", stdout);
			json_string(e->tags[t].value);
		}
		fputs("}, \"note\": ", stdout);
		json_string(e->note);
		printf(", \"added\": %lld}", (long long)e->added);
	}
	fputs(snap->npool > 0 ? "\n]\n" : "]\n", stdout);
}

static int pool_list(struct store *s, const struct pool_args *a)
{
	struct snapshot *snap;
	int rc = store_snapshot_build(s, &snap);

	if (rc != ST_OK) {
		cli_error("pool list: %s (%s)", status_str(rc), store_errmsg(s));
		return CLI_FAIL;
	}
	if (a->json)
		pool_list_json(snap, (int64_t)time(NULL));
	else
		pool_list_lines(snap, (int64_t)time(NULL));
	snapshot_unref(snap);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		cli_error("pool list: cannot write the listing");
		return CLI_FAIL;
	}
	return CLI_OK;
}

/* ---- the subcommand -------------------------------------------------------------------------- */

/* Options that go with one action only. CLI_OK or CLI_USAGE. */
static int pool_args_check(const struct pool_args *a, bool has_tags)
{
	bool add = strcmp(a->action, "add") == 0, list = strcmp(a->action, "list") == 0;

	if (!add && (has_tags || a->has_weight || a->note != NULL)) {
		cli_error("pool %s: --tag, --weight and --note go with add only", a->action);
		return CLI_USAGE;
	}
	if (!list && a->json) {
		cli_error("pool %s: --json goes with list only", a->action);
		return CLI_USAGE;
	}
	if (list && a->naddrs > 0) {
		cli_error("pool list: unexpected argument '%s'", a->addrs[0]);
		return CLI_USAGE;
	}
	if (!list && a->naddrs == 0) {
		cli_error("pool %s: which addresses? (ADDR|PREFIX..., see 'shroud pool %s --help')",
			  a->action, a->action);
		return CLI_USAGE;
	}
	return CLI_OK;
}

int cmd_pool(int argc, char **argv)
{
	static const char *const actions[] = { "add", "rm", "disable", "enable", "list" };
	struct pool_args *a = calloc(1, sizeof(*a));
	const char **pos = calloc((size_t)argc + 1, sizeof(*pos));
	struct pool_selection sel = { 0 };
	struct store *s = NULL;
	size_t npos = 0;
	bool known = false;
	int opt, rc = CLI_OK;

	if (a == NULL || pos == NULL) {
		cli_error("out of memory");
		rc = CLI_FAIL;
		goto out;
	}
	opterr = 0;
	/* "-": positional arguments come back in order as 1; ":": a missing value as ':'. */
	while ((opt = getopt_long(argc, argv, "-:", pool_options, NULL)) != -1) {
		switch (opt) {
		case 1:
			pos[npos++] = optarg;
			break;
		case OPT_DB:
			a->db = optarg;
			break;
		case OPT_TAG:
			rc = pool_tag_parse(a, optarg);
			break;
		case OPT_WEIGHT:
			rc = pool_weight_parse(a, optarg);
			break;
		case OPT_NOTE:
			rc = pool_note_parse(a, optarg);
			break;
		case OPT_JSON:
			a->json = true;
			break;
		case OPT_HELP:
			pool_usage(stdout, npos > 0 ? pos[0] : NULL);
			goto out;
		case ':':
			cli_error("pool: %s needs a value (see 'shroud pool --help')", argv[optind - 1]);
			rc = CLI_USAGE;
			break;
		default:
			cli_error("pool: unknown option '%s' (see 'shroud pool --help')",
				  argv[optind - 1]);
			rc = CLI_USAGE;
			break;
		}
		if (rc != CLI_OK)
			goto out;
	}
	/* After "--" everything is an argument. */
	while (optind < argc)
		pos[npos++] = argv[optind++];

	if (npos == 0) {
		cli_error("pool: which action? (add, rm, disable, enable, list)");
		rc = CLI_USAGE;
		goto out;
	}
	a->action = pos[0];
	for (size_t i = 0; i < ARRAY_SIZE(actions); i++)
		known = known || strcmp(a->action, actions[i]) == 0;
	if (!known) {
		cli_error("pool: unknown action '%s' (add, rm, disable, enable, list)", a->action);
		rc = CLI_USAGE;
		goto out;
	}
	a->addrs = pos + 1;
	a->naddrs = npos - 1;
	rc = pool_args_check(a, a->ntags > 0);
	if (rc != CLI_OK)
		goto out;
	/* Every argument is checked before the database is opened: a typo changes nothing. */
	if (a->naddrs > 0) {
		rc = pool_selection_build(a, &sel);
		if (rc != CLI_OK)
			goto out;
	}

	s = cli_store_open(cli_db_path(a->db), strcmp(a->action, "add") == 0, false);
	if (s == NULL) {
		rc = CLI_FAIL;
		goto out;
	}
	if (strcmp(a->action, "add") == 0)
		rc = pool_add(s, a, &sel);
	else if (strcmp(a->action, "list") == 0)
		rc = pool_list(s, a);
	else
		rc = pool_change(s, a, &sel);
out:
	store_close(s);
	pool_selection_free(&sel);
	free(pos);
	free(a);
	return rc;
}
