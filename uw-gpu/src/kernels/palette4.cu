// bf16-palette4 -> BF16 (spec "bf16-palette4").
//
// uw_palette4_to_bf16: each thread rebuilds 8 values: one 4-byte load of
// nibbles, one 8-byte load of sign+mantissa bytes, one 16-byte store. The
// parts are 16-byte aligned relative to the section start (spec), and the
// section is uploaded to a 256-byte aligned allocation, so these vector
// accesses are aligned. The palette travels in two 64-bit arguments.
// Exceptions are patched afterwards by uw_palette4_exceptions (one thread
// each), out of the hot path.

extern "C" __global__ void uw_palette4_to_bf16(
    const u8* __restrict__ sign_mantissa,
    const u8* __restrict__ nibbles,
    u64 palette_lo, u64 palette_hi, u32 palette_len,
    u64 n,
    u16* __restrict__ out,
    int* __restrict__ error)
{
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x; g * 8 < n; g += stride) {
        u64 i0 = g * 8;
        u16 w[8];
        if (i0 + 8 <= n) {
            u32 nib = *(const u32*)(nibbles + i0 / 2);
            u64 sm = *(const u64*)(sign_mantissa + i0);
            #pragma unroll
            for (int k = 0; k < 8; ++k) {
                u32 idx = (nib >> (4 * k)) & 0xF;
                if (idx >= palette_len) { uw_fail(error, UW_ERR_PALETTE_INDEX); idx = 0; }
                u64 pal = idx < 8 ? palette_lo : palette_hi;
                u32 e = (u32)(pal >> (8 * (idx & 7))) & 0xFF;
                w[k] = uw_join(e, (u32)(sm >> (8 * k)) & 0xFF);
            }
            uint4 v;
            v.x = (u32)w[0] | ((u32)w[1] << 16);
            v.y = (u32)w[2] | ((u32)w[3] << 16);
            v.z = (u32)w[4] | ((u32)w[5] << 16);
            v.w = (u32)w[6] | ((u32)w[7] << 16);
            *(uint4*)(out + i0) = v;
        } else {
            for (u64 i = i0; i < n; ++i) {
                u32 idx = (nibbles[i / 2] >> (4 * (i & 1))) & 0xF;
                if (idx >= palette_len) { uw_fail(error, UW_ERR_PALETTE_INDEX); idx = 0; }
                u64 pal = idx < 8 ? palette_lo : palette_hi;
                u32 e = (u32)(pal >> (8 * (idx & 7))) & 0xFF;
                out[i] = uw_join(e, sign_mantissa[i]);
            }
        }
    }
}

extern "C" __global__ void uw_palette4_exceptions(
    const u32* __restrict__ positions,
    const u8* __restrict__ exponents,
    const u8* __restrict__ sign_mantissa,
    u64 count, u64 n,
    u16* __restrict__ out,
    int* __restrict__ error)
{
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 k = (u64)blockIdx.x * blockDim.x + threadIdx.x; k < count; k += stride) {
        u32 pos = positions[k];
        if (pos >= n || (k > 0 && positions[k - 1] >= pos)) { uw_fail(error, UW_ERR_EXCEPTION); continue; }
        out[pos] = uw_join(exponents[k], sign_mantissa[pos]);
    }
}
