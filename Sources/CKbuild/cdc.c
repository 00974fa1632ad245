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
    for (; i < normal; i++) {
        h = (h << 1) + gear[data[i]];
        if (!(h & mask_s)) return i + 1;
    }
    for (; i < max; i++) {
        h = (h << 1) + gear[data[i]];
        if (!(h & mask_l)) return i + 1;
    }
    return max;
}
