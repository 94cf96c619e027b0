/*
 * tests/fuzz/fuzz_udp_table.c - libFuzzer target for a UDP association's bookkeeping
 * (socks/udp_table.h), checked against a plain model.
 *
 * The input is a program. For the permitted peers: each 3-byte step adds (a run of) or looks up
 * addresses of a small space (so repeats and evictions are common): IPv4, IPv6, or IPv4-mapped IPv6
 * naming the same host. After every step the table must agree with a model that keeps the UDP_PEERS_MAX most
 * recently added peers. For the rate: each step moves a clock (forwards or backwards) and takes a
 * token; the bucket may never give more than its burst plus rate x elapsed time.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/addr.h"
#include "socks/udp_table.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
	if (!ok)
		abort();
}

/*
 * Id i of the small space (0..511) as an address: ids 0..255 are IPv4 hosts 192.0.2.(i/4) port
 * i%4, written as IPv4 or (mapped = true) as IPv4-mapped IPv6, which is the same peer; ids
 * 256..511 are IPv6 hosts 2001:db8::(i-256)/4 port i%4.
 */
static void id_addr(unsigned id, bool mapped, struct addr *out)
{
	uint8_t ip6[16] = { 0x20, 0x01, 0x0d, 0xb8 };
	uint8_t ip4[4] = { 192, 0, 2, 0 };
	uint16_t port = (uint16_t)(id % 4);

	if (id >= 256) {
		ip6[15] = (uint8_t)((id - 256) / 4);
		addr_from_ipv6(out, ip6, port);
	} else if (mapped) {
		uint8_t m[16] = { 0 };

		m[10] = m[11] = 0xff;
		memcpy(m + 12, ip4, 3);
		m[15] = (uint8_t)(id / 4);
		addr_from_ipv6(out, m, port);
	} else {
		ip4[3] = (uint8_t)(id / 4);
		addr_from_ipv4(out, ip4, port);
	}
}

/*
 * Steps of 3 bytes: OP HI LO; id = (HI << 8 | LO) % 512. OP bit 0: look id up (else add);
 * bit 1: write IPv4 ids in their mapped form; bits 2..7: an add covers that many more ids after
 * id (so the table fills and evicts within a few steps).
 */
static void run_peers(const uint8_t *data, size_t size)
{
	static struct udp_peers t;
	/* The model: last-use time of each id (0 = absent), and how many are present. */
	uint64_t used[512] = { 0 };
	uint64_t clock = 0;
	size_t present = 0;

	udp_peers_init(&t);
	for (size_t i = 0; i + 3 <= size; i += 3) {
		unsigned op = data[i], id = ((unsigned)data[i + 1] << 8 | data[i + 2]) % 512;
		bool mapped = (op & 2) != 0;
		struct addr a;

		if (op & 1) {
			id_addr(id, mapped, &a);
			check(udp_peers_has(&t, &a) == (used[id] != 0));
			continue;
		}
		for (unsigned k = 0; k <= op >> 2; k++, id = (id + 1) % 512) {
			id_addr(id, mapped, &a);
			udp_peers_add(&t, &a);
			if (used[id] == 0) {
				if (present == UDP_PEERS_MAX) {
					unsigned oldest = 512;

					for (unsigned j = 0; j < 512; j++)
						if (used[j] != 0 && (oldest == 512 || used[j] < used[oldest]))
							oldest = j;
					used[oldest] = 0;
				} else {
					present++;
				}
			}
			used[id] = ++clock;
			check(t.n == present);
		}
	}
	for (unsigned id = 0; id < 512; id++) {
		struct addr a;

		id_addr(id, false, &a);
		check(udp_peers_has(&t, &a) == (used[id] != 0));
		id_addr(id, true, &a);
		check(udp_peers_has(&t, &a) == (used[id] != 0));
	}
}

static void run_bucket(const uint8_t *data, size_t size)
{
	struct udp_bucket b;
	double rate = 1 + data[0] % 50, now = 100.0, latest = now;
	double burst = rate > 1 ? rate : 1;
	unsigned taken = 0;

	udp_bucket_init(&b, rate, now);
	for (size_t i = 1; i < size; i++) {
		/* Mostly forwards in small steps; sometimes backwards. */
		now += (data[i] & 0x80) ? -(double)(data[i] & 0x0f) / 100.0 : (double)data[i] / 1000.0;
		if (now > latest)
			latest = now;
		taken += udp_bucket_take(&b, now);
		check(b.tokens >= 0 && b.tokens <= burst + 1e-9);
		check((double)taken <= burst + rate * (latest - 100.0) + 1e-6);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		run_peers(data + 1, size - 1);
	else
		run_bucket(data, size);
	return 0;
}
