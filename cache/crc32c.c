/*
 * crc32c.c: CRC-32C (Castagnoli), the checksum in every chunk file's trailer.
 *
 * Where the processor has SSE4.2 the crc32 instruction does the work. One stream of
 * it is bound by the instruction's latency, so long buffers are cut in three parts
 * whose CRCs run interleaved and are then joined: a CRC of part A followed by part B
 * is CRC(A) "shifted" over len(B) zero bytes, xored with CRC(B) computed from zero.
 * The shift is a linear operator over GF(2); for the two fixed part lengths it is
 * applied with four 256-entry tables built once. Elsewhere a byte table is used.
 */
#include "cache_private.h"

#include <pthread.h>
#include <string.h>

#define CRC_POLY 0x82F63B78u	/* CRC-32C, reflected */
#define CRC_LONG 8192		/* bytes per part of the long interleave */
#define CRC_SHORT 256		/* bytes per part of the short interleave */

static uint32_t crc_table[256];
static uint32_t crc_long[4][256], crc_short[4][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_hw;

/* ---- the zeros operator ---- */

static uint32_t gf2_times(const uint32_t *mat, uint32_t vec)
{
	uint32_t sum = 0;

	for (; vec; vec >>= 1, mat++)
		if (vec & 1)
			sum ^= *mat;
	return sum;
}

static void gf2_square(uint32_t *square, const uint32_t *mat)
{
	for (int n = 0; n < 32; n++)
		square[n] = gf2_times(mat, mat[n]);
}

/* The operator that appends len zero bytes (len a power of two) to a CRC. */
static void zeros_op(uint32_t *even, size_t len)
{
	uint32_t odd[32], row = 1;

	odd[0] = CRC_POLY; /* one zero bit */
	for (int n = 1; n < 32; n++) {
		odd[n] = row;
		row <<= 1;
	}
	gf2_square(even, odd); /* two zero bits */
	gf2_square(odd, even); /* four: one zero nibble */
	/* each square doubles the zeros; one byte is two nibbles */
	do {
		gf2_square(even, odd);
		len >>= 1;
		if (len == 0)
			return;
		gf2_square(odd, even);
		len >>= 1;
	} while (len);
	memcpy(even, odd, sizeof(odd));
}

static void zeros_tables(uint32_t zeros[4][256], size_t len)
{
	uint32_t op[32];

	zeros_op(op, len);
	for (uint32_t n = 0; n < 256; n++) {
		zeros[0][n] = gf2_times(op, n);
		zeros[1][n] = gf2_times(op, n << 8);
		zeros[2][n] = gf2_times(op, n << 16);
		zeros[3][n] = gf2_times(op, n << 24);
	}
}

static uint32_t shift(uint32_t zeros[4][256], uint32_t crc)
{
	return zeros[0][crc & 0xff] ^ zeros[1][(crc >> 8) & 0xff] ^ zeros[2][(crc >> 16) & 0xff] ^
	       zeros[3][crc >> 24];
}

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ CRC_POLY : c >> 1;
		crc_table[i] = c;
	}
	zeros_tables(crc_long, CRC_LONG);
	zeros_tables(crc_short, CRC_SHORT);
#if defined(__x86_64__)
	__builtin_cpu_init();
	crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t crc_sw(uint32_t crc, const unsigned char *p, size_t len)
{
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

#if defined(__x86_64__)
static inline uint64_t load64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

/* Three interleaved streams over parts of part bytes, joined with the tables. */
__attribute__((target("sse4.2"))) static uint32_t crc_hw_parts(
	uint32_t crc, const unsigned char **pp, size_t *lenp, size_t part, uint32_t zeros[4][256])
{
	const unsigned char *p = *pp;
	size_t len = *lenp;

	while (len >= 3 * part) {
		uint64_t c0 = crc, c1 = 0, c2 = 0;
		const unsigned char *end = p + part;
		do {
			c0 = __builtin_ia32_crc32di(c0, load64(p));
			c1 = __builtin_ia32_crc32di(c1, load64(p + part));
			c2 = __builtin_ia32_crc32di(c2, load64(p + 2 * part));
			p += 8;
		} while (p < end);
		crc = shift(zeros, (uint32_t)c0) ^ (uint32_t)c1;
		crc = shift(zeros, crc) ^ (uint32_t)c2;
		p += 2 * part;
		len -= 3 * part;
	}
	*pp = p;
	*lenp = len;
	return crc;
}

__attribute__((target("sse4.2"))) static uint32_t crc_hw_run(uint32_t crc,
							      const unsigned char *p,
							      size_t len)
{
	while (len && ((uintptr_t)p & 7)) {
		crc = __builtin_ia32_crc32qi(crc, *p++);
		len--;
	}
	crc = crc_hw_parts(crc, &p, &len, CRC_LONG, crc_long);
	crc = crc_hw_parts(crc, &p, &len, CRC_SHORT, crc_short);
	uint64_t c = crc;
	while (len >= 8) {
		c = __builtin_ia32_crc32di(c, load64(p));
		p += 8;
		len -= 8;
	}
	crc = (uint32_t)c;
	while (len--)
		crc = __builtin_ia32_crc32qi(crc, *p++);
	return crc;
}
#endif

uint32_t cache_crc32c(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc_once, crc_init);
	crc = ~crc;
#if defined(__x86_64__)
	if (crc_hw)
		return ~crc_hw_run(crc, buf, len);
#endif
	return ~crc_sw(crc, buf, len);
}

uint32_t cache_crc32c_portable(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc_once, crc_init);
	return ~crc_sw(~crc, buf, len);
}
