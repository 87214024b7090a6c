// bf16-huffman -> BF16 (spec "bf16-huffman").
//
// Version 0, correctness first: one thread decodes one chunk (16384 values
// by default) serially, with the same table entries as the CPU decoder
// (uw_format::huffman::Entry: exponent | len << 8 | escape << 12). It is the
// reference the faster kernels are checked against; it has not been timed.

extern "C" __global__ void uw_huffman_to_bf16(
    const u8* __restrict__ sign_mantissa,
    const u32* __restrict__ chunk_index,
    const u8* __restrict__ selectors,
    const u8* __restrict__ exp_stream,
    u64 exp_stream_len,
    u64 n,
    u32 chunk_count, u32 chunk_log2, u32 block_log2, u32 selector_bits,
    u32 max_code_len, u32 table_count,
    const u32* __restrict__ tables,
    u16* __restrict__ out,
    int* __restrict__ error)
{
    u32 c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= chunk_count) return;
    u64 start = chunk_index[c];
    u64 end = (c + 1 < chunk_count) ? (u64)chunk_index[c + 1] : exp_stream_len;
    if ((c == 0 && start != 0) || start > end || end > exp_stream_len) { uw_fail(error, UW_ERR_CHUNK_INDEX); return; }
    u64 first = (u64)c << chunk_log2;
    u64 last = first + (1ull << chunk_log2);
    if (last > n) last = n;
    u32 mask = (1u << max_code_len) - 1;
    u32 table_size = 1u << max_code_len;

    u64 buf = 0;       // bit buffer, next bit in bit 0
    u32 count = 0;     // valid bits in buf
    u64 pos = start;   // next byte to load
    u64 consumed = 0;  // bits consumed in this chunk
    const u32* table = tables;
    for (u64 i = first; i < last; ++i) {
        if (((i - first) & ((1ull << block_log2) - 1)) == 0) {
            u32 t = 0;
            if (selector_bits) {
                u64 bit = (i >> block_log2) * selector_bits;
                t = (selectors[bit / 8] >> (bit % 8)) & ((1u << selector_bits) - 1);
            }
            if (t >= table_count) { uw_fail(error, UW_ERR_SELECTOR); return; }
            table = tables + (u64)t * table_size;
        }
        // Keep at least 20 bits (12-bit code + 8-bit escape literal);
        // bytes past the chunk read as zero, as in the CPU decoder.
        while (count <= 56) {
            u64 byte = pos < end ? exp_stream[pos] : 0;
            buf |= byte << count;
            count += 8;
            ++pos;
        }
        u32 e = table[buf & mask];
        u32 len = (e >> 8) & 0xF;
        if (len == 0) { uw_fail(error, UW_ERR_NO_CODE); return; }
        u32 esc = (e >> 12) & 1;
        u32 exponent = esc ? (u32)(buf >> len) & 0xFF : (e & 0xFF);
        u32 used = len + 8 * esc;
        buf >>= used;
        count -= used;
        consumed += used;
        out[i] = uw_join(exponent, sign_mantissa[i]);
    }
    // Exact consumption: the chunk holds ceil(bits/8) bytes, padding zero.
    u64 bytes = end - start;
    if (consumed > bytes * 8 || (consumed + 7) / 8 != bytes) { uw_fail(error, UW_ERR_CHUNK_END); return; }
    if (consumed % 8 != 0 && (exp_stream[end - 1] >> (consumed % 8)) != 0) { uw_fail(error, UW_ERR_CHUNK_END); }
}
