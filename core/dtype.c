#include "config.h"

#include <math.h>
#include <string.h>

#include "core/dtype.h"

static const struct {
	const char *name;
	size_t bits;
} dtypes[ST_DTYPE_COUNT] = {
	[ST_F32] = {"F32", 32}, [ST_F16] = {"F16", 16}, [ST_BF16] = {"BF16", 16},
	[ST_F64] = {"F64", 64}, [ST_I8] = {"I8", 8}, [ST_U8] = {"U8", 8},
	[ST_I16] = {"I16", 16}, [ST_U16] = {"U16", 16}, [ST_I32] = {"I32", 32},
	[ST_U32] = {"U32", 32}, [ST_I64] = {"I64", 64}, [ST_U64] = {"U64", 64},
	[ST_BOOL] = {"BOOL", 8},
	[ST_F8_E4M3] = {"F8_E4M3", 8}, [ST_F8_E5M2] = {"F8_E5M2", 8}, [ST_F8_E8M0] = {"F8_E8M0", 8},
	[ST_C64] = {"C64", 64}, [ST_F4] = {"F4", 4}, [ST_F6_E2M3] = {"F6_E2M3", 6}, [ST_F6_E3M2] = {"F6_E3M2", 6},
};

const char *
st_dtype_name(st_dtype dt)
{
	if ((unsigned)dt < ST_DTYPE_COUNT)
		return dtypes[dt].name;
	return "?";
}

st_dtype
st_dtype_parse(const char *s)
{
	for (int i = 0; i < ST_DTYPE_COUNT; i++)
		if (strcmp(s, dtypes[i].name) == 0)
			return (st_dtype)i;
	return ST_DTYPE_INVALID;
}

size_t
st_dtype_size(st_dtype dt)
{
	if ((unsigned)dt < ST_DTYPE_COUNT && dtypes[dt].bits % 8 == 0)
		return dtypes[dt].bits / 8;
	return 0;
}

size_t
st_dtype_bits(st_dtype dt)
{
	return (unsigned)dt < ST_DTYPE_COUNT ? dtypes[dt].bits : 0;
}

uint64_t
st_dtype_bytes(st_dtype dt, uint64_t n)
{
	uint64_t bits;
	if ((unsigned)dt >= ST_DTYPE_COUNT || __builtin_mul_overflow(n, (uint64_t)dtypes[dt].bits, &bits) ||
	    bits % 8 != 0)
		return UINT64_MAX;
	return bits / 8;
}

int
st_dtype_is_float(st_dtype dt)
{
	return dt == ST_F32 || dt == ST_F16 || dt == ST_BF16 || dt == ST_F64;
}

float
bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

uint16_t
f32_to_bf16(float f)
{
	return bf16_rne(f);
}

float
f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu;
	uint32_t man = h & 0x3ffu;
	uint32_t u;
	float f;

	if (exp == 0) {
		if (man == 0) {
			u = sign;
		} else {	/* subnormal: value = man * 2^-24 */
			f = ldexpf((float)man, -24);
			return sign ? -f : f;
		}
	} else if (exp == 31) {
		u = sign | 0x7f800000u | (man << 13);
	} else {
		u = sign | ((exp + 112u) << 23) | (man << 13);
	}
	memcpy(&f, &u, 4);
	return f;
}

uint16_t
f32_to_f16(float f)
{
	uint32_t u, sign, man;
	int exp;

	memcpy(&u, &f, 4);
	sign = (u >> 16) & 0x8000u;
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)(sign | 0x7e00u);
	if ((u & 0x7fffffffu) == 0x7f800000u)
		return (uint16_t)(sign | 0x7c00u);
	exp = (int)((u >> 23) & 0xffu) - 127 + 15;
	man = u & 0x7fffffu;
	if (exp >= 31)
		return (uint16_t)(sign | 0x7c00u);	/* overflow to infinity */
	if (exp <= 0) {
		/* subnormal or zero: shift the full mantissa, round to even */
		if (exp < -10)
			return (uint16_t)sign;
		man |= 0x800000u;
		int shift = 14 - exp;
		uint32_t half = 1u << (shift - 1);
		uint32_t rem = man & ((1u << shift) - 1);
		uint32_t q = man >> shift;
		if (rem > half || (rem == half && (q & 1u)))
			q++;
		return (uint16_t)(sign | q);
	}
	uint32_t q = ((uint32_t)exp << 10) | (man >> 13);
	uint32_t rem = man & 0x1fffu;
	if (rem > 0x1000u || (rem == 0x1000u && (q & 1u)))
		q++;	/* may carry into the exponent, which is right */
	return (uint16_t)(sign | q);
}

int
st_to_f32(float *dst, const void *src, st_dtype dt, size_t n)
{
	const unsigned char *p = src;

	switch (dt) {
	case ST_F32:
		memcpy(dst, src, n * 4);
		return 0;
	case ST_BF16:
		for (size_t i = 0; i < n; i++) {
			uint16_t h;
			memcpy(&h, p + 2 * i, 2);
			dst[i] = bf16_to_f32(h);
		}
		return 0;
	case ST_F16:
		for (size_t i = 0; i < n; i++) {
			uint16_t h;
			memcpy(&h, p + 2 * i, 2);
			dst[i] = f16_to_f32(h);
		}
		return 0;
	case ST_F64:
		for (size_t i = 0; i < n; i++) {
			double d;
			memcpy(&d, p + 8 * i, 8);
			dst[i] = (float)d;
		}
		return 0;
	default:
		return -1;
	}
}

int
st_from_f32(void *dst, const float *src, st_dtype dt, size_t n)
{
	unsigned char *p = dst;

	switch (dt) {
	case ST_F32:
		memcpy(dst, src, n * 4);
		return 0;
	case ST_BF16:
		for (size_t i = 0; i < n; i++) {
			uint16_t h = f32_to_bf16(src[i]);
			memcpy(p + 2 * i, &h, 2);
		}
		return 0;
	case ST_F16:
		for (size_t i = 0; i < n; i++) {
			uint16_t h = f32_to_f16(src[i]);
			memcpy(p + 2 * i, &h, 2);
		}
		return 0;
	default:
		return -1;
	}
}
