// FastCDC (Xia et al., USENIX ATC '16) with normalised chunking, level 2.
// The gear table is fixed forever: changing it moves every boundary and
// defeats dedup against objects already stored.
#include "ckbuild.h"

static uint64_t gear[256];
static int gear_ready;

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void gear_init(void) {
    uint64_t state = 0x6b6275696c642d31ULL; /* "kbuild-1" */
    for (int i = 0; i < 256; i++) gear[i] = splitmix64(&state);
    __atomic_store_n(&gear_ready, 1, __ATOMIC_RELEASE);
}

static int log2_floor(size_t v) {
    int b = 0;
    while (v > 1) { v >>= 1; b++; }
    return b;
}

// A mask of `bits` ones in the high half of the hash: in a gear hash bit k
// depends on the last k+1 bytes, so high bits see the whole window.
static uint64_t high_mask(int bits) {
    if (bits <= 0) return 0;
    if (bits >= 64) return ~0ULL;
    return ~0ULL << (64 - bits);
}

size_t kb_cdc_cut(const uint8_t *data, size_t len, const kb_cdc_params *p) {
    if (!__atomic_load_n(&gear_ready, __ATOMIC_ACQUIRE)) gear_init();
    if (len <= p->min_size) return len;
    size_t max = len < p->max_size ? len : p->max_size;
    size_t normal = p->avg_size < max ? p->avg_size : max;
    int bits = log2_floor(p->avg_size);
    uint64_t mask_s = high_mask(bits + 2); // harder to cut before the average
    uint64_t mask_l = high_mask(bits - 2); // easier after it
    uint64_t h = 0;
    size_t i = p->min_size;
    // Four bytes a step: h4 = 16h + (8a + 4b + 2c + d) keeps one shift and one
    // add on the dependency chain per four bytes; the positions in between are
    // computed and tested off the chain. Same cut points as one byte a step.
#define STEP4(mask) { \
        uint64_t a = gear[data[i]], b = gear[data[i + 1]], c = gear[data[i + 2]], d = gear[data[i + 3]]; \
        uint64_t ab = (a << 1) + b, abc = (ab << 1) + c; \
        uint64_t h1 = (h << 1) + a, h2 = (h << 2) + ab, h3 = (h << 3) + abc; \
        h = (h << 4) + ((abc << 1) + d); \
        if (!(h1 & (mask))) return i + 1; \
        if (!(h2 & (mask))) return i + 2; \
        if (!(h3 & (mask))) return i + 3; \
        if (!(h & (mask))) return i + 4; \
    }
    for (; i + 4 <= normal; i += 4) STEP4(mask_s)
    for (; i < normal; i++) {
        h = (h << 1) + gear[data[i]];
        if (!(h & mask_s)) return i + 1;
    }
    for (; i + 4 <= max; i += 4) STEP4(mask_l)
    for (; i < max; i++) {
        h = (h << 1) + gear[data[i]];
        if (!(h & mask_l)) return i + 1;
    }
#undef STEP4
    return max;
}
