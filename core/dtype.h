/*
 * dtype.h: safetensors element types and conversions to and from float32.
 * bf16 is the top half of a float32; narrowing rounds to nearest even and
 * keeps NaN a NaN.  f16 is IEEE binary16 with subnormals.
 */
#ifndef MASQ_DTYPE_H
#define MASQ_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum st_dtype {
	ST_F32, ST_F16, ST_BF16, ST_F64,
	ST_I8, ST_U8, ST_I16, ST_U16, ST_I32, ST_U32, ST_I64, ST_U64, ST_BOOL,
	/* defined by the format, read and carried through, never converted */
	ST_F8_E4M3, ST_F8_E5M2, ST_F8_E8M0, ST_C64, ST_F4, ST_F6_E2M3, ST_F6_E3M2,
	ST_DTYPE_COUNT,
	ST_DTYPE_INVALID = -1
} st_dtype;

/* Name as written in a safetensors header ("F32", "BF16", ...). */
const char *st_dtype_name(st_dtype dt);
/* Parse a header dtype string; ST_DTYPE_INVALID when unknown. */
st_dtype st_dtype_parse(const char *s);
/* Bytes per element; 0 for the sub-byte F4, F6_E2M3, F6_E3M2 (their
 * tensors are sized by st_dtype_bits). */
size_t st_dtype_size(st_dtype dt);
/* Bits per element (4 for F4, 6 for F6_*). */
size_t st_dtype_bits(st_dtype dt);
/* The bytes of n elements of dt: n * bits / 8; -1 (SIZE_MAX) when that is
 * not a whole number of bytes or overflows. */
uint64_t st_dtype_bytes(st_dtype dt, uint64_t n);
/* True for F32, F16, BF16, F64. */
int st_dtype_is_float(st_dtype dt);

float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

/* f32_to_bf16, inline for the loops that round every element (the bf16
 * forward, bgemm): nearest even, a NaN kept a quiet NaN. */
static inline uint16_t
bf16_rne(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x0040u);
	return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* v rounded to the nearest bf16 value, as a float. */
static inline float
bf16_round(float v)
{
	uint32_t u = (uint32_t)bf16_rne(v) << 16;
	memcpy(&v, &u, 4);
	return v;
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

/* Convert n elements of a float dtype at src (little-endian, possibly
 * unaligned) to float32 at dst.  Returns -1 for a non-float dtype. */
int st_to_f32(float *dst, const void *src, st_dtype dt, size_t n);
/* Convert n float32 to dt (F32, F16, BF16) at dst; -1 for other dtypes. */
int st_from_f32(void *dst, const float *src, st_dtype dt, size_t n);

#endif
