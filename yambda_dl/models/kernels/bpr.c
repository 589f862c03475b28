/* BPR's CPU kernel: implicit's per-triple SGD, each triple drawn, verified and applied in one pass.
 *
 * A batch of `count` triples is drawn from its own 64-bit seed (xoshiro256**, seeded through splitmix64): a
 * uniform nonzero gives the user and the positive; the negative is the item of another uniform nonzero
 * (popularity) or a uniform item. With a bitmap or a hash table of the (user, item) keys, a triple whose negative
 * the user has is skipped (implicit's verify_negatives). A kept triple moves its three rows in place by
 *     x = p.(qi - qj),  pull = lr * sigmoid(-x),  shrink = lr * reg
 *     p += pull * (qi - qj) - shrink * p;  qi += pull * p - shrink * qi;  qj += -pull * p - shrink * qj
 * every right-hand side read before the step (the formula of models/bpr.py batch_steps for one triple). With
 * item_bias, the last column is the item bias and, for users, a column of ones that stays 1.
 *
 * Several threads may run batches on the same factors at once, without locks (Hogwild, as implicit's OpenMP
 * threads do): a row two threads update at the same moment may lose one of the steps. Memory: none beyond the
 * caller's arrays. The sampler's structures are built by models/bpr.py TripleSampler; this file only reads them.
 */
#include <math.h>
#include <stdint.h>
#include <stddef.h>

typedef struct {
    uint64_t s[4];
} rng_t;

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t next(rng_t *r) { /* xoshiro256** (Blackman and Vigna) */
    uint64_t *s = r->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* uniform in [0, n): the top 64 bits of a 128-bit product (Lemire's multiply-shift; bias below n / 2^64) */
static inline int64_t below(rng_t *r, uint64_t n) { return (int64_t)(((unsigned __int128)next(r) * n) >> 64); }

/* a key's hash bucket: the top 64 - shift bits of key * 2^64 / golden ratio (models/bpr.py bucket_of) */
static inline uint64_t bucket_of(int64_t key, int shift) { return ((uint64_t)key * 0x9E3779B97F4A7C15ULL) >> shift; }

/* 1 when the user has the item: one bit of the bitmap, or the key among its hash bucket's `table_width` slots */
static inline int known(int64_t key, const uint8_t *bitmap, const int64_t *table, int64_t table_width, int shift) {
    if (bitmap != NULL) return (bitmap[key >> 3] >> (key & 7)) & 1;
    const int64_t *slots = table + bucket_of(key, shift) * table_width;
    for (int64_t k = 0; k < table_width; k++)
        if (slots[k] == key) return 1;
    return 0;
}

/* Triples are drawn a group at a time, and the memory each one reads next is prefetched while the group's others
 * are handled (group prefetching): the nonzero arrays, then the verifying byte or bucket, then the three rows. A
 * triple's random reads then overlap instead of each waiting its turn. */
#define GROUP 32

static inline void prefetch_row(const float *row, int64_t width) {
    for (int64_t k = 0; k < width; k += 16) __builtin_prefetch(row + k, 1, 3);
}

static inline void step(float *restrict p, float *qi, float *qj, int64_t width, int item_bias, float lr,
                        float shrink, double *total) {
    float x = 0.0f;
#pragma omp simd reduction(+ : x)
    for (int64_t k = 0; k < width; k++) x += p[k] * (qi[k] - qj[k]);
    const float pull = lr / (1.0f + expf(x));
    *total += x > 0 ? log1p(exp(-(double)x)) : log1p(exp((double)x)) - (double)x;
    const float ones = p[width - 1];
    /* qi and qj may be one row (verify off, the same item drawn twice): += adds both steps, as index_add does */
    for (int64_t k = 0; k < width; k++) {
        const float pk = p[k], a = qi[k], b = qj[k];
        p[k] = pk + pull * (a - b) - shrink * pk;
        qi[k] += pull * pk - shrink * a;
        qj[k] += -pull * pk - shrink * b;
    }
    if (item_bias) p[width - 1] = ones;
}

/* Draw and apply `count` triples; returns how many were kept, adds their loss (softplus(-x), before each step) to
 * *loss. record (NULL or 4 x count int64): user, positive, negative, kept of every draw, for the tests. */
int64_t bpr_batch(float *user_factors, float *item_factors, int64_t width, int item_bias,
                  const int64_t *users, const int64_t *items, int64_t nnz, int64_t num_items, int popularity,
                  const uint8_t *bitmap, const int64_t *table, int64_t table_width, int shift, uint64_t seed,
                  int64_t count, float lr, float reg, double *loss, int64_t *record) {
    rng_t rng;
    for (int k = 0; k < 4; k++) rng.s[k] = splitmix64(&seed);
    const float shrink = lr * reg;
    const int verify = bitmap != NULL || table != NULL;
    int64_t kept = 0, nz[GROUP], other[GROUP], u[GROUP], pos[GROUP], neg[GROUP];
    int keep[GROUP];
    double total = 0.0;
    for (int64_t start = 0; start < count; start += GROUP) {
        const int64_t n = count - start < GROUP ? count - start : GROUP;
        for (int64_t g = 0; g < n; g++) { /* the draws, in order: nonzero, then the negative's nonzero or item */
            nz[g] = below(&rng, (uint64_t)nnz);
            other[g] = popularity ? below(&rng, (uint64_t)nnz) : below(&rng, (uint64_t)num_items);
            __builtin_prefetch(users + nz[g], 0, 3);
            __builtin_prefetch(items + nz[g], 0, 3);
            if (popularity) __builtin_prefetch(items + other[g], 0, 3);
        }
        for (int64_t g = 0; g < n; g++) {
            u[g] = users[nz[g]];
            pos[g] = items[nz[g]];
            neg[g] = popularity ? items[other[g]] : other[g];
            const int64_t key = u[g] * num_items + neg[g];
            if (bitmap != NULL)
                __builtin_prefetch(bitmap + (key >> 3), 0, 3);
            else if (table != NULL)
                __builtin_prefetch(table + bucket_of(key, shift) * table_width, 0, 3);
        }
        for (int64_t g = 0; g < n; g++) {
            keep[g] = !(verify && known(u[g] * num_items + neg[g], bitmap, table, table_width, shift));
            if (record != NULL) {
                record[start + g] = u[g];
                record[count + start + g] = pos[g];
                record[2 * count + start + g] = neg[g];
                record[3 * count + start + g] = keep[g];
            }
            if (keep[g]) {
                prefetch_row(user_factors + u[g] * width, width);
                prefetch_row(item_factors + pos[g] * width, width);
                prefetch_row(item_factors + neg[g] * width, width);
            }
        }
        for (int64_t g = 0; g < n; g++) {
            if (!keep[g]) continue;
            kept++;
            step(user_factors + u[g] * width, item_factors + pos[g] * width, item_factors + neg[g] * width, width,
                 item_bias, lr, shrink, &total);
        }
    }
    *loss += total;
    return kept;
}
