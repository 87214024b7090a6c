// Shared definitions for the uw kernels. NVRTC compiles without system
// headers, so fixed-width types are spelled out here.
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

// Error codes written to the kernels' error word (first fault wins).
#define UW_OK 0
#define UW_ERR_NO_CODE 1          // bits match no Huffman code
#define UW_ERR_CHUNK_INDEX 2      // chunk index out of order or past the stream
#define UW_ERR_SELECTOR 3         // block selector names a missing table
#define UW_ERR_CHUNK_END 4        // chunk not consumed exactly / non-zero padding
#define UW_ERR_PALETTE_INDEX 5    // palette-4 nibble past the palette
#define UW_ERR_EXCEPTION 6        // exception positions unsorted or past the end

__device__ __forceinline__ void uw_fail(int* error, int code) { atomicCAS(error, UW_OK, code); }

// spec "BF16 split": w = (sm & 0x80) << 8 | e << 7 | (sm & 0x7F)
__device__ __forceinline__ u16 uw_join(u32 e, u32 sm) {
    return (u16)(((sm & 0x80u) << 8) | (e << 7) | (sm & 0x7Fu));
}
