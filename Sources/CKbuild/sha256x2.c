// SHA-256 with the x86 SHA extensions, two independent messages at a time.
//
// Ingesting a large file hashes every byte twice: once for the file's KID and
// once for the KID of the chunk it falls in. SHA256RNDS2 has a long latency
// and little throughput use in one dependency chain, so running the two
// chains interleaved on one core costs little more than one. On a machine
// without the extensions `kb_sha256_hw` is 0 and callers use swift-crypto.
#include <string.h>
#include "ckbuild.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

static const uint32_t K256[64] __attribute__((aligned(16))) = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define TARGET __attribute__((target("sha,sse4.1,ssse3")))

// The state lives in the two registers the instructions want: ABEF and CDGH.
TARGET static inline void load_state(const uint32_t h[8], __m128i *abef, __m128i *cdgh) {
    __m128i dcba = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1); // CDAB
    __m128i efgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B); // EFGH
    *abef = _mm_alignr_epi8(dcba, efgh, 8);
    *cdgh = _mm_blend_epi16(efgh, dcba, 0xF0);
}

TARGET static inline void store_state(uint32_t h[8], __m128i abef, __m128i cdgh) {
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(dchg, feba, 8));
}

// W[g] for g >= 4 from the four before it (FIPS 180-4 message schedule, 4 words at a time).
#define SCHEDULE(W, g) \
    W[g] = _mm_sha256msg2_epu32(_mm_add_epi32(_mm_sha256msg1_epu32(W[(g) - 4], W[(g) - 3]), \
                                              _mm_alignr_epi8(W[(g) - 1], W[(g) - 2], 4)), W[(g) - 1])

#define ROUNDS(S0, S1, W, g) do { \
    __m128i m = _mm_add_epi32(W[g], _mm_load_si128((const __m128i *)&K256[4 * (g)])); \
    S1 = _mm_sha256rnds2_epu32(S1, S0, m); \
    S0 = _mm_sha256rnds2_epu32(S0, S1, _mm_shuffle_epi32(m, 0x0E)); \
} while (0)

TARGET static void blocks1(uint32_t h[8], const uint8_t *p, size_t n) {
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i s0, s1;
    load_state(h, &s0, &s1);
    for (; n; n--, p += 64) {
        __m128i a0 = s0, a1 = s1, W[16];
        _Pragma("GCC unroll 4") for (int g = 0; g < 4; g++) W[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * g)), swap);
        _Pragma("GCC unroll 16") for (int g = 0; g < 16; g++) {
            if (g >= 4) SCHEDULE(W, g);
            ROUNDS(s0, s1, W, g);
        }
        s0 = _mm_add_epi32(s0, a0);
        s1 = _mm_add_epi32(s1, a1);
    }
    store_state(h, s0, s1);
}

// Two messages, n blocks of each, their rounds interleaved.
TARGET static void blocks2(uint32_t ha[8], const uint8_t *pa, uint32_t hb[8], const uint8_t *pb, size_t n) {
    const __m128i swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i s0, s1, t0, t1;
    load_state(ha, &s0, &s1);
    load_state(hb, &t0, &t1);
    for (; n; n--, pa += 64, pb += 64) {
        __m128i a0 = s0, a1 = s1, b0 = t0, b1 = t1, WA[16], WB[16];
        _Pragma("GCC unroll 4") for (int g = 0; g < 4; g++) {
            WA[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pa + 16 * g)), swap);
            WB[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(pb + 16 * g)), swap);
        }
        _Pragma("GCC unroll 16") for (int g = 0; g < 16; g++) {
            if (g >= 4) { SCHEDULE(WA, g); SCHEDULE(WB, g); }
            ROUNDS(s0, s1, WA, g);
            ROUNDS(t0, t1, WB, g);
        }
        s0 = _mm_add_epi32(s0, a0); s1 = _mm_add_epi32(s1, a1);
        t0 = _mm_add_epi32(t0, b0); t1 = _mm_add_epi32(t1, b1);
    }
    store_state(ha, s0, s1);
    store_state(hb, t0, t1);
}

static int detect(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int sse = (c & bit_SSE4_1) && (c & bit_SSSE3);
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return sse && (b & bit_SHA);
}

int kb_sha256_hw(void) {
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) { v = detect(); __atomic_store_n(&cached, v, __ATOMIC_RELAXED); }
    return v;
}
#else
int kb_sha256_hw(void) { return 0; }
static void blocks1(uint32_t h[8], const uint8_t *p, size_t n) { (void)h; (void)p; (void)n; }
static void blocks2(uint32_t ha[8], const uint8_t *pa, uint32_t hb[8], const uint8_t *pb, size_t n) { (void)ha; (void)pa; (void)hb; (void)pb; (void)n; }
#endif

void kb_sha256_init(kb_sha256 *c) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, iv, sizeof iv);
    c->buffered = 0;
    c->total = 0;
}

// Feeds bytes into the partial block; returns how many were taken.
static size_t fill(kb_sha256 *c, const uint8_t *p, size_t len) {
    if (c->buffered == 0) return 0;
    size_t take = 64 - c->buffered < len ? 64 - c->buffered : len;
    memcpy(c->block + c->buffered, p, take);
    c->buffered += take;
    if (c->buffered == 64) { blocks1(c->h, c->block, 1); c->buffered = 0; }
    return take;
}

static void keep(kb_sha256 *c, const uint8_t *p, size_t len) {
    memcpy(c->block, p, len);
    c->buffered = len;
}

void kb_sha256_update(kb_sha256 *c, const uint8_t *p, size_t len) {
    c->total += len;
    size_t t = fill(c, p, len);
    p += t; len -= t;
    if (len == 0) return;
    blocks1(c->h, p, len / 64);
    keep(c, p + (len & ~(size_t)63), len & 63);
}

void kb_sha256_update2(kb_sha256 *a, const uint8_t *pa, size_t la, kb_sha256 *b, const uint8_t *pb, size_t lb) {
    a->total += la; b->total += lb;
    size_t t = fill(a, pa, la); pa += t; la -= t;
    t = fill(b, pb, lb); pb += t; lb -= t;
    // A stream that still has a partial block has taken all its bytes.
    size_t na = a->buffered ? 0 : la / 64, nb = b->buffered ? 0 : lb / 64;
    size_t both = na < nb ? na : nb;
    blocks2(a->h, pa, b->h, pb, both);
    if (!a->buffered) {
        blocks1(a->h, pa + 64 * both, na - both);
        keep(a, pa + (la & ~(size_t)63), la & 63);
    }
    if (!b->buffered) {
        blocks1(b->h, pb + 64 * both, nb - both);
        keep(b, pb + (lb & ~(size_t)63), lb & 63);
    }
}

void kb_sha256_final(kb_sha256 *c, uint8_t out[32]) {
    uint64_t bits = c->total * 8;
    uint8_t pad[72] = {0x80};
    size_t padlen = (c->buffered < 56 ? 56 : 120) - c->buffered;
    for (int i = 0; i < 8; i++) pad[padlen + i] = (uint8_t)(bits >> (56 - 8 * i));
    uint64_t total = c->total;
    kb_sha256_update(c, pad, padlen + 8);
    c->total = total;
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(c->h[i] >> 24); out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(c->h[i] >> 8); out[4 * i + 3] = (uint8_t)c->h[i];
    }
}
