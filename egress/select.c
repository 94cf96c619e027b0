/*
 * egress/select.c - the egress index and the pick: weighted rendezvous over a fixed slot space.
 *
 * The ranking. A key is reduced to one slot s of a fixed space of M slots (M prime). Each entry
 * e walks its own permutation of the slots, slot_k = (off_e + k * skip_e) mod M (off and skip
 * hashed from the id; skip in [1, M-1], so a permutation), and its score at the slot it visits
 * at rank k is
 *     score_e(s) = -ln(1 - u) / weight_e,   u = (k + jitter_e(k)) / M
 * an exponential race: the lowest score at a slot wins with probability weight_e / total, and
 * the order of all entries by score at s is a weighted rendezvous (HRW) ranking for every key
 * on s. The jitter (a hash of the entry and k, in [0, 1)) makes u continuous, so equal weights
 * do not tie on equal ranks. Scores are rounded to float and compared as the 64-bit key
 * (float bits << 32 | id): a total order that depends only on (entry, slot), never on the other
 * entries. Hence the properties of egress/select.h: removing an entry removes it from every
 * ranking and changes nothing else; adding one inserts it; a filter restricts a ranking.
 *
 * Two spaces: BIG (M near 2^20) ranks requests without tag filters, SMALL (M near 2^16) ranks
 * requests with tag filters. A space's M never changes with the pool (that would move every key).
 *
 * The index only accelerates. Members of the pool are grouped in sets: per family the whole
 * pool (BIG space), per family each tag label "key=value" and "=value" (SMALL space). A set
 * with more than SCAN_MAX members gets a table: per slot its DEPTH best members, in order,
 * which answers the first DEPTH places of a ranking with one row read. Anything a table cannot
 * answer (a longer ranking, too few eligible entries in the row, an unsure place, a set without
 * a table) is answered by a scan: the score of every member of the smallest candidate set,
 * 5 to 10 ns each (a lower bound, -ln(1 - u) >= u, rejects most without the logarithm). The
 * result never depends on which path answered; the tests compare them.
 *
 * Building a table: rounds of growing time t. In a round every member proposes, in its
 * permutation's order, each rank whose score lower bound k/M is below 1 - exp(-t * weight): a
 * proposal enters the slot's sorted row of DEPTH if it beats the last. A slot whose DEPTH-th
 * score is below t is complete: nothing later can enter it, so later proposals to it are
 * skipped after one bit test. Completing every slot would be a coupon collector (about
 * M (ln M + DEPTH ln ln M) proposals); the build stops when at most M/4096 slots are open and
 * marks in their rows the places scored above t as unsure. That is about 14 proposals per
 * slot, 5 of them scored, whatever the set's size: ~15 M for a BIG table (~0.1 s), ~1 M for a
 * SMALL one (~7 ms).
 */
#include "egress/select.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/status.h"
#include "crypto/keys.h"

#define BIG_M 1048573u /* the largest prime below 2^20 */
#define SMALL_M 65521u /* the largest prime below 2^16 */
#define DEPTH EGRESS_PICK_FAST
#define SCAN_MAX 128	     /* sets this small are always scanned: ~1 us, no table */
#define SMALL_TABLES_MAX 32  /* tag tables (1 MiB each); larger sets get them first */
#define CHUNK 16	     /* a ranking is produced CHUNK places at a time */
#define FILTERS_MAX (EGRESS_TAGS_MAX + 1)
#define LABEL_MAX (2 * EGRESS_TAG_MAX + 2) /* "key=value" and its NUL */
#define NONE UINT32_MAX
#define UNSURE 0x80000000u /* in a table: this place and the ones after it may be wrong */
#define BITS_EMPTY UINT32_MAX /* above every float's bits: an empty place in a building row */

enum space { SPACE_BIG, SPACE_SMALL, SPACES };
enum fam { FAM_V4, FAM_V6, FAMS };

/* What scoring and filtering read per entry, apart from the public copy: one cache line (the
 * array is 64-byte aligned), since a pick touches a few entries at random. */
struct ient {
	uint32_t off[SPACES]; /* where the entry's permutation of each space starts */
	uint32_t inv[SPACES]; /* skip^-1 mod M: the rank of slot s is (s - off) * inv mod M */
	uint64_t jit[SPACES];
	double invw;
	uint32_t id;
	uint32_t label_first; /* into ix->labels_of */
	uint32_t nlabels;
	uint32_t fam;
	uint32_t skip[SPACES]; /* the permutation's step, for table builds */
};
_Static_assert(sizeof(struct ient) == 64, "struct ient is one cache line");

/* A set of entries that a ranking can be restricted to. */
struct rset {
	uint32_t n;
	const uint32_t *members; /* entry indices, ascending */
	const uint32_t *table;	 /* DEPTH entry indices per slot (NONE: empty), or NULL: scan */
};

struct label {
	const char *name; /* lower case "key=value" or "=value" */
	uint64_t hash;
	struct rset set[FAMS];
};

struct egress_index {
	size_t n;
	struct egress_entry *pub;
	struct ient *ent;
	struct egress_tag *tags;
	char *strings;
	uint32_t *labels_of; /* each entry's label ids, distinct */
	size_t nlabels;
	struct label *labels;
	uint32_t *label_hash; /* open addressing: label id + 1, 0 = free */
	size_t label_cap;     /* a power of two */
	struct rset all[FAMS];
	uint32_t *members;
	uint32_t *tables[FAMS + SMALL_TABLES_MAX];
	size_t ntables;
};

static const uint32_t space_m[SPACES] = { BIG_M, SMALL_M };

/* A 64-bit finaliser (splitmix64): a bijection, so distinct ids give distinct hashes. */
static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* x mod M with M a constant per branch, so both compile to multiplications. */
static inline uint32_t mod_m(uint64_t x, enum space sp)
{
	return sp == SPACE_BIG ? (uint32_t)(x % BIG_M) : (uint32_t)(x % SMALL_M);
}

static uint64_t load64le(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* The slot of a key in a space: key bytes 0..7 for BIG, 8..15 for SMALL (the key is already a
 * keyed hash; mixing guards against a caller passing structured bytes). */
static uint32_t key_slot(const uint8_t *key, enum space sp)
{
	uint64_t h = mix64(load64le(key + 8 * (size_t)sp) ^ (sp == SPACE_BIG ? 0x5bd1e995u : 0x27d4eb2fu));

	/* Lemire's multiply-shift reduction: uniform enough for 64-bit input and M < 2^32. */
	return (uint32_t)(((unsigned __int128)h * space_m[sp]) >> 64);
}

/* a^-1 mod m (m prime, 0 < a < m < 2^31): extended Euclid in 32 bits. */
static uint32_t mod_inverse(uint32_t a, uint32_t m)
{
	int32_t t = 0, newt = 1, r = (int32_t)m, newr = (int32_t)a;

	while (newr != 0) {
		int32_t q = r / newr, tmp;

		tmp = t - q * newt;
		t = newt;
		newt = tmp;
		tmp = r - q * newr;
		r = newr;
		newr = tmp;
	}
	return (uint32_t)(t < 0 ? t + (int32_t)m : t);
}

/* An entry's permutation of a space: a pure function of its id, so of nothing else. */
static void place_of(uint32_t id, enum space sp, uint32_t *off, uint32_t *skip, uint64_t *jit)
{
	static const uint64_t seed[SPACES][3] = {
		{ 0x243f6a8885a308d3ULL, 0x13198a2e03707344ULL, 0xa4093822299f31d0ULL },
		{ 0x082efa98ec4e6c89ULL, 0x452821e638d01377ULL, 0xbe5466cf34e90c6cULL },
	};
	uint32_t m = space_m[sp];

	*off = (uint32_t)(mix64(id ^ seed[sp][0]) % m);
	*skip = 1 + (uint32_t)(mix64(id ^ seed[sp][1]) % (m - 1));
	*jit = mix64(id ^ seed[sp][2]);
}

/* -ln(1 - u) for u in [0, 1). Below 1/16 (where nearly every score of a large pool falls) the
 * series to u^8, relative error under 3e-11: a few multiplications instead of a libm call. Any
 * deterministic function would keep the ranking exact; this one only has to stay close to the
 * exponential race so that shares follow weights. */
static inline double neg_log1m(double u)
{
	double p;

	if (u >= 0.0625)
		return -log1p(-u);
	p = 1.0 / 8;
	p = p * u + 1.0 / 7;
	p = p * u + 1.0 / 6;
	p = p * u + 1.0 / 5;
	p = p * u + 1.0 / 4;
	p = p * u + 1.0 / 3;
	p = p * u + 1.0 / 2;
	p = p * u + 1.0;
	return p * u;
}

/* The race score of an entry at rank k of its permutation, as float bits (monotone for
 * non-negative floats). The jitter makes u continuous, so equal ranks do not tie. */
static inline uint32_t race_bits(uint64_t jit, uint32_t k, enum space sp, double invw)
{
	static const double inv_m[SPACES] = { 1.0 / BIG_M, 1.0 / SMALL_M };
	double f = (double)(mix64(jit ^ k) >> 11) * 0x1p-53;
	float sc = (float)(neg_log1m(((double)k + f) * inv_m[sp]) * invw);
	uint32_t bits;

	if (!(sc > 0.0f))
		return 0;
	memcpy(&bits, &sc, sizeof(bits));
	return bits;
}

static inline uint32_t entry_rank(const struct ient *ie, enum space sp, uint32_t slot)
{
	uint32_t off = ie->off[sp];
	uint32_t d = slot >= off ? slot - off : slot + space_m[sp] - off;

	return mod_m((uint64_t)d * ie->inv[sp], sp);
}

/* The ranking key of entry e at slot: (score float bits << 32 | id), lower ranks first. */
static inline uint64_t entry_key(const struct egress_index *ix, enum space sp, uint32_t slot,
				 uint32_t e)
{
	const struct ient *ie = &ix->ent[e];

	return (uint64_t)race_bits(ie->jit[sp], entry_rank(ie, sp, slot), sp, ie->invw) << 32 |
	       ie->id;
}

/* False when entry e's score at slot surely exceeds float bits `worst`: -ln(1 - u) >= u and
 * u >= k / M, so (k / M) / weight bounds the score from below, without the jitter and the
 * logarithm. Float rounding is monotone, so the bound's bits bound the score's bits. */
static inline bool entry_may_beat(const struct egress_index *ix, enum space sp, uint32_t slot,
				  uint32_t e, uint32_t worst)
{
	static const double inv_m[SPACES] = { 1.0 / BIG_M, 1.0 / SMALL_M };
	const struct ient *ie = &ix->ent[e];
	float lb = (float)((double)entry_rank(ie, sp, slot) * inv_m[sp] * ie->invw);
	uint32_t bits;

	memcpy(&bits, &lb, sizeof(bits));
	return bits <= worst;
}

/* ---- labels ---------------------------------------------------------------------------- */

static uint64_t label_hash_of(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */

	for (; *s != '\0'; s++)
		h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
	return mix64(h);
}

static char lower(char c)
{
	return (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
}

/* "key=value" (key "" gives "=value"), lower case, into buf[LABEL_MAX]. False when either part
 * is longer than EGRESS_TAG_MAX: no entry can carry such a tag. */
static bool label_format(char *buf, const char *key, size_t klen_max, const char *value)
{
	size_t kl = strnlen(key, klen_max + 1), vl = strnlen(value, EGRESS_TAG_MAX + 1);
	size_t n = 0;

	if (kl > EGRESS_TAG_MAX || vl > EGRESS_TAG_MAX || vl == 0)
		return false;
	for (size_t i = 0; i < kl; i++)
		buf[n++] = lower(key[i]);
	buf[n++] = '=';
	for (size_t i = 0; i < vl; i++)
		buf[n++] = lower(value[i]);
	buf[n] = '\0';
	return true;
}

/* The label's id, or -1. */
static long label_find(const struct egress_index *ix, const char *name, uint64_t h)
{
	size_t mask = ix->label_cap - 1;

	if (ix->label_cap == 0)
		return -1;
	for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
		uint32_t v = ix->label_hash[i];

		if (v == 0)
			return -1;
		if (ix->labels[v - 1].hash == h && strcmp(ix->labels[v - 1].name, name) == 0)
			return (long)(v - 1);
	}
}

/* Intern a label; its text is copied to *arena. The table has room (sized by the caller). */
static uint32_t label_intern(struct egress_index *ix, const char *name, char **arena)
{
	uint64_t h = label_hash_of(name);
	long found = label_find(ix, name, h);
	size_t mask = ix->label_cap - 1, len = strlen(name);
	struct label *l;
	size_t i;

	if (found >= 0)
		return (uint32_t)found;
	for (i = (size_t)h & mask; ix->label_hash[i] != 0; i = (i + 1) & mask)
		;
	l = &ix->labels[ix->nlabels];
	memcpy(*arena, name, len + 1);
	l->name = *arena;
	*arena += len + 1;
	l->hash = h;
	ix->label_hash[i] = (uint32_t)ix->nlabels + 1;
	return (uint32_t)ix->nlabels++;
}

static bool entry_has_label(const struct egress_index *ix, uint32_t e, uint32_t label)
{
	const struct ient *ie = &ix->ent[e];
	const uint32_t *l = ix->labels_of + ie->label_first;

	for (uint32_t i = 0; i < ie->nlabels; i++) {
		if (l[i] == label)
			return true;
	}
	return false;
}

/* ---- validation -------------------------------------------------------------------------- */

/* 1..EGRESS_TAG_MAX of [A-Za-z0-9_.] (pool.db.sql, pool_tags). */
static bool tag_word_valid(const char *s)
{
	size_t i;

	if (s == NULL)
		return false;
	for (i = 0; s[i] != '\0'; i++) {
		char c = s[i];

		if (i == EGRESS_TAG_MAX ||
		    !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.'))
			return false;
	}
	return i > 0;
}

static bool entry_valid(const struct egress_entry *e)
{
	if (e->weight == 0)
		return false;
	if (e->family == AF_INET) {
		if (e->prefix_len != 32)
			return false;
	} else if (e->family == AF_INET6) {
		if (e->prefix_len < 32 || e->prefix_len > 128)
			return false;
	} else {
		return false;
	}
	if (e->ntags > 0 && e->tags == NULL)
		return false;
	for (size_t t = 0; t < e->ntags; t++) {
		if (!tag_word_valid(e->tags[t].key) || !tag_word_valid(e->tags[t].value))
			return false;
	}
	return true;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int check_entries(const struct egress_entry *entries, size_t n)
{
	uint32_t *ids;
	int st = ST_OK;

	for (size_t i = 0; i < n; i++) {
		if (!entry_valid(&entries[i]))
			return ST_EINVAL;
	}
	if (n < 2)
		return ST_OK;
	ids = malloc(n * sizeof(*ids));
	if (ids == NULL)
		return ST_ENOMEM;
	for (size_t i = 0; i < n; i++)
		ids[i] = entries[i].id;
	qsort(ids, n, sizeof(*ids), cmp_u32);
	for (size_t i = 1; i < n; i++) {
		if (ids[i] == ids[i - 1]) {
			st = ST_EINVAL;
			break;
		}
	}
	free(ids);
	return st;
}

/* ---- building a table -------------------------------------------------------------------- */

struct walker {
	uint32_t pos;  /* the slot at rank k */
	uint32_t k;    /* the next rank to propose */
	uint32_t skip;
	uint32_t e;    /* entry index */
	uint64_t jit;
	double invw;
	uint32_t weight;
	uint32_t id;
};

/* A slot's best DEPTH while building: scores (float bits) and entries, sorted. 32 bytes, so
 * one proposal touches one cache line. */
struct row {
	uint32_t bits[DEPTH];
	uint32_t idx[DEPTH];
};

struct offer {
	uint32_t slot, bits, e, id;
};

/* Proposals are computed BATCH at a time with their rows prefetched, then applied: the rows
 * are spread over tens of MiB and a miss per proposal was most of the build. */
#define BATCH 64

/* Offer entry e's score `bits` to a row. (bits, id) is the key; id breaks float ties, so the
 * order is total and the one queries compute. */
static inline void row_offer(const struct egress_index *ix, struct row *r, uint32_t bits,
			     uint32_t e, uint32_t id)
{
	uint32_t nbits[DEPTH], nidx[DEPTH];
	bool tie = false;

	if (bits > r->bits[DEPTH - 1])
		return;
	for (int j = 0; j < DEPTH; j++)
		tie |= r->bits[j] == bits;
	if (tie) {
		/* Equal float scores, next to never: the slow way, by id. */
		int j;

		if (bits == r->bits[DEPTH - 1] && id >= ix->ent[r->idx[DEPTH - 1]].id)
			return;
		for (j = DEPTH - 1; j > 0; j--) {
			uint32_t pb = r->bits[j - 1];

			if (pb < bits || (pb == bits && ix->ent[r->idx[j - 1]].id < id))
				break;
			r->bits[j] = pb;
			r->idx[j] = r->idx[j - 1];
		}
		r->bits[j] = bits;
		r->idx[j] = e;
		return;
	}
	/* Insert without branches: where the insertion point falls is a coin flip. Place j keeps
	 * its entry if it scores below bits, else takes its predecessor's, or the new one. */
	for (int j = 0; j < DEPTH; j++) {
		bool moves = r->bits[j] > bits;
		bool prev_moves = j > 0 && r->bits[j > 0 ? j - 1 : 0] > bits;
		uint32_t pb = r->bits[j > 0 ? j - 1 : 0], pi = r->idx[j > 0 ? j - 1 : 0];

		nbits[j] = !moves ? r->bits[j] : prev_moves ? pb : bits;
		nidx[j] = !moves ? r->idx[j] : prev_moves ? pi : e;
	}
	memcpy(r->bits, nbits, sizeof(nbits));
	memcpy(r->idx, nidx, sizeof(nidx));
}

/* Offer a batch of proposals; their rows were prefetched when they were queued. */
static void batch_apply(const struct egress_index *ix, struct row *rows, const struct offer *batch,
			size_t nb)
{
	for (size_t b = 0; b < nb; b++)
		row_offer(ix, &rows[batch[b].slot], batch[b].bits, batch[b].e, batch[b].id);
}

/* The number of ranks whose score lower bound (k / M, as -ln(1 - u) >= u... exactly: u >= k/M
 * and the score grows with u) is below time t: every rank from there on scores at least t. */
static uint32_t rank_bound(double t, uint32_t weight, uint32_t m)
{
	double b = ceil((double)m * -expm1(-t * (double)weight));

	return b >= (double)m ? m : (uint32_t)b;
}

/* Memory a table build needs besides the table, kept from one table to the next: most of the
 * cost of fresh memory is faulting its pages in. */
struct scratch {
	size_t cap_n, cap_m;
	struct walker *w;
	struct row *rows;
	uint32_t *todo;
	uint64_t *done;
};

static void scratch_free(struct scratch *sc)
{
	free(sc->w);
	free(sc->rows);
	free(sc->todo);
	free(sc->done);
	memset(sc, 0, sizeof(*sc));
}

static int scratch_fit(struct scratch *sc, size_t n, size_t m)
{
	if (n > sc->cap_n) {
		free(sc->w);
		sc->w = malloc(n * sizeof(*sc->w));
		sc->cap_n = sc->w != NULL ? n : 0;
		if (sc->w == NULL)
			return ST_ENOMEM;
	}
	if (m > sc->cap_m) {
		free(sc->rows);
		free(sc->todo);
		free(sc->done);
		sc->rows = aligned_alloc(64, (m * sizeof(*sc->rows) + 63) / 64 * 64);
		sc->todo = malloc(m * sizeof(*sc->todo));
		sc->done = malloc((m + 63) / 64 * sizeof(*sc->done));
		sc->cap_m = m;
		if (sc->rows == NULL || sc->todo == NULL || sc->done == NULL) {
			scratch_free(sc);
			return ST_ENOMEM;
		}
	}
	return ST_OK;
}

static int table_build(const struct egress_index *ix, enum space sp, const struct rset *set,
		       struct scratch *sc, uint32_t **out)
{
	const uint32_t m = space_m[sp];
	struct walker *w;
	struct row *rows;
	uint32_t *todo, *table;
	uint64_t *done;
	size_t ntodo = m;
	double total = 0.0, t;
	int st;

	st = scratch_fit(sc, set->n, m);
	if (st != ST_OK)
		return st;
	table = malloc((size_t)m * DEPTH * sizeof(*table));
	if (table == NULL)
		return ST_ENOMEM;
	w = sc->w;
	rows = sc->rows;
	todo = sc->todo;
	done = sc->done;
	memset(done, 0, (m + 63) / 64 * sizeof(*done));
	for (uint32_t s = 0; s < m; s++) {
		for (int j = 0; j < DEPTH; j++) {
			rows[s].bits[j] = BITS_EMPTY;
			rows[s].idx[j] = NONE;
		}
		todo[s] = s;
	}
	for (uint32_t i = 0; i < set->n; i++) {
		uint32_t e = set->members[i];
		const struct ient *ie = &ix->ent[e];

		w[i].pos = ie->off[sp];
		w[i].skip = ie->skip[sp];
		w[i].jit = ie->jit[sp];
		w[i].k = 0;
		w[i].e = e;
		w[i].id = ie->id;
		w[i].invw = ie->invw;
		w[i].weight = ix->pub[e].weight;
		total += (double)w[i].weight;
	}

	/* At time t a slot has had about sum(1 - exp(-t w)) <= t * total proposals. Start where
	 * it expects DEPTH, then grow by a fifth per round: a round costs a pass over the members
	 * and over the open slots, a larger step costs proposals past a slot's completion. */
	t = DEPTH / total;
	for (;;) {
		struct {
			uint32_t weight, bound;
		} cache[64];
		struct offer batch[BATCH];
		size_t nb = 0, kept = 0;
		bool all_walked = true;
		float tf = (float)(t * (1.0 - 1e-5));
		uint32_t tbits;

		memset(cache, 0, sizeof(cache));
		memcpy(&tbits, &tf, sizeof(tbits));
		for (uint32_t i = 0; i < set->n; i++) {
			struct walker *wk = &w[i];
			uint32_t c = wk->weight & 63, bound;

			if (cache[c].weight != wk->weight) {
				cache[c].weight = wk->weight;
				cache[c].bound = rank_bound(t, wk->weight, m);
			}
			bound = cache[c].bound;
			while (wk->k < bound) {
				uint32_t s = wk->pos;

				if (!((done[s >> 6] >> (s & 63)) & 1)) {
					__builtin_prefetch(&rows[s], 1);
					batch[nb++] = (struct offer){
						s, race_bits(wk->jit, wk->k, sp, wk->invw), wk->e, wk->id
					};
					if (nb == BATCH) {
						batch_apply(ix, rows, batch, nb);
						nb = 0;
					}
				}
				wk->k++;
				/* Branch-free: the wrap is a coin flip the predictor cannot learn. */
				s += wk->skip;
				wk->pos = s - (m & (0u - (uint32_t)(s >= m)));
			}
			if (wk->k < m)
				all_walked = false;
		}
		batch_apply(ix, rows, batch, nb);
		/* A slot is complete when its DEPTH-th score is below t (with a margin for the
		 * rounding of the bound and of the series): every proposal not yet made scores at
		 * least t. */
		for (size_t i = 0; i < ntodo; i++) {
			uint32_t s = todo[i];

			if (all_walked || rows[s].bits[DEPTH - 1] < tbits)
				done[s >> 6] |= 1ULL << (s & 63);
			else
				todo[kept++] = s;
		}
		ntodo = kept;
		/* The last slots are the coupon collector's tail: finishing them would take
		 * another half of the proposals (ln M of them per slot in all). Leave at most
		 * 1/4096 of the rows with unsure places instead; a pick that needs one scans. */
		if (ntodo <= (m >> 12) || all_walked)
			break;
		t *= 1.2;
	}
	for (size_t i = 0; i < ntodo; i++) {
		struct row *r = &rows[todo[i]];
		float tf = (float)(t * (1.0 - 1e-5));
		uint32_t tbits;

		memcpy(&tbits, &tf, sizeof(tbits));
		for (int j = 0; j < DEPTH; j++) {
			if (r->bits[j] >= tbits)
				r->idx[j] |= UNSURE;
		}
	}
	for (uint32_t s = 0; s < m; s++)
		memcpy(&table[(size_t)s * DEPTH], rows[s].idx, sizeof(rows[s].idx));
	*out = table;
	return ST_OK;
}

/* ---- building the index ------------------------------------------------------------------- */

struct set_ref {
	uint32_t label;
	enum fam fam;
	uint32_t n;
};

static int cmp_set_ref(const void *a, const void *b)
{
	const struct set_ref *x = a, *y = b;

	if (x->n != y->n)
		return x->n > y->n ? -1 : 1;
	if (x->label != y->label)
		return x->label < y->label ? -1 : 1;
	return x->fam < y->fam ? -1 : x->fam > y->fam;
}

static int tables_build(struct egress_index *ix)
{
	struct scratch sc = { 0 };
	struct set_ref *refs = NULL;
	size_t nrefs = 0;
	int st = ST_OK;

	for (int f = 0; f < FAMS && st == ST_OK; f++) {
		if (ix->all[f].n > SCAN_MAX) {
			st = table_build(ix, SPACE_BIG, &ix->all[f], &sc, &ix->tables[ix->ntables]);
			if (st == ST_OK)
				ix->all[f].table = ix->tables[ix->ntables++];
		}
	}
	refs = malloc((ix->nlabels * FAMS + 1) * sizeof(*refs));
	if (st != ST_OK || refs == NULL) {
		st = st != ST_OK ? st : ST_ENOMEM;
		goto out;
	}
	for (uint32_t l = 0; l < ix->nlabels; l++) {
		for (int f = 0; f < FAMS; f++) {
			if (ix->labels[l].set[f].n > SCAN_MAX)
				refs[nrefs++] = (struct set_ref){ l, (enum fam)f, ix->labels[l].set[f].n };
		}
	}
	qsort(refs, nrefs, sizeof(*refs), cmp_set_ref);
	for (size_t r = 0; r < nrefs; r++) {
		struct rset *set = &ix->labels[refs[r].label].set[refs[r].fam];

		/* "country=de" and "=de" usually hold the same entries: one table serves both. */
		for (size_t q = 0; q < r; q++) {
			const struct rset *other = &ix->labels[refs[q].label].set[refs[q].fam];

			if (other->table != NULL && other->n == set->n &&
			    memcmp(other->members, set->members, set->n * sizeof(uint32_t)) == 0) {
				set->table = other->table;
				break;
			}
		}
		if (set->table != NULL || ix->ntables == ARRAY_SIZE(ix->tables))
			continue;
		st = table_build(ix, SPACE_SMALL, set, &sc, &ix->tables[ix->ntables]);
		if (st != ST_OK)
			goto out;
		set->table = ix->tables[ix->ntables++];
	}
out:
	free(refs);
	scratch_free(&sc);
	return st;
}

/* Public copies and the per-entry scoring data; labels interned. */
static int entries_copy(struct egress_index *ix, const struct egress_entry *entries, size_t n)
{
	size_t ntags = 0, nbytes = 0, cap = 16, used = 0;
	char *arena;
	struct egress_tag *tags;

	for (size_t i = 0; i < n; i++) {
		for (size_t t = 0; t < entries[i].ntags; t++) {
			size_t kl = strlen(entries[i].tags[t].key), vl = strlen(entries[i].tags[t].value);

			ntags++;
			/* the copy "key\0value\0", and the labels "key=value\0" "=value\0" */
			nbytes += (kl + vl + 2) + (kl + vl + 2) + (vl + 2);
		}
	}
	while (cap < 4 * 2 * ntags)
		cap *= 2;
	ix->pub = calloc(n ? n : 1, sizeof(*ix->pub));
	ix->ent = aligned_alloc(64, (n ? n : 1) * sizeof(*ix->ent));
	ix->tags = calloc(ntags ? ntags : 1, sizeof(*ix->tags));
	ix->strings = malloc(nbytes ? nbytes : 1);
	ix->labels_of = calloc(2 * ntags + 1, sizeof(*ix->labels_of));
	ix->labels = calloc(2 * ntags + 1, sizeof(*ix->labels));
	ix->label_hash = calloc(cap, sizeof(*ix->label_hash));
	if (ix->pub == NULL || ix->ent == NULL || ix->tags == NULL || ix->strings == NULL ||
	    ix->labels_of == NULL || ix->labels == NULL || ix->label_hash == NULL)
		return ST_ENOMEM;
	memset(ix->ent, 0, (n ? n : 1) * sizeof(*ix->ent));
	ix->label_cap = cap;
	ix->n = n;
	arena = ix->strings;
	tags = ix->tags;
	for (size_t i = 0; i < n; i++) {
		const struct egress_entry *src = &entries[i];
		struct ient *ie = &ix->ent[i];

		ix->pub[i] = *src;
		ix->pub[i].tags = src->ntags > 0 ? tags : NULL;
		ie->id = src->id;
		ie->invw = 1.0 / (double)src->weight;
		ie->fam = src->family == AF_INET ? FAM_V4 : FAM_V6;
		for (int sp = 0; sp < SPACES; sp++) {
			place_of(src->id, (enum space)sp, &ie->off[sp], &ie->skip[sp], &ie->jit[sp]);
			ie->inv[sp] = mod_inverse(ie->skip[sp], space_m[sp]);
		}
		ie->label_first = (uint32_t)used;
		for (size_t t = 0; t < src->ntags; t++) {
			const char *k = src->tags[t].key, *v = src->tags[t].value;
			size_t kl = strlen(k), vl = strlen(v);
			char name[LABEL_MAX];
			uint32_t ids[2];

			memcpy(arena, k, kl + 1);
			tags->key = arena;
			arena += kl + 1;
			memcpy(arena, v, vl + 1);
			tags->value = arena;
			arena += vl + 1;
			tags++;
			/* Validated: both fit, so label_format succeeds. */
			(void)label_format(name, k, EGRESS_TAG_MAX, v);
			ids[0] = label_intern(ix, name, &arena);
			(void)label_format(name, "", 0, v);
			ids[1] = label_intern(ix, name, &arena);
			for (int j = 0; j < 2; j++) {
				if (!entry_has_label(ix, (uint32_t)i, ids[j])) {
					ix->labels_of[used++] = ids[j];
					ie->nlabels++;
				}
			}
		}
	}
	return ST_OK;
}

/* Member lists, ascending entry index: the whole pool and each label, per family. */
static int members_fill(struct egress_index *ix)
{
	size_t total = ix->n, at = 0;
	uint32_t *m;

	for (size_t i = 0; i < ix->n; i++) {
		const struct ient *ie = &ix->ent[i];

		ix->all[ie->fam].n++;
		for (uint32_t j = 0; j < ie->nlabels; j++)
			ix->labels[ix->labels_of[ie->label_first + j]].set[ie->fam].n++;
		total += ie->nlabels;
	}
	ix->members = malloc((total ? total : 1) * sizeof(*ix->members));
	if (ix->members == NULL)
		return ST_ENOMEM;
	m = ix->members;
	/* Point each list at its room; fill by counting up again. */
	for (int f = 0; f < FAMS; f++) {
		ix->all[f].members = m + at;
		at += ix->all[f].n;
		ix->all[f].n = 0;
	}
	for (size_t l = 0; l < ix->nlabels; l++) {
		for (int f = 0; f < FAMS; f++) {
			ix->labels[l].set[f].members = m + at;
			at += ix->labels[l].set[f].n;
			ix->labels[l].set[f].n = 0;
		}
	}
	for (size_t i = 0; i < ix->n; i++) {
		const struct ient *ie = &ix->ent[i];
		struct rset *a = &ix->all[ie->fam];

		m[a->members - m + a->n++] = (uint32_t)i;
		for (uint32_t j = 0; j < ie->nlabels; j++) {
			struct rset *s = &ix->labels[ix->labels_of[ie->label_first + j]].set[ie->fam];

			m[s->members - m + s->n++] = (uint32_t)i;
		}
	}
	return ST_OK;
}

int egress_index_build(const struct egress_entry *entries, size_t n, struct egress_index **out)
{
	struct egress_index *ix;
	int st;

	if (n > EGRESS_INDEX_MAX || (n > 0 && entries == NULL))
		return ST_EINVAL;
	st = check_entries(entries, n);
	if (st != ST_OK)
		return st;
	ix = calloc(1, sizeof(*ix));
	if (ix == NULL)
		return ST_ENOMEM;
	st = entries_copy(ix, entries, n);
	if (st == ST_OK)
		st = members_fill(ix);
	if (st == ST_OK)
		st = tables_build(ix);
	if (st != ST_OK) {
		egress_index_free(ix);
		return st;
	}
	*out = ix;
	return ST_OK;
}

void egress_index_free(struct egress_index *ix)
{
	if (ix == NULL)
		return;
	for (size_t i = 0; i < ix->ntables; i++)
		free(ix->tables[i]);
	free(ix->members);
	free(ix->label_hash);
	free(ix->labels);
	free(ix->labels_of);
	free(ix->strings);
	free(ix->tags);
	free(ix->ent);
	free(ix->pub);
	free(ix);
}

size_t egress_index_count(const struct egress_index *ix)
{
	return ix == NULL ? 0 : ix->n;
}

const struct egress_entry *egress_index_entry(const struct egress_index *ix, size_t i)
{
	return ix != NULL && i < ix->n ? &ix->pub[i] : NULL;
}

/* ---- the pick ---------------------------------------------------------------------------- */

struct cand {
	uint64_t key;
	uint32_t e;
};

struct rank_ctx {
	const struct egress_index *ix;
	enum space sp;
	uint32_t slot;
	const uint32_t *need; /* labels an eligible entry carries, besides its set's */
	size_t nneed;
	bool has_after; /* only keys above `after` (the last place already produced) */
	uint64_t after;
};

static bool eligible(const struct rank_ctx *c, uint32_t e)
{
	for (size_t i = 0; i < c->nneed; i++) {
		if (!entry_has_label(c->ix, e, c->need[i]))
			return false;
	}
	return true;
}

/* Insert into cand[0..*got) sorted by key, keeping at most want. */
static void cand_insert(struct cand *cand, size_t *got, size_t want, uint64_t key, uint32_t e)
{
	size_t j = *got;

	if (j == want) {
		if (key >= cand[want - 1].key)
			return;
		j--;
	} else {
		(*got)++;
	}
	for (; j > 0 && cand[j - 1].key > key; j--)
		cand[j] = cand[j - 1];
	cand[j] = (struct cand){ key, e };
}

/* The first `want` eligible members of set in the ranking of c->slot, after c->after. */
static size_t set_rank(const struct rank_ctx *c, const struct rset *set, size_t want,
		       struct cand *cand)
{
	size_t got = 0;

	if (set->table != NULL) {
		const uint32_t *row = set->table + (size_t)c->slot * DEPTH;
		int j;

		/* The entries' lines are fetched in parallel, not one miss after another. */
		for (j = 0; j < DEPTH; j++) {
			if ((row[j] & ~UNSURE) < c->ix->n)
				__builtin_prefetch(&c->ix->ent[row[j] & ~UNSURE]);
		}
		/* The row is the exact head of the set's ranking: members outside it rank lower.
		 * A place marked unsure (rarely: see table_build) ends what the row can tell. */
		for (j = 0; j < DEPTH && !(row[j] & UNSURE); j++) {
			uint64_t key;

			if (!eligible(c, row[j]))
				continue;
			key = entry_key(c->ix, c->sp, c->slot, row[j]);
			if (c->has_after && key <= c->after)
				continue;
			cand[got++] = (struct cand){ key, row[j] };
			if (got == want)
				return got;
		}
		got = 0;
	}
	for (uint32_t i = 0; i < set->n; i++) {
		uint32_t e = set->members[i];
		uint64_t key;

		/* The bound first: it reads the entry's line, the labels are another. */
		if (got == want &&
		    !entry_may_beat(c->ix, c->sp, c->slot, e, (uint32_t)(cand[want - 1].key >> 32)))
			continue;
		if (!eligible(c, e))
			continue;
		key = entry_key(c->ix, c->sp, c->slot, e);
		if (c->has_after && key <= c->after)
			continue;
		cand_insert(cand, &got, want, key, e);
	}
	return got;
}

/* Resolve the filters to label ids, distinct. ST_OK, ST_EPERM (a label no entry carries),
 * ST_EINVAL (too many). */
static int filters_resolve(const struct egress_index *ix, const struct egress_request *req,
			   uint32_t *need, size_t *nneed)
{
	size_t n = 0;

	if (req->nfilters > FILTERS_MAX || (req->nfilters > 0 && req->filters == NULL))
		return ST_EINVAL;
	for (size_t i = 0; i < req->nfilters; i++) {
		const struct egress_tag_filter *f = &req->filters[i];
		char name[LABEL_MAX];
		long id;
		size_t j;

		if (!label_format(name, f->key, EGRESS_TAG_MAX, f->value))
			return ST_EPERM;
		id = label_find(ix, name, label_hash_of(name));
		if (id < 0)
			return ST_EPERM;
		for (j = 0; j < n && need[j] != (uint32_t)id; j++)
			;
		if (j == n)
			need[n++] = (uint32_t)id;
	}
	*nneed = n;
	return ST_OK;
}

/* Nothing eligible in the allowed families: is there an entry of another family carrying every
 * required label? Only on this failure path, so a scan of the smallest label's sets. */
static int no_pick_status(const struct egress_index *ix, const uint32_t *need, size_t nneed)
{
	struct rank_ctx c = { ix, SPACE_SMALL, 0, need, nneed, false, 0 };
	const struct label *l;

	if (nneed == 0)
		return ST_EADDRTYPE;
	l = &ix->labels[need[0]];
	for (int f = 0; f < FAMS; f++) {
		for (uint32_t i = 0; i < l->set[f].n; i++) {
			if (eligible(&c, l->set[f].members[i]))
				return ST_EADDRTYPE;
		}
	}
	return ST_EPERM;
}

int egress_pick(const struct egress_index *ix, const struct egress_request *req,
		const struct egress_entry **out, size_t max)
{
	uint32_t need[FILTERS_MAX];
	size_t nneed = 0, produced = 0;
	const struct rset *sets[FAMS] = { NULL, NULL };
	struct rank_ctx c;
	int st;

	if (ix == NULL || ix->n == 0)
		return ST_ENOTFOUND;
	if (req == NULL || req->key == NULL || out == NULL || max == 0)
		return ST_EINVAL;
	st = filters_resolve(ix, req, need, &nneed);
	if (st != ST_OK)
		return st;

	c.ix = ix;
	c.has_after = false;
	c.after = 0;
	if (nneed == 0) {
		c.sp = SPACE_BIG;
		c.need = need;
		c.nneed = 0;
		for (int f = 0; f < FAMS; f++)
			sets[f] = &ix->all[f];
	} else {
		/* Tag filters rank in the SMALL space. The smallest label's sets are the candidates;
		 * any choice gives the same ranking, this one scans least. */
		size_t best = 0, best_n = SIZE_MAX;

		for (size_t i = 0; i < nneed; i++) {
			const struct label *l = &ix->labels[need[i]];
			size_t n = 0;

			for (int f = 0; f < FAMS; f++) {
				if (req->families & (f == FAM_V4 ? EGRESS_FAMILY_V4 : EGRESS_FAMILY_V6))
					n += l->set[f].n;
			}
			if (n < best_n) {
				best_n = n;
				best = i;
			}
		}
		uint32_t chosen = need[best];

		for (int f = 0; f < FAMS; f++)
			sets[f] = &ix->labels[chosen].set[f];
		/* The chosen label goes last, out of the checks: every member of its sets has it. */
		need[best] = need[nneed - 1];
		need[nneed - 1] = chosen;
		c.sp = SPACE_SMALL;
		c.need = need;
		c.nneed = nneed - 1;
	}
	if (!(req->families & EGRESS_FAMILY_V4))
		sets[FAM_V4] = NULL;
	if (!(req->families & EGRESS_FAMILY_V6))
		sets[FAM_V6] = NULL;
	for (int f = 0; f < FAMS; f++) {
		if (sets[f] != NULL && sets[f]->n == 0)
			sets[f] = NULL;
	}
	c.slot = key_slot(req->key, c.sp);
	for (int f = 0; f < FAMS; f++) {
		if (sets[f] != NULL && sets[f]->table != NULL)
			__builtin_prefetch(&sets[f]->table[(size_t)c.slot * DEPTH]);
	}

	while (produced < max && (sets[FAM_V4] != NULL || sets[FAM_V6] != NULL)) {
		size_t want = MIN(max - produced, (size_t)CHUNK), got;
		struct cand a[CHUNK], b[CHUNK], merged[CHUNK];
		const struct cand *res;

		if (sets[FAM_V4] == NULL || sets[FAM_V6] == NULL) {
			got = set_rank(&c, sets[FAM_V4] != NULL ? sets[FAM_V4] : sets[FAM_V6], want, a);
			res = a;
		} else {
			size_t na = set_rank(&c, sets[FAM_V4], want, a);
			size_t nb = set_rank(&c, sets[FAM_V6], want, b);
			size_t i = 0, j = 0;

			for (got = 0; got < want && (i < na || j < nb); got++) {
				if (j == nb || (i < na && a[i].key < b[j].key))
					merged[got] = a[i++];
				else
					merged[got] = b[j++];
			}
			res = merged;
		}
		for (size_t i = 0; i < got; i++)
			out[produced++] = &ix->pub[res[i].e];
		if (got < want)
			break;
		c.has_after = true;
		c.after = res[got - 1].key;
	}
	if (produced > 0)
		return (int)produced;
	/* need[] was reordered, not shortened: still every required label. */
	return no_pick_status(ix, need, nneed);
}

/* ---- keys and addresses ------------------------------------------------------------------ */

void egress_sticky_key(uint8_t out[static EGRESS_KEY_BYTES],
		       const uint8_t base[static EGRESS_KEY_BYTES], uint32_t ttl, int64_t now)
{
	uint8_t wbytes[8];
	struct keys_part parts[2];
	int64_t q, r, window;
	uint64_t phase;

	if (ttl == 0) {
		memcpy(out, base, EGRESS_KEY_BYTES);
		return;
	}
	/* Each key's windows start at its own phase, so keys do not all move at one instant.
	 * window = floor((now + phase) / ttl), computed without overflowing now + phase. */
	phase = load64le(base) % ttl;
	q = now / (int64_t)ttl;
	r = now % (int64_t)ttl;
	if (r < 0) {
		q--;
		r += ttl;
	}
	window = q + (r + (int64_t)phase) / (int64_t)ttl;
	for (int i = 0; i < 8; i++)
		wbytes[i] = (uint8_t)((uint64_t)window >> (8 * i));
	parts[0] = (struct keys_part){ "window", 6 };
	parts[1] = (struct keys_part){ wbytes, sizeof(wbytes) };
	keys_hash(out, base, parts, 2);
}

void egress_source(const struct egress_entry *e, const uint8_t key[static EGRESS_KEY_BYTES],
		   struct addr *out)
{
	uint8_t ip[16], h[KEYS_HASH_BYTES], idb[4];
	struct keys_part parts[2];
	bool zero = true;

	if (e->family == AF_INET) {
		addr_from_ipv4(out, e->addr, 0);
		return;
	}
	memcpy(ip, e->addr, sizeof(ip));
	if (e->prefix_len < 128) {
		/* Host bits from the key and the entry: the same key keeps its address in this
		 * prefix for its window, two prefixes give unrelated host parts. */
		for (int i = 0; i < 4; i++)
			idb[i] = (uint8_t)(e->id >> (8 * i));
		parts[0] = (struct keys_part){ "prefix host", 11 };
		parts[1] = (struct keys_part){ idb, sizeof(idb) };
		keys_hash(h, key, parts, 2);
		for (int i = 0; i < 16; i++) {
			int first = 8 * i;
			uint8_t host;

			if (first + 8 <= e->prefix_len)
				continue;
			host = first >= e->prefix_len ? 0xff : (uint8_t)(0xff >> (e->prefix_len - first));
			ip[i] = (uint8_t)((ip[i] & ~host) | (h[i] & host));
			if (ip[i] & host)
				zero = false;
		}
		/* The all-zero host is the subnet-router anycast address (RFC 4291 §2.6.1). */
		if (zero)
			ip[15] |= 1;
	}
	addr_from_ipv6(out, ip, 0);
}
