#!/usr/bin/env python3
"""Independent reference reader for `.uw` v1 files, written from spec/uw-v1.md only.

usage: python3 spec/tools/uw_read.py FILE.uw [--out OUT.safetensors] [--list] [--quiet]

Opens FILE.uw (validation stage O), checks every tensor (stages S and D, with the
data CRC), checks all file padding (F1) and the source header (R1), and with
--out writes the reconstructed safetensors file (spec section 6.3).
Exits 0 when the file is valid, 1 with "uw_read: error: <Condition>: ..." otherwise.

Standard library only. Also importable: open_uw(path) -> UwFile.
"""
import hashlib
import json
import os
import struct
import sys
import zlib

U64_MAX = (1 << 64) - 1

MAGIC = b"\x89UW\r\n\x1a\n\x00"
END_MAGIC = b"\x89UWEND\r\n"
SUPPORTED_REQUIRED_FEATURES = 0

DTYPES = {  # code: (name, bits)   spec section 7
    1: ("BOOL", 8), 2: ("U8", 8), 3: ("I8", 8), 4: ("F8_E5M2", 8), 5: ("F8_E4M3", 8),
    6: ("F8_E8M0", 8), 7: ("F8_E4M3FNUZ", 8), 8: ("F8_E5M2FNUZ", 8),
    9: ("I16", 16), 10: ("U16", 16), 11: ("F16", 16), 12: ("BF16", 16),
    13: ("I32", 32), 14: ("U32", 32), 15: ("F32", 32),
    16: ("C64", 64), 17: ("F64", 64), 18: ("I64", 64), 19: ("U64", 64),
    20: ("F4", 4), 21: ("F6_E2M3", 6), 22: ("F6_E3M2", 6),
}
BF16 = 12
ENC_RAW, ENC_HUFFMAN, ENC_PALETTE4 = 0, 1, 2
ENCODING_NAMES = {0: "raw", 1: "bf16-huffman", 2: "bf16-palette4"}

# limits, spec section 9
MAX_TENSORS = 1 << 20
MAX_METADATA = 1 << 20
MAX_STRINGS = 1 << 28
MAX_DIRECTORY = 1 << 30
MAX_NAME = 4096
MAX_RANK = 8
MAX_ENCODED_ELEMENTS = (1 << 32) - 1
MAX_EXP_STREAM = (1 << 32) - 1


class UwError(Exception):
    """A validation failure: `code` is the condition name of spec section 10.1."""

    def __init__(self, code, msg):
        super().__init__(f"{code}: {msg}")
        self.code = code


def crc32(b):
    return zlib.crc32(b) & 0xFFFFFFFF


def chk(v, err, what):
    """Overflow check: every value computed from file fields must fit in u64."""
    if v > U64_MAX:
        raise UwError(err, f"{what} overflows u64")
    return v


def ceil_div(a, b):
    return a // b + (1 if a % b else 0)


def align16(x):
    return ceil_div(x, 16) * 16


def utf8(b):
    try:
        return bytes(b).decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        return None


def json_quote(s):
    """q(s) of spec 6.4 (serde_json compact escaping)."""
    out = ['"']
    short = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    for ch in s:
        if ch in short:
            out.append(short[ch])
        elif ord(ch) < 0x20:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class Tensor:
    __slots__ = ("index", "record_offset", "name", "dtype", "encoding", "rank", "decoded_crc",
                 "data_offset", "data_len", "decoded_len", "data_crc", "shape", "n", "sec")

    def describe(self):
        return f"tensor {self.index} ({self.name!r})"


class UwFile:
    """A .uw file that passed stage O. Decode with decode(i); verify() runs everything."""

    def __init__(self, path):
        self.path = path
        self.f = open(path, "rb")
        self.file_len = os.fstat(self.f.fileno()).st_size
        self._open()

    def close(self):
        self.f.close()

    def _read(self, off, n):
        self.f.seek(off)
        b = self.f.read(n)
        if len(b) != n:
            raise UwError("Truncated", f"short read of {n} bytes at {off}")
        return b

    # ---------------------------------------------------------------- stage O
    def _open(self):
        L = self.file_len
        # O1
        if L < 128:
            raise UwError("Truncated", f"file is {L} bytes, a .uw file has at least 128")
        hdr = self._read(0, 64)
        # O2
        if hdr[0:8] != MAGIC:
            raise UwError("BadMagic", "file header signature is not \\x89UW\\r\\n\\x1a\\n\\0")
        (vmaj, vmin, header_len, req, opt, alignment, res0, hdoff, hdlen, res1, hcrc) = \
            struct.unpack_from("<HHIQQIIQQII", hdr, 8)
        # O3
        if vmaj != 1:
            raise UwError("UnsupportedVersion", f"version {vmaj}.{vmin}; this reader reads major version 1")
        # O4
        if crc32(hdr[0:60]) != hcrc:
            raise UwError("HeaderCrc", f"stored {hcrc:#010x}, computed {crc32(hdr[0:60]):#010x}")
        # O5
        if header_len != 64:
            raise UwError("BadHeader", f"header_len = {header_len}, must be 64")
        # O6
        if req & ~SUPPORTED_REQUIRED_FEATURES:
            raise UwError("UnsupportedFeature", f"required_features has unknown bits {req:#x}")
        # O7
        if res0 or res1:
            raise UwError("NonZeroReserved", "file header reserved field")
        # O8
        if alignment < 64 or alignment > (1 << 30) or alignment & (alignment - 1):
            raise UwError("BadAlignment", f"alignment = {alignment}")
        self.version = (vmaj, vmin)
        self.optional_features = opt
        self.alignment = alignment

        tr = self._read(L - 64, 64)
        # O9
        if tr[56:64] != END_MAGIC:
            raise UwError("BadMagic", "trailer signature is not \\x89UWEND\\r\\n")
        doff, dlen, dcrc, tcount, tfile_len = struct.unpack_from("<QQIIQ", tr, 0)
        (tcrc,) = struct.unpack_from("<I", tr, 52)
        # O10
        if crc32(tr[0:52]) != tcrc:
            raise UwError("TrailerCrc", f"stored {tcrc:#010x}, computed {crc32(tr[0:52]):#010x}")
        # O11
        if any(tr[32:52]):
            raise UwError("NonZeroReserved", "trailer reserved field")
        # O12
        if tfile_len != L:
            raise UwError("Inconsistent", f"trailer file_len = {tfile_len}, file is {L} bytes")
        # O13
        if not (hdoff == 0 and hdlen == 0) and not (hdoff == doff and hdlen == dlen):
            raise UwError("Inconsistent", f"header directory ({hdoff}, {hdlen}) != trailer ({doff}, {dlen})")
        self.header_has_directory = hdoff != 0 or hdlen != 0
        # O14
        if dlen < 32:
            raise UwError("BadLength", f"directory_len = {dlen} < 32")
        if dlen > MAX_DIRECTORY:
            raise UwError("LimitExceeded", f"directory_len = {dlen} > 2^30")
        # O15
        if doff % alignment:
            raise UwError("BadAlignment", f"directory_offset = {doff} not a multiple of {alignment}")
        # O16
        if doff < 64 or chk(doff + dlen, "OutOfBounds", "directory end") > L - 64:
            raise UwError("OutOfBounds", f"directory [{doff}, +{dlen}) outside [64, {L - 64})")
        self.directory_offset, self.directory_len = doff, dlen
        # O17
        d = self._read(doff, dlen)
        if crc32(d) != dcrc:
            raise UwError("DirectoryCrc", f"stored {dcrc:#010x}, computed {crc32(d):#010x}")
        T, M, S, sh_off, sh_len = struct.unpack_from("<IIIII", d, 0)
        # O18
        if any(d[20:32]):
            raise UwError("NonZeroReserved", "directory header reserved field")
        # O19
        if T > MAX_TENSORS:
            raise UwError("LimitExceeded", f"tensor_count = {T} > 2^20")
        if M > MAX_METADATA:
            raise UwError("LimitExceeded", f"metadata_count = {M} > 2^20")
        if S > MAX_STRINGS:
            raise UwError("LimitExceeded", f"strings_len = {S} > 2^28")
        # O20
        if dlen != 32 + 128 * T + 16 * M + S:
            raise UwError("BadLength", f"directory_len = {dlen}, expected {32 + 128 * T + 16 * M + S}")
        # O21
        if tcount != T:
            raise UwError("Inconsistent", f"trailer tensor_count = {tcount}, directory has {T}")
        heap_off = 32 + 128 * T + 16 * M
        heap = d[heap_off:heap_off + S]
        self.heap = heap
        # O22
        if sh_len == 0:
            if sh_off != 0:
                raise UwError("BadSourceHeader", "source_header_offset != 0 with source_header_len = 0")
        elif sh_off + sh_len > S:
            raise UwError("OutOfBounds", f"source header [{sh_off}, +{sh_len}) outside heap of {S}")
        self.source_header = heap[sh_off:sh_off + sh_len] if sh_len else None

        # O23
        tensors = []
        prev_off = prev_end = None
        for i in range(T):
            ro = 32 + 128 * i
            (name_off, name_len, dtype, enc, rank, r0, dec_crc, data_off, data_len, dec_len, data_crc,
             r1) = struct.unpack_from("<IIBBBBIQQQII", d, ro)
            shape_all = struct.unpack_from("<8Q", d, ro + 48)
            t = Tensor()
            t.index = i
            t.record_offset = doff + ro
            t.sec = None
            where = f"tensor {i} (record at {doff + ro})"
            # O23a
            if r0 or r1 or any(d[ro + 112:ro + 128]):
                raise UwError("NonZeroReserved", f"{where}: reserved field")
            # O23b
            if name_len == 0:
                raise UwError("BadName", f"{where}: empty name")
            if name_len > MAX_NAME:
                raise UwError("LimitExceeded", f"{where}: name_len = {name_len} > 4096")
            if name_off + name_len > S:
                raise UwError("OutOfBounds", f"{where}: name [{name_off}, +{name_len}) outside heap of {S}")
            name = utf8(heap[name_off:name_off + name_len])
            if name is None:
                raise UwError("BadName", f"{where}: name is not UTF-8")
            if name == "__metadata__":
                raise UwError("BadName", f"{where}: name __metadata__ is reserved")
            t.name = name
            where = f"tensor {i} ({name!r})"
            # O23c
            if dtype not in DTYPES:
                raise UwError("BadDtype", f"{where}: dtype code {dtype}")
            # O23d
            if enc not in ENCODING_NAMES:
                raise UwError("BadEncoding", f"{where}: encoding {enc}")
            if enc != ENC_RAW and dtype != BF16:
                raise UwError("BadEncoding", f"{where}: encoding {ENCODING_NAMES[enc]} needs BF16, dtype is {DTYPES[dtype][0]}")
            # O23e
            if rank > MAX_RANK:
                raise UwError("BadShape", f"{where}: rank {rank} > 8")
            if any(shape_all[rank:]):
                raise UwError("BadShape", f"{where}: non-zero dimension past rank")
            N = 1
            for k in range(rank):
                N = chk(N * shape_all[k], "BadShape", f"{where}: element count")
            bits = DTYPES[dtype][1]
            nb = chk(N * bits, "BadShape", f"{where}: element count * bits")
            if nb % 8:
                raise UwError("BadShape", f"{where}: {N} elements of {bits} bits are not whole bytes")
            if dec_len != nb // 8:
                raise UwError("BadShape", f"{where}: decoded_len = {dec_len}, shape gives {nb // 8}")
            # O23f
            if data_off % alignment:
                raise UwError("BadAlignment", f"{where}: data_offset = {data_off} not a multiple of {alignment}")
            end = chk(data_off + data_len, "OutOfBounds", f"{where}: section end")
            if data_off < 64 or end > doff:
                raise UwError("OutOfBounds", f"{where}: section [{data_off}, +{data_len}) outside [64, {doff})")
            # O23g
            if i > 0:
                if data_off < prev_off:
                    raise UwError("Unsorted", f"{where}: data_offset {data_off} < previous {prev_off}")
                if data_off < prev_end:
                    raise UwError("Overlap", f"{where}: section at {data_off} starts before previous end {prev_end}")
            prev_off, prev_end = data_off, end
            # O23h
            if enc == ENC_RAW:
                if data_len != dec_len:
                    raise UwError("BadLength", f"{where}: raw data_len = {data_len} != decoded_len = {dec_len}")
                if data_crc != dec_crc:
                    raise UwError("Inconsistent", f"{where}: raw data_crc != decoded_crc")
            else:
                if N < 1:
                    raise UwError("BadEncoding", f"{where}: encoded tensor with no elements")
                if N > MAX_ENCODED_ELEMENTS:
                    raise UwError("LimitExceeded", f"{where}: {N} elements > 2^32-1")
                hl = 128 if enc == ENC_HUFFMAN else 64
                if data_len < hl + N:
                    raise UwError("BadLength", f"{where}: data_len = {data_len} < {hl} + {N}")
            t.dtype, t.encoding, t.rank = dtype, enc, rank
            t.decoded_crc, t.data_offset, t.data_len = dec_crc, data_off, data_len
            t.decoded_len, t.data_crc = dec_len, data_crc
            t.shape, t.n = list(shape_all[:rank]), N
            tensors.append(t)
        # O24
        seen = {}
        for t in tensors:
            if t.name in seen:
                raise UwError("DuplicateName", f"tensors {seen[t.name]} and {t.index} are both named {t.name!r}")
            seen[t.name] = t.index
        # O25
        meta = []
        prev_key = None
        for j in range(M):
            mo = 32 + 128 * T + 16 * j
            ko, kl, vo, vl = struct.unpack_from("<IIII", d, mo)
            if ko + kl > S or vo + vl > S:
                raise UwError("OutOfBounds", f"metadata record {j}: string outside heap of {S}")
            kb, vb = heap[ko:ko + kl], heap[vo:vo + vl]
            k, v = utf8(kb), utf8(vb)
            if k is None or v is None:
                raise UwError("BadMetadata", f"metadata record {j}: key or value not UTF-8")
            if prev_key is not None:
                if kb == prev_key:
                    raise UwError("DuplicateName", f"metadata key {k!r} repeated")
                if kb < prev_key:
                    raise UwError("Unsorted", f"metadata key {k!r} out of order")
            prev_key = kb
            meta.append((k, v))
        self.tensors = tensors
        self.metadata = meta
        self.by_name = seen

    # ---------------------------------------------------------------- stage S
    def section_header(self, t, sec_head):
        """Stage S for tensor t, given at least the first 128/64 bytes of its section."""
        where = t.describe()
        n = t.n
        if t.encoding == ENC_HUFFMAN:
            h = sec_head[:128]
            (ec, P, has_esc, Th, sbits, blog, clog, mcl, r0) = struct.unpack_from("<QBBBBBBBB", h, 0)
            palette = h[16:32]
            cl = [list(h[32 + 17 * t_:32 + 17 * t_ + 17]) for t_ in range(4)]
            (C, r2, esl, r3) = struct.unpack_from("<IIQQ", h, 104)
            # S1
            if r0 or any(h[100:104]) or r2 or r3:
                raise UwError("NonZeroReserved", f"{where}: HuffmanHeader reserved field")
            # S2
            if ec != n:
                raise UwError("BadLength", f"{where}: element_count = {ec}, shape gives {n}")
            # S3
            if not 1 <= P <= 16:
                raise UwError("BadPalette", f"{where}: palette_len = {P}")
            if len(set(palette[:P])) != P:
                raise UwError("BadPalette", f"{where}: palette entries not distinct")
            if any(palette[P:]):
                raise UwError("BadPalette", f"{where}: non-zero palette entry past palette_len")
            # S4
            if has_esc not in (0, 1):
                raise UwError("BadHuffmanTable", f"{where}: has_escape = {has_esc}")
            K = P + has_esc
            # S5
            if not 1 <= Th <= 4:
                raise UwError("BadHuffmanTable", f"{where}: table_count = {Th}")
            want = 0 if Th == 1 else (1 if Th == 2 else 2)
            if sbits != want:
                raise UwError("BadHuffmanTable", f"{where}: selector_bits = {sbits}, {Th} tables need {want}")
            # S6
            if not 6 <= blog <= 16 or not blog <= clog <= 24:
                raise UwError("BadHuffmanTable", f"{where}: block_log2 = {blog}, chunk_log2 = {clog}")
            # S7
            if not 1 <= mcl <= 12:
                raise UwError("BadHuffmanTable", f"{where}: max_code_len = {mcl}")
            # S8
            for ti in range(4):
                for s in range(17):
                    if (ti >= Th or s >= K) and cl[ti][s]:
                        raise UwError("BadHuffmanTable", f"{where}: table {ti} symbol {s}: length outside the alphabet")
            # S9
            for ti in range(Th):
                lens = cl[ti][:K]
                nz = [l for l in lens if l]
                if any(l > mcl for l in nz):
                    raise UwError("BadHuffmanTable", f"{where}: table {ti}: code longer than max_code_len")
                if len(nz) == 1:
                    if nz[0] != 1:
                        raise UwError("BadHuffmanTable", f"{where}: table {ti}: single symbol needs length 1")
                elif sum(1 << (mcl - l) for l in nz) != 1 << mcl:
                    raise UwError("BadHuffmanTable", f"{where}: table {ti}: code lengths are not a complete prefix code")
            # S10
            if C != ceil_div(n, 1 << clog):
                raise UwError("BadLength", f"{where}: chunk_count = {C}, expected {ceil_div(n, 1 << clog)}")
            # S11
            if esl > MAX_EXP_STREAM:
                raise UwError("LimitExceeded", f"{where}: exp_stream_len = {esl} > 2^32-1")
            # S12
            idx = align16(128 + n)
            sel = idx + 4 * C
            nblocks = ceil_div(n, 1 << blog)
            sel_len = ceil_div(nblocks * sbits, 8)
            ex = align16(sel + sel_len)
            if chk(ex + esl, "BadLength", f"{where}: section end") != t.data_len:
                raise UwError("BadLength", f"{where}: data_len = {t.data_len}, layout gives {ex + esl}")
            return dict(P=P, K=K, has_esc=has_esc, T=Th, sbits=sbits, blog=blog, clog=clog, mcl=mcl,
                        palette=bytes(palette[:P]), lengths=[cl[ti][:K] for ti in range(Th)], C=C,
                        esl=esl, idx=idx, sel=sel, sel_len=sel_len, nblocks=nblocks, ex=ex)
        elif t.encoding == ENC_PALETTE4:
            h = sec_head[:64]
            ec, P = struct.unpack_from("<QB", h, 0)
            palette = h[16:32]
            (E,) = struct.unpack_from("<Q", h, 32)
            # S13
            if any(h[9:16]) or any(h[40:64]):
                raise UwError("NonZeroReserved", f"{where}: Palette4Header reserved field")
            # S14
            if ec != n:
                raise UwError("BadLength", f"{where}: element_count = {ec}, shape gives {n}")
            # S15
            if not 1 <= P <= 16:
                raise UwError("BadPalette", f"{where}: palette_len = {P}")
            if len(set(palette[:P])) != P:
                raise UwError("BadPalette", f"{where}: palette entries not distinct")
            if any(palette[P:]):
                raise UwError("BadPalette", f"{where}: non-zero palette entry past palette_len")
            # S16
            if E > n:
                raise UwError("BadLength", f"{where}: exception_count = {E} > {n}")
            # S17
            nb = align16(64 + n)
            xp = align16(nb + ceil_div(n, 2))
            if chk(xp + 5 * E, "BadLength", f"{where}: section end") != t.data_len:
                raise UwError("BadLength", f"{where}: data_len = {t.data_len}, layout gives {xp + 5 * E}")
            return dict(P=P, palette=bytes(palette[:P]), E=E, nb=nb, xp=xp)
        return None

    # ---------------------------------------------------------------- stage D
    def decode(self, t, check_data_crc=True):
        """Returns the decoded bytes of tensor t (index, name or Tensor), stages S and D."""
        if not isinstance(t, Tensor):
            t = self.tensors[self.by_name[t]] if isinstance(t, str) else self.tensors[t]
        sec = self._read(t.data_offset, t.data_len)
        where = t.describe()
        # D1
        if check_data_crc and crc32(sec) != t.data_crc:
            raise UwError("DataCrc", f"{where}: stored {t.data_crc:#010x}, computed {crc32(sec):#010x}")
        if t.encoding == ENC_RAW:
            out = sec
        elif t.encoding == ENC_HUFFMAN:
            out = self._decode_huffman(t, sec, self.section_header(t, sec))
        else:
            out = self._decode_palette4(t, sec, self.section_header(t, sec))
        # D9
        if len(out) != t.decoded_len:
            raise UwError("CorruptStream", f"{where}: decoded {len(out)} bytes, expected {t.decoded_len}")
        if crc32(out) != t.decoded_crc:
            raise UwError("DecodedCrc", f"{where}: stored {t.decoded_crc:#010x}, computed {crc32(out):#010x}")
        return bytes(out)

    @staticmethod
    def _canonical_codes(lens):
        bl_count = [0] * 13
        for l in lens:
            if l:
                bl_count[l] += 1
        next_code = [0] * 13
        code = 0
        for l in range(1, 13):
            code = (code + bl_count[l - 1]) << 1
            next_code[l] = code
        codes = [0] * len(lens)
        for s, l in enumerate(lens):
            if l:
                codes[s] = next_code[l]
                next_code[l] += 1
        return codes

    @staticmethod
    def _reverse(code, l):
        r = 0
        for _ in range(l):
            r = (r << 1) | (code & 1)
            code >>= 1
        return r

    def _build_lut(self, lens, palette, P, mcl):
        """Entry = len << 9 | esc << 8 | exponent; 0 = invalid pattern."""
        lut = [0] * (1 << mcl)
        codes = self._canonical_codes(lens)
        for s, l in enumerate(lens):
            if not l:
                continue
            ent = (l << 9) | ((1 << 8) if s == P else palette[s])
            r = self._reverse(codes[s], l)
            for j in range(1 << (mcl - l)):
                lut[r | (j << l)] = ent
        return lut

    @staticmethod
    def _join_planes(E, sm, n):
        """out[2i] = ((E&1)<<7)|(sm&0x7F); out[2i+1] = (sm&0x80)|(E>>1), vectorized via translate."""
        e_lo = bytes(((e & 1) << 7) for e in range(256))
        e_hi = bytes((e >> 1) for e in range(256))
        s_lo = bytes((s & 0x7F) for s in range(256))
        s_hi = bytes((s & 0x80) for s in range(256))
        E = bytes(E)
        sm = bytes(sm)
        lo = (int.from_bytes(E.translate(e_lo), "little") | int.from_bytes(sm.translate(s_lo), "little")).to_bytes(n, "little")
        hi = (int.from_bytes(E.translate(e_hi), "little") | int.from_bytes(sm.translate(s_hi), "little")).to_bytes(n, "little")
        out = bytearray(2 * n)
        out[0::2] = lo
        out[1::2] = hi
        return out

    def _decode_huffman(self, t, sec, h):
        where = t.describe()
        n = t.n
        P, T, sbits, blog, clog, mcl, C = h["P"], h["T"], h["sbits"], h["blog"], h["clog"], h["mcl"], h["C"]
        idx, sel, sel_len, nblocks, ex, esl = h["idx"], h["sel"], h["sel_len"], h["nblocks"], h["ex"], h["esl"]
        # D2
        chunk_index = struct.unpack_from(f"<{C}I", sec, idx)
        if chunk_index[0] != 0:
            raise UwError("CorruptStream", f"{where}: chunk_index[0] = {chunk_index[0]}")
        for c in range(1, C):
            if chunk_index[c] < chunk_index[c - 1]:
                raise UwError("CorruptStream", f"{where}: chunk_index[{c}] decreases")
        if chunk_index[-1] > esl:
            raise UwError("CorruptStream", f"{where}: chunk_index[{C - 1}] past exp_stream_len")
        # D3
        selb = sec[sel:sel + sel_len]
        if sbits:
            mask = (1 << sbits) - 1
            sels = [(selb[(b * sbits) >> 3] >> ((b * sbits) & 7)) & mask for b in range(nblocks)]
            for b, s in enumerate(sels):
                if s >= T:
                    raise UwError("CorruptStream", f"{where}: block {b} selects table {s} of {T}")
            used = nblocks * sbits
            if used % 8 and selb[-1] >> (used % 8):
                raise UwError("NonZeroPadding", f"{where}: selector padding bits")
        else:
            sels = None
        # D4
        if any(sec[128 + n:idx]) or any(sec[sel + sel_len:ex]):
            raise UwError("NonZeroPadding", f"{where}: padding between section parts")
        # D8
        luts = [self._build_lut(h["lengths"][ti], h["palette"], P, mcl) for ti in range(T)]
        pmask = (1 << mcl) - 1
        X = sec[ex:ex + esl]
        E = bytearray(n)
        CS = 1 << clog
        BS = 1 << blog
        for c in range(C):
            base = chunk_index[c]
            cend = chunk_index[c + 1] if c + 1 < C else esl
            nbytes = cend - base
            nbits = 8 * nbytes
            buf = X[base:cend] + bytes(8)
            acc = 0
            nacc = 0
            p = 0
            pos = 0
            i = c * CS
            iend = min(n, i + CS)
            while i < iend:
                bend = min(iend, (i // BS + 1) * BS)
                lut = luts[sels[i >> blog] if sels is not None else 0]
                for k in range(i, bend):
                    if nacc < 20:
                        acc |= int.from_bytes(buf[p:p + 4], "little") << nacc
                        p += 4
                        nacc += 32
                    ent = lut[acc & pmask]
                    l = ent >> 9
                    if not l:
                        raise UwError("CorruptStream", f"{where}: chunk {c}: invalid code at element {k}")
                    acc >>= l
                    nacc -= l
                    pos += l
                    if ent & 256:
                        E[k] = acc & 0xFF
                        acc >>= 8
                        nacc -= 8
                        pos += 8
                    else:
                        E[k] = ent & 0xFF
                    if pos > nbits:
                        raise UwError("CorruptStream", f"{where}: chunk {c}: stream ends inside element {k}")
                i = bend
            if ceil_div(pos, 8) != nbytes:
                raise UwError("CorruptStream", f"{where}: chunk {c}: {nbytes} bytes stored, {ceil_div(pos, 8)} used")
            if pos % 8 and buf[pos // 8] >> (pos % 8):
                raise UwError("NonZeroPadding", f"{where}: chunk {c}: padding bits")
        return self._join_planes(E, sec[128:128 + n], n)

    def _decode_palette4(self, t, sec, h):
        where = t.describe()
        n = t.n
        P, palette, Ecount, nb, xp = h["P"], h["palette"], h["E"], h["nb"], h["xp"]
        half = ceil_div(n, 2)
        nib = sec[nb:nb + half]
        # D5
        if any(sec[64 + n:nb]) or any(sec[nb + half:xp]):
            raise UwError("NonZeroPadding", f"{where}: padding between section parts")
        if n % 2 and nib[-1] >> 4:
            raise UwError("NonZeroPadding", f"{where}: high nibble of the last byte")
        # D6
        bad = bytes(0 if ((b & 15) < P and (b >> 4) < P) else 1 for b in range(256))
        if nib.translate(bad).count(1):
            raise UwError("CorruptStream", f"{where}: nibble >= palette_len {P}")
        pal16 = palette + bytes(16 - P)
        lo = nib.translate(bytes(pal16[b & 15] for b in range(256)))
        hi = nib.translate(bytes(pal16[b >> 4] for b in range(256)))
        E = bytearray(n)
        E[0::2] = lo
        E[1::2] = hi[:n // 2]
        # D7
        pos = struct.unpack_from(f"<{Ecount}I", sec, xp)
        exps = sec[xp + 4 * Ecount:xp + 5 * Ecount]
        prev = -1
        for k, q in enumerate(pos):
            if q <= prev or q >= n:
                raise UwError("CorruptStream", f"{where}: exception {k}: position {q} not increasing or >= {n}")
            prev = q
            nv = nib[q >> 1] >> 4 if q & 1 else nib[q >> 1] & 15
            if nv != 0:
                raise UwError("CorruptStream", f"{where}: exception {k}: nibble at position {q} is {nv}, not 0")
            E[q] = exps[k]
        return self._join_planes(E, sec[64:64 + n], n)

    # ---------------------------------------------------------------- stage F
    def check_padding(self):
        """F1: every byte outside header, sections, directory and trailer is zero."""
        gaps = []
        prev = 64
        for t in self.tensors:
            gaps.append((prev, t.data_offset))
            prev = t.data_offset + t.data_len
        gaps.append((prev, self.directory_offset))
        gaps.append((self.directory_offset + self.directory_len, self.file_len - 64))
        for a, b in gaps:
            off = a
            while off < b:
                k = min(b - off, 1 << 20)
                blk = self._read(off, k)
                if any(blk):
                    z = next(j for j, x in enumerate(blk) if x)
                    raise UwError("NonZeroPadding", f"file padding byte at offset {off + z}")
                off += k

    def check_source_header(self):
        """R1: the source header, if any, describes exactly the directory (spec 6.2)."""
        if self.source_header is None:
            return
        txt = utf8(self.source_header)
        if txt is None:
            raise UwError("BadSourceHeader", "source header is not UTF-8")

        def pairs(kv):
            d = {}
            for k, v in kv:
                if k in d:
                    raise UwError("BadSourceHeader", f"duplicate JSON key {k!r}")
                d[k] = v
            return d
        try:
            j = json.loads(txt, object_pairs_hook=pairs)
        except ValueError as e:
            raise UwError("BadSourceHeader", f"source header is not JSON: {e}")
        if not isinstance(j, dict):
            raise UwError("BadSourceHeader", "source header is not a JSON object")
        meta = j.pop("__metadata__", {})
        if not isinstance(meta, dict) or sorted(meta.items()) != sorted(self.metadata) \
                or len(meta) != len(self.metadata):
            raise UwError("BadSourceHeader", "__metadata__ differs from the metadata records")
        if set(j) != set(t.name for t in self.tensors):
            raise UwError("BadSourceHeader", "tensor names differ from the directory")
        B = 0
        for t in self.tensors:
            e = j[t.name]
            if not isinstance(e, dict):
                raise UwError("BadSourceHeader", f"entry of {t.name!r} is not an object")
            if e.get("dtype") != DTYPES[t.dtype][0]:
                raise UwError("BadSourceHeader", f"{t.name!r}: dtype {e.get('dtype')!r} != {DTYPES[t.dtype][0]}")
            if e.get("shape") != t.shape or any(type(x) is not int for x in e.get("shape", [])):
                raise UwError("BadSourceHeader", f"{t.name!r}: shape {e.get('shape')!r} != {t.shape}")
            do = e.get("data_offsets")
            if do != [B, B + t.decoded_len] or any(type(x) is not int for x in do):
                raise UwError("BadSourceHeader", f"{t.name!r}: data_offsets {e.get('data_offsets')!r} != {[B, B + t.decoded_len]}")
            B += t.decoded_len

    def canonical_header(self):
        """Spec 6.4."""
        entries = []
        if self.metadata:
            entries.append('"__metadata__":{' + ",".join(json_quote(k) + ":" + json_quote(v) for k, v in self.metadata) + "}")
        B = 0
        for t in self.tensors:
            entries.append(json_quote(t.name) + ':{"dtype":' + json_quote(DTYPES[t.dtype][0]) + ',"shape":['
                           + ",".join(str(x) for x in t.shape) + '],"data_offsets":[' + str(B) + ","
                           + str(B + t.decoded_len) + "]}")
            B += t.decoded_len
        h = ("{" + ",".join(entries) + "}").encode("utf-8")
        return h + b" " * ((-len(h)) % 8)

    def verify(self, out=None):
        """Stages S and D (with D1) for every tensor, F1, R1; optionally writes the reconstruction.
        Returns the SHA-256 of the reconstruction."""
        self.check_source_header()
        H = self.source_header if self.source_header is not None else self.canonical_header()
        sha = hashlib.sha256()
        fo = open(out, "wb") if out else None
        try:
            for part in (struct.pack("<Q", len(H)), H):
                sha.update(part)
                if fo:
                    fo.write(part)
            for t in self.tensors:
                b = self.decode(t, check_data_crc=True)
                sha.update(b)
                if fo:
                    fo.write(b)
            self.check_padding()
        except BaseException:
            if fo:
                fo.close()
                os.unlink(out)
                fo = None
            raise
        finally:
            if fo:
                fo.close()
        return sha.hexdigest()


def open_uw(path):
    return UwFile(path)


def main(argv):
    args = list(argv)
    out = None
    listing = quiet = False
    path = None
    while args:
        a = args.pop(0)
        if a == "--out" and args:
            out = args.pop(0)
        elif a == "--list":
            listing = True
        elif a == "--quiet":
            quiet = True
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        elif path is None and not a.startswith("--"):
            path = a
        else:
            print(f"uw_read: bad argument {a!r}", file=sys.stderr)
            return 2
    if path is None:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        f = open_uw(path)
        if listing:
            print(f"{path}: .uw {f.version[0]}.{f.version[1]}, alignment {f.alignment}, "
                  f"{len(f.tensors)} tensors, {len(f.metadata)} metadata entries, "
                  f"source header {'%d bytes' % len(f.source_header) if f.source_header is not None else 'none'}")
            for t in f.tensors:
                print(f"  {t.index:4d} {t.name:40s} {DTYPES[t.dtype][0]:8s} {str(t.shape):18s} "
                      f"{ENCODING_NAMES[t.encoding]:14s} {t.data_len:>10d} / {t.decoded_len:>10d} @ {t.data_offset}")
            for k, v in f.metadata:
                print(f"  meta {k!r} = {v!r}")
        digest = f.verify(out)
        if not quiet:
            total = sum(t.decoded_len for t in f.tensors)
            stored = sum(t.data_len for t in f.tensors)
            print(f"OK {path}: {len(f.tensors)} tensors, {stored} section bytes for {total} tensor bytes"
                  + (f"; wrote {out}" if out else "") + f"; safetensors sha256 {digest}")
        f.close()
        return 0
    except UwError as e:
        print(f"uw_read: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
    except OSError as e:
        print(f"uw_read: error: I/O: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
