/*
 * sampler.c - choose the next token from logits: penalties (repetition as
 * in Hugging Face, presence/frequency as in OpenAI), temperature, top-k,
 * top-p and min-p, with a per-sequence xoshiro256** generator whose state is
 * part of a sequence's exported state (so a migrated sequence draws the
 * same numbers it would have drawn at home).
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_int.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void eng_rng_seed(struct eng_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t eng_rng_next(struct eng_rng *r)
{
    uint64_t *s = r->s, res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

double eng_rng_uniform(struct eng_rng *r)
{
    return (double)(eng_rng_next(r) >> 11) * 0x1.0p-53;
}

void thaw_sampling_defaults(struct thaw_sampling *s)
{
    memset(s, 0, sizeof *s);
    s->top_p = 1.0f;
    s->repetition_penalty = 1.0f;
}

int thaw_sampling_validate(const struct thaw_sampling *s)
{
    if (!(s->temperature >= 0 && s->temperature <= 100))
        return THAW_FAIL(THAW_EINVAL, "temperature must be in [0, 100]");
    if (s->top_k < 0)
        return THAW_FAIL(THAW_EINVAL, "top_k must be >= 0");
    if (!(s->top_p > 0 && s->top_p <= 1))
        return THAW_FAIL(THAW_EINVAL, "top_p must be in (0, 1]");
    if (!(s->min_p >= 0 && s->min_p <= 1))
        return THAW_FAIL(THAW_EINVAL, "min_p must be in [0, 1]");
    if (!(s->presence_penalty >= -2 && s->presence_penalty <= 2))
        return THAW_FAIL(THAW_EINVAL, "presence_penalty must be in [-2, 2]");
    if (!(s->frequency_penalty >= -2 && s->frequency_penalty <= 2))
        return THAW_FAIL(THAW_EINVAL, "frequency_penalty must be in [-2, 2]");
    if (!(s->repetition_penalty > 0 && s->repetition_penalty <= 10))
        return THAW_FAIL(THAW_EINVAL, "repetition_penalty must be in (0, 10]");
    return 0;
}

void eng_sample_buf_free(struct eng_sample_buf *b)
{
    thaw_free(b->probs);
    thaw_free(b->idx);
    thaw_free(b->counts);
    memset(b, 0, sizeof *b);
}

static int buf_reserve(struct eng_sample_buf *b, size_t n)
{
    if (b->cap >= n)
        return 0;
    float *p = thaw_realloc(b->probs, n * sizeof *p);
    if (!p)
        return -ENOMEM;
    b->probs = p;
    int32_t *ix = thaw_realloc(b->idx, n * sizeof *ix);
    if (!ix)
        return -ENOMEM;
    b->idx = ix;
    uint32_t *c = thaw_realloc(b->counts, n * sizeof *c);
    if (!c)
        return -ENOMEM;
    b->counts = c;
    memset(b->counts, 0, n * sizeof *c);
    b->cap = n;
    return 0;
}

/* Sort candidate ids idx[0..n) by probability, descending, lower id first
 * on ties. Shell sort: no comparator state (qsort would need a global), and
 * the list is short after the cut-off. */
static void sort_candidates(int32_t *idx, size_t n, const float *probs)
{
    static const size_t gaps[] = { 1750, 701, 301, 132, 57, 23, 10, 4, 1 };
    for (size_t gi = 0; gi < sizeof gaps / sizeof gaps[0]; gi++) {
        size_t gap = gaps[gi];
        for (size_t i = gap; i < n; i++) {
            int32_t v = idx[i];
            size_t j = i;
            while (j >= gap) {
                int32_t u = idx[j - gap];
                if (probs[u] > probs[v] || (probs[u] == probs[v] && u < v))
                    break;
                idx[j] = u;
                j -= gap;
            }
            idx[j] = v;
        }
    }
}

int eng_sample(const struct thaw_sampling *s, float *logits, int vocab, const int32_t *tokens,
               size_t n, size_t n_prompt, struct eng_rng *rng, struct eng_sample_buf *b,
               int32_t *token, float *logprob)
{
    int rc = buf_reserve(b, (size_t)vocab);
    if (rc)
        return rc;
    /* Penalties. */
    if (s->repetition_penalty != 1.0f) {
        for (size_t i = 0; i < n; i++) {
            int32_t t = tokens[i];
            if (t < 0 || t >= vocab || b->counts[t] & 0x80000000u)
                continue;
            b->counts[t] |= 0x80000000u; /* once per distinct token */
            float *l = &logits[t];
            *l = *l > 0 ? *l / s->repetition_penalty : *l * s->repetition_penalty;
        }
        for (size_t i = 0; i < n; i++)
            if (tokens[i] >= 0 && tokens[i] < vocab)
                b->counts[tokens[i]] = 0;
    }
    if (s->presence_penalty != 0 || s->frequency_penalty != 0) {
        for (size_t i = n_prompt; i < n; i++)
            if (tokens[i] >= 0 && tokens[i] < vocab)
                b->counts[tokens[i]]++;
        for (size_t i = n_prompt; i < n; i++) {
            int32_t t = tokens[i];
            if (t < 0 || t >= vocab || !b->counts[t])
                continue;
            logits[t] -= s->frequency_penalty * (float)b->counts[t] + s->presence_penalty;
            b->counts[t] = 0;
        }
    }
    /* Greedy: argmax (lowest id on ties, as torch.argmax). */
    int greedy = s->temperature == 0.0f;
    float temp = greedy ? 1.0f : s->temperature;
    float mx = -FLT_MAX;
    int32_t best = 0;
    for (int i = 0; i < vocab; i++) {
        if (logits[i] > mx) {
            mx = logits[i];
            best = i;
        }
    }
    if (!isfinite(mx))
        return THAW_FAIL(THAW_EINVAL, "logits are not finite (max %g)", (double)mx);
    if (greedy && !logprob) { /* no distribution needed */
        *token = best;
        return 0;
    }
    /* Softmax of logits / temperature. */
    double sum = 0;
    for (int i = 0; i < vocab; i++) {
        float p = expf((logits[i] - mx) / temp);
        b->probs[i] = p;
        sum += p;
    }
    if (greedy) {
        *token = best;
        if (logprob)
            *logprob = (float)(log(b->probs[best]) - log(sum));
        return 0;
    }
    /* Candidates: top-k, then min-p and top-p over the normalised probs. */
    size_t nc = 0;
    float inv = (float)(1.0 / sum);
    float min_keep = s->min_p > 0 ? s->min_p * b->probs[best] * inv : 0.0f;
    /* Cheap pre-cut for top-p: a token with p < (1 - top_p) / (vocab - 1)
     * can never be inside the nucleus (llama2.c's observation). */
    float cut = s->top_p < 1.0f ? (1.0f - s->top_p) / (float)(vocab > 1 ? vocab - 1 : 1) : 0.0f;
    if (min_keep > cut)
        cut = min_keep;
    for (int i = 0; i < vocab; i++) {
        b->probs[i] *= inv;
        if (b->probs[i] >= cut && b->probs[i] > 0)
            b->idx[nc++] = i;
    }
    if (nc == 0)
        b->idx[nc++] = best;
    int need_sort = s->top_k > 0 || s->top_p < 1.0f;
    if (need_sort)
        sort_candidates(b->idx, nc, b->probs);
    if (s->top_k > 0 && (size_t)s->top_k < nc)
        nc = (size_t)s->top_k;
    double mass = 0;
    for (size_t i = 0; i < nc; i++)
        mass += b->probs[b->idx[i]];
    if (s->top_p < 1.0f) {
        /* Renormalise over the top-k set, keep the smallest prefix whose
         * mass reaches top_p (always at least one token). */
        double acc = 0;
        size_t keep = nc;
        for (size_t i = 0; i < nc; i++) {
            acc += b->probs[b->idx[i]] / mass;
            if (acc >= s->top_p) {
                keep = i + 1;
                break;
            }
        }
        nc = keep;
        mass = 0;
        for (size_t i = 0; i < nc; i++)
            mass += b->probs[b->idx[i]];
    }
    double r = eng_rng_uniform(rng) * mass, acc = 0;
    int32_t pick = b->idx[nc - 1];
    for (size_t i = 0; i < nc; i++) {
        acc += b->probs[b->idx[i]];
        if (r < acc) {
            pick = b->idx[i];
            break;
        }
    }
    *token = pick;
    if (logprob)
        *logprob = (float)log(b->probs[pick] / mass);
    return 0;
}
