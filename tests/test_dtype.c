/*
 * test_dtype.c: bf16 and f16 conversions against independent references.
 *
 *   - exhaustive decode of every bf16 and f16 bit pattern, checked against
 *     the value computed with ldexp from the fields;
 *   - narrowing checked against a reference that rounds in double with
 *     nearbyint (round to nearest even), over a strided sweep of all
 *     float32 patterns and around every tie point;
 *   - hand-computed ties, subnormals, overflow, inf and NaN;
 *   - for f16, a table computed offline by numpy (np.float32.astype(
 *     np.float16), which rounds to nearest even), embedded below.
 */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/dtype.h"
#include "tests/tap.h"

/*
 * The f16 table: {float32 bits, float16 bits} as numpy 1.24.2 converts
 * them.  Generated offline with /usr/bin/python3:
 *
 *	rng = np.random.default_rng(20240611)
 *	vals = special values (0, -0, 65504, 65520, 2^-24, 2^-25, 3*2^-25,
 *	    2^-14 - 2^-25, 1 + 2^-11, 2049, inf, ...) and one float32 ulp
 *	    either side of the ties among them
 *	  + 160 random patterns (s << 31) | (e << 23) | m with
 *	    e in [127-28, 127+17), m in [0, 2^23)
 *	  + 40 exact midpoints between neighbouring float16 values h, h+1
 *	    (h random in [0, 0x7bff)), and one float32 ulp either side
 *	a = np.array(vals, np.uint32).view(np.float32)
 *	h = a.astype(np.float16).view(np.uint16)
 */
static const struct {
	uint32_t f;
	uint16_t h;
} f16_numpy[] = {
	{0x00000000u, 0x0000}, {0x80000000u, 0x8000}, {0x3f800000u, 0x3c00}, {0xc0000000u, 0xc000},
	{0x3f000000u, 0x3800}, {0x477fe000u, 0x7bff}, {0x477fefffu, 0x7bff}, {0x477ff000u, 0x7c00},
	{0x47800000u, 0x7c00}, {0x501502f9u, 0x7c00}, {0xd01502f9u, 0xfc00}, {0x7f800000u, 0x7c00},
	{0xff800000u, 0xfc00}, {0x38800000u, 0x0400}, {0x33800000u, 0x0001}, {0x33000000u, 0x0000},
	{0x33c00000u, 0x0002}, {0x34200000u, 0x0002}, {0x387fe000u, 0x0400}, {0x32800000u, 0x0000},
	{0x322bcc77u, 0x0000}, {0x3f801000u, 0x3c00}, {0x3f803000u, 0x3c02}, {0x45001000u, 0x6800},
	{0x45003000u, 0x6802}, {0xc5001000u, 0xe800}, {0x3dcccccdu, 0x2e66}, {0x3eaaaaabu, 0x3555},
	{0x40490fdbu, 0x4248}, {0xc77fe000u, 0xfbff}, {0x38800000u, 0x0400}, {0x33800000u, 0x0001},
	{0x00000001u, 0x0000}, {0x7f7fffffu, 0x7c00}, {0x32ffffffu, 0x0000}, {0x33000001u, 0x0001},
	{0x387fdfffu, 0x03ff}, {0x387fe001u, 0x0400}, {0x477fefffu, 0x7bff}, {0x477ff001u, 0x7c00},
	{0x3f800fffu, 0x3c00}, {0x3f801001u, 0x3c01}, {0xbc184627u, 0xa0c2}, {0xc7a40ebbu, 0xfc00},
	{0x476ae492u, 0x7b57}, {0x377564e3u, 0x00f5}, {0x42e49c79u, 0x5725}, {0xbd0383d7u, 0xa81c},
	{0x39d27e8cu, 0x0e94}, {0xb5e09df4u, 0x801c}, {0xc656b301u, 0xf2b6}, {0x43293034u, 0x594a},
	{0x326551beu, 0x0000}, {0xbae56207u, 0x972b}, {0xba4c15d2u, 0x9261}, {0xb506b5b1u, 0x8008},
	{0x3ed2baf2u, 0x3696}, {0xb4400f9eu, 0x8003}, {0x3872f043u, 0x03cc}, {0xb92903c9u, 0x8948},
	{0xbba3a271u, 0x9d1d}, {0x413a1348u, 0x49d1}, {0xc3a932f2u, 0xdd4a}, {0xb87fcb69u, 0x83ff},
	{0x3b92dc3bu, 0x1c97}, {0x366cad17u, 0x003b}, {0x467ecd24u, 0x73f6}, {0x3dee1077u, 0x2f71},
	{0xbac03744u, 0x9602}, {0x3ca9ea20u, 0x254f}, {0xb5376123u, 0x800b}, {0x3d3c0ba4u, 0x29e0},
	{0x40a862d3u, 0x4543}, {0xc2b486deu, 0xd5a4}, {0xbc5875a4u, 0xa2c4}, {0xc52123a4u, 0xe909},
	{0x473e00dbu, 0x79f0}, {0x39f86e98u, 0x0fc3}, {0xb50464bbu, 0x8008}, {0xb2833807u, 0x8000},
	{0x43d4d7f8u, 0x5ea7}, {0x38c2f8adu, 0x0618}, {0x3e795aa3u, 0x33cb}, {0x46d9c98du, 0x76ce},
	{0xbce0d0d4u, 0xa707}, {0xb3bd725du, 0x8001}, {0xb34027d2u, 0x8001}, {0xba25606au, 0x912b},
	{0xc1c71fbau, 0xce39}, {0xc361e93bu, 0xdb0f}, {0xb6254331u, 0x8029}, {0x41fad301u, 0x4fd7},
	{0xb3c0505eu, 0x8002}, {0x38d89141u, 0x06c5}, {0x40633e07u, 0x431a}, {0xbb378ff4u, 0x99bc},
	{0xbc17a055u, 0xa0bd}, {0x3978fdf7u, 0x0bc8}, {0x4101e778u, 0x480f}, {0xbde16ab0u, 0xaf0b},
	{0x43384925u, 0x59c2}, {0x383ab883u, 0x02eb}, {0xb80fe2b5u, 0x8240}, {0x3e4f78e0u, 0x327c},
	{0x329f5fa9u, 0x0000}, {0xc3afabc3u, 0xdd7d}, {0xbc348abau, 0xa1a4}, {0xc1312c37u, 0xc989},
	{0x380e003eu, 0x0238}, {0xc55179acu, 0xea8c}, {0x34abf3e8u, 0x0005}, {0x3c864dbeu, 0x2432},
	{0x35c80ae2u, 0x0019}, {0x33b8d194u, 0x0001}, {0x454d43acu, 0x6a6a}, {0x40afa5acu, 0x457d},
	{0x32d7c096u, 0x0000}, {0xc2a6a592u, 0xd535}, {0x3423affau, 0x0003}, {0x3a0a659eu, 0x1053},
	{0xb979329fu, 0x8bca}, {0xb8075876u, 0x821d}, {0x40eb154du, 0x4759}, {0xb2892a1bu, 0x8000},
	{0x45488aaau, 0x6a44}, {0xb76435f8u, 0x80e4}, {0xbe3eb865u, 0xb1f6}, {0xc12436c8u, 0xc922},
	{0x34519d31u, 0x0003}, {0x37843bf5u, 0x0108}, {0x34d88338u, 0x0007}, {0xb937ce27u, 0x89be},
	{0x31a4d776u, 0x0000}, {0xbb7ade90u, 0x9bd7}, {0x3d191b2cu, 0x28c9}, {0x385a1465u, 0x0368},
	{0xc7c1d185u, 0xfc00}, {0xb797cb91u, 0x8130}, {0xc2cd7201u, 0xd66c}, {0xc4c78e7du, 0xe63c},
	{0x47ca7d6cu, 0x7c00}, {0x458aa78eu, 0x6c55}, {0xc0720902u, 0xc390}, {0x3bf15ec5u, 0x1f8b},
	{0x3d108c92u, 0x2884}, {0x345188b7u, 0x0003}, {0xc5648fa5u, 0xeb24}, {0xb1ab145au, 0x8000},
	{0x3b8d1bfeu, 0x1c69}, {0xb8ea6135u, 0x8753}, {0x3b5ae531u, 0x1ad7}, {0xc6d7faadu, 0xf6c0},
	{0xb1d984ecu, 0x8000}, {0x3227ea83u, 0x0000}, {0xbe1295f7u, 0xb095}, {0x339c7398u, 0x0001},
	{0x3f00457eu, 0x3802}, {0x39a88222u, 0x0d44}, {0xb2d9360du, 0x8000}, {0xbe59d1fbu, 0xb2cf},
	{0xb76c979eu, 0x80ed}, {0x33cb4689u, 0x0002}, {0xbe1cf3e1u, 0xb0e8}, {0xb59bff91u, 0x8013},
	{0x3a425a62u, 0x1213}, {0x3548a3f6u, 0x000d}, {0xc070539bu, 0xc383}, {0x33844586u, 0x0001},
	{0xc46f9604u, 0xe37d}, {0xc78fa041u, 0xfc00}, {0x3f188087u, 0x38c4}, {0xb59e5029u, 0x8014},
	{0x43e6352fu, 0x5f32}, {0xb2d8aa77u, 0x8000}, {0xb4243267u, 0x8003}, {0x3e11a3a4u, 0x308d},
	{0x3bbf7d11u, 0x1dfc}, {0x3548961eu, 0x000d}, {0x3ed0f429u, 0x3688}, {0xc78b73dbu, 0xfc00},
	{0x44a4fc70u, 0x6528}, {0xbcd92d35u, 0xa6c9}, {0x42a7a456u, 0x553d}, {0x37ccd950u, 0x019a},
	{0x46422799u, 0x7211}, {0x39621edau, 0x0b11}, {0x443dadb6u, 0x61ed}, {0xb814f96au, 0x8254},
	{0xb48d66cdu, 0x8004}, {0xb326a921u, 0x8001}, {0x46c65d11u, 0x7633}, {0xc1665dc4u, 0xcb33},
	{0x47a0d96fu, 0x7c00}, {0xc1ce6adbu, 0xce73}, {0xb2319e95u, 0x8000}, {0x3dab591eu, 0x2d5b},
	{0xbfe6b533u, 0xbf36}, {0x3c514652u, 0x228a}, {0x40d139fdu, 0x468a}, {0x38099a14u, 0x0226},
	{0x33cc973bu, 0x0002}, {0x427545b6u, 0x53aa}, {0x3e7e8fffu, 0x33f4}, {0x3e7e9000u, 0x33f4},
	{0x3e7e9001u, 0x33f5}, {0x3daa8fffu, 0x2d54}, {0x3daa9000u, 0x2d54}, {0x3daa9001u, 0x2d55},
	{0x41672fffu, 0x4b39}, {0x41673000u, 0x4b3a}, {0x41673001u, 0x4b3a}, {0x3ea12fffu, 0x3509},
	{0x3ea13000u, 0x350a}, {0x3ea13001u, 0x350a}, {0x43568fffu, 0x5ab4}, {0x43569000u, 0x5ab4},
	{0x43569001u, 0x5ab5}, {0x44a56fffu, 0x652b}, {0x44a57000u, 0x652c}, {0x44a57001u, 0x652c},
	{0x39eb8fffu, 0x0f5c}, {0x39eb9000u, 0x0f5c}, {0x39eb9001u, 0x0f5d}, {0x4133cfffu, 0x499e},
	{0x4133d000u, 0x499e}, {0x4133d001u, 0x499f}, {0x3dd4afffu, 0x2ea5}, {0x3dd4b000u, 0x2ea6},
	{0x3dd4b001u, 0x2ea6}, {0x3780bfffu, 0x0101}, {0x3780c000u, 0x0102}, {0x3780c001u, 0x0102},
	{0x47790fffu, 0x7bc8}, {0x47791000u, 0x7bc8}, {0x47791001u, 0x7bc9}, {0x43d8efffu, 0x5ec7},
	{0x43d8f000u, 0x5ec8}, {0x43d8f001u, 0x5ec8}, {0x3c1cefffu, 0x20e7}, {0x3c1cf000u, 0x20e8},
	{0x3c1cf001u, 0x20e8}, {0x412c4fffu, 0x4962}, {0x412c5000u, 0x4962}, {0x412c5001u, 0x4963},
	{0x41078fffu, 0x483c}, {0x41079000u, 0x483c}, {0x41079001u, 0x483d}, {0x39ae6fffu, 0x0d73},
	{0x39ae7000u, 0x0d74}, {0x39ae7001u, 0x0d74}, {0x3ed88fffu, 0x36c4}, {0x3ed89000u, 0x36c4},
	{0x3ed89001u, 0x36c5}, {0x3ac24fffu, 0x1612}, {0x3ac25000u, 0x1612}, {0x3ac25001u, 0x1613},
	{0x437f6fffu, 0x5bfb}, {0x437f7000u, 0x5bfc}, {0x437f7001u, 0x5bfc}, {0x470f6fffu, 0x787b},
	{0x470f7000u, 0x787c}, {0x470f7001u, 0x787c}, {0x45706fffu, 0x6b83}, {0x45707000u, 0x6b84},
	{0x45707001u, 0x6b84}, {0x399befffu, 0x0cdf}, {0x399bf000u, 0x0ce0}, {0x399bf001u, 0x0ce0},
	{0x3be84fffu, 0x1f42}, {0x3be85000u, 0x1f42}, {0x3be85001u, 0x1f43}, {0x3ab2afffu, 0x1595},
	{0x3ab2b000u, 0x1596}, {0x3ab2b001u, 0x1596}, {0x43604fffu, 0x5b02}, {0x43605000u, 0x5b02},
	{0x43605001u, 0x5b03}, {0x41f26fffu, 0x4f93}, {0x41f27000u, 0x4f94}, {0x41f27001u, 0x4f94},
	{0x37ea3fffu, 0x01d4}, {0x37ea4000u, 0x01d4}, {0x37ea4001u, 0x01d5}, {0x3c3dcfffu, 0x21ee},
	{0x3c3dd000u, 0x21ee}, {0x3c3dd001u, 0x21ef}, {0x3a166fffu, 0x10b3}, {0x3a167000u, 0x10b4},
	{0x3a167001u, 0x10b4}, {0x397aefffu, 0x0bd7}, {0x397af000u, 0x0bd8}, {0x397af001u, 0x0bd8},
	{0x3abf4fffu, 0x15fa}, {0x3abf5000u, 0x15fa}, {0x3abf5001u, 0x15fb}, {0x3827dfffu, 0x029f},
	{0x3827e000u, 0x02a0}, {0x3827e001u, 0x02a0}, {0x44584fffu, 0x62c2}, {0x44585000u, 0x62c2},
	{0x44585001u, 0x62c3}, {0x3bfb6fffu, 0x1fdb}, {0x3bfb7000u, 0x1fdc}, {0x3bfb7001u, 0x1fdc},
	{0x401e6fffu, 0x40f3}, {0x401e7000u, 0x40f4}, {0x401e7001u, 0x40f4}, {0x43b02fffu, 0x5d81},
	{0x43b03000u, 0x5d82}, {0x43b03001u, 0x5d82}, {0x463f4fffu, 0x71fa}, {0x463f5000u, 0x71fa},
	{0x463f5001u, 0x71fb}, {0x37317fffu, 0x00b1}, {0x37318000u, 0x00b2}, {0x37318001u, 0x00b2},
	{0x3a21afffu, 0x110d}, {0x3a21b000u, 0x110e}, {0x3a21b001u, 0x110e}, {0x46cb2fffu, 0x7659},
	{0x46cb3000u, 0x765a}, {0x46cb3001u, 0x765a},
};

/* The bit pattern of f. */
static uint32_t
bits_of(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

/* The float with bit pattern u. */
static float
float_of(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* Value of bf16 pattern h from its fields (NaN patterns excluded). */
static double
ref_bf16_value(uint16_t h)
{
	int exp = (h >> 7) & 0xff, man = h & 0x7f;
	double v = exp == 0 ? ldexp(man, -133) : ldexp(128 + man, exp - 134);
	return (h & 0x8000) ? -v : v;
}

/* Value of f16 pattern h from its fields (NaN patterns excluded). */
static double
ref_f16_value(uint16_t h)
{
	int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
	double v = exp == 0 ? ldexp(man, -24) : exp == 31 ? INFINITY :
	    ldexp(1024 + man, exp - 25);
	return (h & 0x8000) ? -v : v;
}

/* Round |x| to a format with p significant bits and smallest ulp
 * 2^minexp, in double, to nearest even (the default rounding mode). */
static double
ref_round(double a, int p, int minexp)
{
	int e, s;

	if (a == 0)
		return 0;
	frexp(a, &e);
	s = e - p;
	if (s < minexp)
		s = minexp;
	return ldexp(nearbyint(ldexp(a, -s)), s);
}

/* Reference float32 -> bf16 for finite x. */
static uint16_t
ref_to_bf16(float x)
{
	uint16_t sign = (bits_of(x) >> 16) & 0x8000u;
	double r = ref_round(fabs((double)x), 8, -133);
	float rf = (float)r;	/* exact, or inf past the largest bf16 */
	return (uint16_t)(sign | (bits_of(rf) >> 16));
}

/* Reference float32 -> f16 for finite x, encoded from the rounded value. */
static uint16_t
ref_to_f16(float x)
{
	uint16_t sign = (bits_of(x) >> 16) & 0x8000u;
	double r = ref_round(fabs((double)x), 11, -24);
	int e;

	if (r > 65504.0)
		return sign | 0x7c00u;
	if (r < 0x1p-14)
		return (uint16_t)(sign | (uint16_t)ldexp(r, 24));
	frexp(r, &e);	/* r in [2^(e-1), 2^e) */
	return (uint16_t)(sign | (uint16_t)((e - 1 + 15) << 10) |
	    (uint16_t)(ldexp(r, 11 - e) - 1024));
}

/* bf16 -> f32 for every pattern. */
static void
test_bf16_decode(void)
{
	int bad = 0, nan_bad = 0;

	for (uint32_t h = 0; h < 0x10000; h++) {
		float f = bf16_to_f32((uint16_t)h);
		if ((h & 0x7f80) == 0x7f80 && (h & 0x7f)) {
			nan_bad += !isnan(f);
			continue;
		}
		if ((h & 0x7fff) == 0x7f80)
			bad += !(isinf(f) && (f < 0) == ((h & 0x8000) != 0));
		else
			bad += (double)f != ref_bf16_value((uint16_t)h) ||
			    (signbit(f) != 0) != ((h & 0x8000) != 0);
	}
	tap_ok(bad == 0, "bf16 -> f32: all 65536 patterns decode to their value (%d wrong)", bad);
	tap_ok(nan_bad == 0, "bf16 -> f32: NaN patterns stay NaN");
}

/* f32 -> bf16: round trips, sweeps, ties by hand, NaN. */
static void
test_bf16_encode(void)
{
	int bad = 0, rt = 0;
	uint32_t first = 0;

	/* round trip of every non-NaN pattern */
	for (uint32_t h = 0; h < 0x10000; h++) {
		if ((h & 0x7f80) == 0x7f80 && (h & 0x7f))
			continue;
		rt += f32_to_bf16(bf16_to_f32((uint16_t)h)) != h;
	}
	tap_ok(rt == 0, "bf16 round trip of every non-NaN pattern (%d wrong)", rt);

	/* strided sweep of all finite float32, both signs */
	for (uint64_t u = 0; u < 0x7f800000u; u += 509) {
		for (int s = 0; s < 2; s++) {
			float x = float_of((uint32_t)u | (s ? 0x80000000u : 0));
			if (f32_to_bf16(x) != ref_to_bf16(x) && bad++ == 0)
				first = bits_of(x);
		}
	}
	tap_ok(bad == 0, "f32 -> bf16 matches the nearbyint reference on a sweep (%d wrong)", bad);
	if (bad)
		tap_diag("first: 0x%08x", first);

	/* every tie point between neighbouring bf16 values, and its neighbours */
	bad = 0;
	for (uint32_t h = 0; h < 0x7f80; h++) {
		uint32_t tie = (h << 16) | 0x8000u;
		for (int d = -1; d <= 1; d++) {
			float x = float_of(tie + (uint32_t)d);
			if (f32_to_bf16(x) != ref_to_bf16(x) && bad++ == 0)
				first = bits_of(x);
		}
	}
	tap_ok(bad == 0, "f32 -> bf16 at every tie and one ulp either side (%d wrong)", bad);
	if (bad)
		tap_diag("first: 0x%08x", first);

	/* by hand: ties go to the even neighbour */
	tap_ok(f32_to_bf16(float_of(0x3f808000u)) == 0x3f80, "bf16 tie 1+2^-8 -> 1.0 (even)");
	tap_ok(f32_to_bf16(float_of(0x3f818000u)) == 0x3f82, "bf16 tie 0x3f818000 -> 0x3f82 (even)");
	tap_ok(f32_to_bf16(float_of(0x3f808001u)) == 0x3f81, "bf16 just above a tie rounds up");
	tap_ok(f32_to_bf16(float_of(0x3f807fffu)) == 0x3f80, "bf16 just below a tie rounds down");
	tap_ok(f32_to_bf16(float_of(0xbf818000u)) == 0xbf82, "bf16 negative tie -> even");
	tap_ok(f32_to_bf16(float_of(0x7f7f8000u)) == 0x7f80, "bf16 tie above the largest finite -> inf");
	tap_ok(f32_to_bf16(float_of(0x7f7f7fffu)) == 0x7f7f, "bf16 just below that tie -> largest finite");
	tap_ok(f32_to_bf16(float_of(0x00008000u)) == 0x0000, "bf16 subnormal tie 0x00008000 -> +0 (even)");
	tap_ok(f32_to_bf16(float_of(0x00018000u)) == 0x0002, "bf16 subnormal tie 0x00018000 -> 0x0002");
	tap_ok(f32_to_bf16(float_of(0x00010000u)) == 0x0001, "bf16 smallest subnormal is exact");
	tap_ok(f32_to_bf16(float_of(0x007fffffu)) == 0x0080, "bf16 largest f32 subnormal rounds to the smallest normal");
	tap_ok(f32_to_bf16(-0.0f) == 0x8000, "bf16 keeps -0");
	tap_ok(f32_to_bf16(INFINITY) == 0x7f80 && f32_to_bf16(-INFINITY) == 0xff80, "bf16 keeps +-inf");
	tap_ok(f32_to_bf16(3.0e38f) == 0x7f62, "bf16 of 3e38 (0x7f61b1e6 -> 0x7f62)");
	tap_ok(bf16_to_f32(0x3f80) == 1.0f && bf16_to_f32(0xc040) == -3.0f, "bf16 1.0 and -3.0 decode");

	/* NaN stays NaN, including signalling NaNs whose payload is only in the low half */
	uint32_t nans[] = { 0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu, 0x7f80ffffu };
	int nbad = 0;
	for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
		uint16_t h = f32_to_bf16(float_of(nans[i]));
		nbad += !((h & 0x7f80) == 0x7f80 && (h & 0x7f)) || (h >> 15) != (nans[i] >> 31);
	}
	tap_ok(nbad == 0, "bf16 NaN (quiet and signalling, both signs) stays NaN with its sign");
}

/* f16 -> f32 for every pattern, and known values. */
static void
test_f16_decode(void)
{
	int bad = 0, nan_bad = 0;

	for (uint32_t h = 0; h < 0x10000; h++) {
		float f = f16_to_f32((uint16_t)h);
		if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
			nan_bad += !isnan(f);
			continue;
		}
		bad += (double)f != ref_f16_value((uint16_t)h) ||
		    (signbit(f) != 0) != ((h & 0x8000) != 0);
	}
	tap_ok(bad == 0, "f16 -> f32: all 65536 patterns decode to their value (%d wrong)", bad);
	tap_ok(nan_bad == 0, "f16 -> f32: NaN patterns stay NaN");
	tap_ok(f16_to_f32(0x0001) == 0x1p-24f, "f16 smallest subnormal is 2^-24");
	tap_ok(f16_to_f32(0x03ff) == 1023 * 0x1p-24f, "f16 largest subnormal is 1023 * 2^-24");
	tap_ok(f16_to_f32(0x0400) == 0x1p-14f, "f16 smallest normal is 2^-14");
	tap_ok(f16_to_f32(0x7bff) == 65504.0f, "f16 largest finite is 65504");
	tap_ok(f16_to_f32(0x3555) == 0.333251953125f, "f16 0x3555 is 0.333251953125");
	tap_ok(f16_to_f32(0x8000) == 0.0f && signbit(f16_to_f32(0x8000)), "f16 -0 decodes to -0");
}

/* f32 -> f16: round trips, numpy table, sweeps, ties by hand. */
static void
test_f16_encode(void)
{
	int bad = 0, rt = 0;
	uint32_t first = 0;

	for (uint32_t h = 0; h < 0x10000; h++) {
		if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
			continue;
		rt += f32_to_f16(f16_to_f32((uint16_t)h)) != h;
	}
	tap_ok(rt == 0, "f16 round trip of every non-NaN pattern (%d wrong)", rt);

	for (size_t i = 0; i < sizeof f16_numpy / sizeof f16_numpy[0]; i++)
		if (f32_to_f16(float_of(f16_numpy[i].f)) != f16_numpy[i].h && bad++ == 0)
			first = f16_numpy[i].f;
	tap_ok(bad == 0, "f32 -> f16 matches numpy on %zu values (%d wrong)",
	    sizeof f16_numpy / sizeof f16_numpy[0], bad);
	if (bad)
		tap_diag("first: 0x%08x", first);

	bad = 0;
	for (uint64_t u = 0; u < 0x7f800000u; u += 509) {
		for (int s = 0; s < 2; s++) {
			float x = float_of((uint32_t)u | (s ? 0x80000000u : 0));
			if (f32_to_f16(x) != ref_to_f16(x) && bad++ == 0)
				first = bits_of(x);
		}
	}
	tap_ok(bad == 0, "f32 -> f16 matches the nearbyint reference on a sweep (%d wrong)", bad);
	if (bad)
		tap_diag("first: 0x%08x", first);

	/* every midpoint between neighbouring f16 values (exact in float32) */
	bad = 0;
	for (uint32_t h = 0; h < 0x7bff; h++) {
		float mid = (float)((ref_f16_value((uint16_t)h) + ref_f16_value((uint16_t)(h + 1))) / 2);
		for (int d = -1; d <= 1; d++) {
			float x = float_of(bits_of(mid) + (uint32_t)d);
			if (f32_to_f16(x) != ref_to_f16(x) && bad++ == 0)
				first = bits_of(x);
		}
	}
	tap_ok(bad == 0, "f32 -> f16 at every tie and one ulp either side (%d wrong)", bad);
	if (bad)
		tap_diag("first: 0x%08x", first);

	tap_ok(f32_to_f16(65520.0f) == 0x7c00, "f16 tie 65520 rounds to inf (even)");
	tap_ok(f32_to_f16(nextafterf(65520.0f, 0)) == 0x7bff, "f16 just below 65520 -> 65504");
	tap_ok(f32_to_f16(0x1p-25f) == 0x0000, "f16 tie 2^-25 -> +0 (even)");
	tap_ok(f32_to_f16(nextafterf(0x1p-25f, 1)) == 0x0001, "f16 just above 2^-25 -> 2^-24");
	tap_ok(f32_to_f16(3 * 0x1p-25f) == 0x0002, "f16 tie 3*2^-25 -> 0x0002 (even)");
	tap_ok(f32_to_f16(0x1p-14f - 0x1p-25f) == 0x0400, "f16 tie between largest subnormal and smallest normal -> normal");
	tap_ok(f32_to_f16(2049.0f) == 0x6800 && f32_to_f16(2051.0f) == 0x6802, "f16 ties at 2049, 2051 go to even");
	tap_ok(f32_to_f16(-0.0f) == 0x8000, "f16 keeps -0");
	tap_ok(f32_to_f16(1e-30f) == 0 && f32_to_f16(-1e-30f) == 0x8000, "f16 underflow to signed zero");
	tap_ok(f32_to_f16(INFINITY) == 0x7c00 && f32_to_f16(-INFINITY) == 0xfc00, "f16 keeps +-inf");
	tap_ok(f32_to_f16(1e6f) == 0x7c00 && f32_to_f16(-1e6f) == 0xfc00, "f16 overflow to +-inf");
	uint16_t n1 = f32_to_f16(NAN), n2 = f32_to_f16(float_of(0xff800001u));
	tap_ok((n1 & 0x7c00) == 0x7c00 && (n1 & 0x3ff) && !(n1 & 0x8000) &&
	    (n2 & 0x7c00) == 0x7c00 && (n2 & 0x3ff) && (n2 & 0x8000), "f16 NaN stays NaN with its sign");
}

/* Whole-array conversions through unaligned buffers. */
static void
test_arrays(void)
{
	unsigned char buf[64 + 1], back[64 + 1];
	float x[8] = { 1.0f, -2.5f, 0.1f, 65504.0f, 0x1p-24f, -0.0f, 3.0e38f, 1e-40f };
	float y[8];
	double d[3] = { 0.5, -1e300, 1e-300 };
	int bad;

	/* unaligned destination and source (offset 1) */
	tap_ok(st_from_f32(buf + 1, x, ST_F32, 8) == 0 && st_to_f32(y, buf + 1, ST_F32, 8) == 0 &&
	    memcmp(x, y, sizeof x) == 0, "F32 arrays copy through an unaligned buffer");
	st_from_f32(buf + 1, x, ST_BF16, 8);
	st_to_f32(y, buf + 1, ST_BF16, 8);
	bad = 0;
	for (int i = 0; i < 8; i++)
		bad += bits_of(y[i]) != bits_of(bf16_to_f32(f32_to_bf16(x[i])));
	tap_ok(bad == 0, "BF16 arrays convert element by element (unaligned)");
	st_from_f32(buf + 1, x, ST_F16, 8);
	st_to_f32(y, buf + 1, ST_F16, 8);
	bad = 0;
	for (int i = 0; i < 8; i++)
		bad += bits_of(y[i]) != bits_of(f16_to_f32(f32_to_f16(x[i])));
	tap_ok(bad == 0, "F16 arrays convert element by element (unaligned)");
	memcpy(back + 1, d, sizeof d);
	st_to_f32(y, back + 1, ST_F64, 3);
	tap_ok(y[0] == 0.5f && isinf(y[1]) && y[1] < 0 && y[2] == 0.0f, "F64 narrows to float32");
	tap_ok(st_to_f32(y, buf, ST_I32, 1) < 0 && st_from_f32(buf, x, ST_I8, 1) < 0 &&
	    st_from_f32(buf, x, ST_F64, 1) < 0, "non-float conversions are refused");
}

/* dtype names, sizes and classes. */
static void
test_names(void)
{
	int bad = 0;

	for (int i = 0; i < ST_DTYPE_COUNT; i++)
		bad += st_dtype_parse(st_dtype_name((st_dtype)i)) != (st_dtype)i;
	tap_ok(bad == 0, "every dtype name parses back to its dtype");
	tap_ok(st_dtype_size(ST_BF16) == 2 && st_dtype_size(ST_I64) == 8 && st_dtype_size(ST_BOOL) == 1 &&
	    st_dtype_size(ST_F64) == 8 && st_dtype_size(ST_U8) == 1, "dtype sizes");
	tap_ok(st_dtype_parse("f32") == ST_DTYPE_INVALID && st_dtype_parse("F8_E4M3FNUZ") == ST_DTYPE_INVALID &&
	    st_dtype_parse("F7") == ST_DTYPE_INVALID && st_dtype_parse("") == ST_DTYPE_INVALID,
	    "unknown dtype names are refused");
	tap_ok(st_dtype_parse("F8_E4M3") == ST_F8_E4M3 && st_dtype_parse("F8_E5M2") == ST_F8_E5M2 &&
	    st_dtype_parse("F8_E8M0") == ST_F8_E8M0 && st_dtype_parse("C64") == ST_C64 && st_dtype_parse("F4") == ST_F4 &&
	    st_dtype_parse("F6_E2M3") == ST_F6_E2M3 && st_dtype_parse("F6_E3M2") == ST_F6_E3M2,
	    "every dtype the safetensors format defines parses (F8, C64, F4, F6)");
	tap_ok(st_dtype_size(ST_F8_E4M3) == 1 && st_dtype_size(ST_C64) == 8 && st_dtype_size(ST_F4) == 0 &&
	    st_dtype_bits(ST_F4) == 4 && st_dtype_bits(ST_F6_E2M3) == 6 && st_dtype_bytes(ST_F4, 6) == 3 &&
	    st_dtype_bytes(ST_F4, 5) == UINT64_MAX && st_dtype_bytes(ST_F6_E3M2, 4) == 3 &&
	    st_dtype_bytes(ST_F6_E3M2, 3) == UINT64_MAX && st_dtype_bytes(ST_I64, UINT64_MAX / 4) == UINT64_MAX,
	    "sizes in bits and bytes; sub-byte tensors must fill whole bytes");
	tap_ok(!st_dtype_is_float(ST_F8_E4M3) && !st_dtype_is_float(ST_C64) && !st_dtype_is_float(ST_F4),
	    "the new dtypes are carried, never converted");
	tap_ok(st_dtype_is_float(ST_F16) && st_dtype_is_float(ST_F64) && !st_dtype_is_float(ST_I32) &&
	    !st_dtype_is_float(ST_BOOL), "st_dtype_is_float");
	tap_ok(st_dtype_size(ST_DTYPE_INVALID) == 0 && strcmp(st_dtype_name(ST_DTYPE_COUNT), "?") == 0,
	    "invalid dtypes have size 0 and name ?");
}

int
main(void)
{
	test_names();
	test_bf16_decode();
	test_bf16_encode();
	test_f16_decode();
	test_f16_encode();
	test_arrays();
	return tap_done();
}
