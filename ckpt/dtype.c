/*
 * dtype.c - tensor element types: names as safetensors spells them, sizes,
 * and the float casts the converter needs (f16/bf16/f32/f64, round to
 * nearest even, NaN preserved).
 */
#include <math.h>
#include <string.h>

#include "ckpt/thaw_ckpt.h"

static const struct {
    const char *name;
    size_t size;
} dtypes[THAW_DTYPE_COUNT] = {
    [THAW_DTYPE_BOOL] = { "BOOL", 1 }, [THAW_DTYPE_U8] = { "U8", 1 },
    [THAW_DTYPE_I8] = { "I8", 1 },     [THAW_DTYPE_I16] = { "I16", 2 },
    [THAW_DTYPE_U16] = { "U16", 2 },   [THAW_DTYPE_F16] = { "F16", 2 },
    [THAW_DTYPE_BF16] = { "BF16", 2 }, [THAW_DTYPE_I32] = { "I32", 4 },
    [THAW_DTYPE_U32] = { "U32", 4 },   [THAW_DTYPE_F32] = { "F32", 4 },
    [THAW_DTYPE_F64] = { "F64", 8 },   [THAW_DTYPE_I64] = { "I64", 8 },
    [THAW_DTYPE_U64] = { "U64", 8 },
};

/* Known to safetensors but not stored by Thaw (named in the error). */
static const char *unsupported[] = { "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ",
                                     "F8_E5M2FNUZ", "F4", "F6_E2M3", "F6_E3M2", "C64" };

const char *thaw_dtype_name(enum thaw_dtype t)
{
    return (unsigned)t < THAW_DTYPE_COUNT ? dtypes[t].name : "?";
}

size_t thaw_dtype_size(enum thaw_dtype t)
{
    return (unsigned)t < THAW_DTYPE_COUNT ? dtypes[t].size : 0;
}

int thaw_dtype_parse(const char *s, enum thaw_dtype *out)
{
    for (int i = 0; i < THAW_DTYPE_COUNT; i++) {
        if (strcmp(s, dtypes[i].name) == 0) {
            *out = (enum thaw_dtype)i;
            return 0;
        }
    }
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++) {
        if (strcmp(s, unsupported[i]) == 0)
            return THAW_FAIL(THAW_EDTYPE, "dtype %s is not supported (supported: BOOL, U8-U64, "
                                          "I8-I64, F16, BF16, F32, F64)", s);
    }
    return THAW_FAIL(THAW_EDTYPE, "unknown dtype '%.32s'", s);
}

int thaw_dtype_is_float(enum thaw_dtype t)
{
    return t == THAW_DTYPE_F16 || t == THAW_DTYPE_BF16 || t == THAW_DTYPE_F32 ||
           t == THAW_DTYPE_F64;
}

/* ---------------------------------------------------------------- scalar conversions */

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* quiet NaN, sign kept */
    u += 0x7fffu + ((u >> 16) & 1);          /* round to nearest even */
    return (uint16_t)(u >> 16);
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exp == 31)
        return bits_f32(sign | 0x7f800000u | (man << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

static uint16_t f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00); /* NaN */
    if (a >= 0x477ff000u)                 /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7c00);
    if (a < 0x38800000u) {
        /* result is subnormal or zero: scale to units of 2^-24, round even */
        float v = bits_f32(a) * 16777216.0f;
        float r = nearbyintf(v); /* default rounding mode: nearest even */
        return (uint16_t)(sign | (uint16_t)r);
    }
    uint32_t exp = (a >> 23) - 112;
    uint32_t man = a & 0x7fffff;
    uint32_t h = (exp << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++; /* may carry into the exponent, which is still correct */
    return (uint16_t)(sign | h);
}

static double load_f(const void *src, enum thaw_dtype t, size_t i)
{
    const unsigned char *p = src;
    switch (t) {
    case THAW_DTYPE_F16: { uint16_t h; memcpy(&h, p + 2 * i, 2); return f16_to_f32(h); }
    case THAW_DTYPE_BF16: { uint16_t h; memcpy(&h, p + 2 * i, 2); return bf16_to_f32(h); }
    case THAW_DTYPE_F32: { float f; memcpy(&f, p + 4 * i, 4); return f; }
    case THAW_DTYPE_F64: { double d; memcpy(&d, p + 8 * i, 8); return d; }
    default: return 0;
    }
}

void thaw_dtype_cast(void *dst, enum thaw_dtype dt, const void *src, enum thaw_dtype st, size_t n)
{
    unsigned char *d = dst;
    if (dt == st) {
        memcpy(dst, src, n * thaw_dtype_size(dt));
        return;
    }
    for (size_t i = 0; i < n; i++) {
        double v = load_f(src, st, i);
        switch (dt) {
        case THAW_DTYPE_F16: { uint16_t h = f32_to_f16((float)v); memcpy(d + 2 * i, &h, 2); break; }
        case THAW_DTYPE_BF16: { uint16_t h = f32_to_bf16((float)v); memcpy(d + 2 * i, &h, 2); break; }
        case THAW_DTYPE_F32: { float f = (float)v; memcpy(d + 4 * i, &f, 4); break; }
        case THAW_DTYPE_F64: memcpy(d + 8 * i, &v, 8); break;
        default: break;
        }
    }
}
