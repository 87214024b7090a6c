//! A CUDA device with the uw kernels loaded, and decoding on it.

use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use uw_format::{Encoded, Tensor, UwFile};

use crate::error::GpuError;
use crate::kernels;

/// True when the CUDA driver library can be loaded. cudarc panics on first
/// use when it cannot, so every entry point checks this first.
#[allow(unsafe_code)]
pub fn driver_available() -> bool {
    // SAFETY: only tries to dlopen the library; no symbol is called.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// An open device: context, stream and compiled kernels.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: &'static str,
    palette4: CudaFunction,
    exceptions: CudaFunction,
    huffman: CudaFunction,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("ordinal", &self.ctx.ordinal())
            .field("arch", &self.arch)
            .finish()
    }
}

/// A decoded tensor in device memory: its bytes exactly as in safetensors.
pub struct DeviceTensor {
    /// Tensor name.
    pub name: String,
    /// Decoded bytes (BF16 little-endian for BF16 tensors).
    pub bytes: CudaSlice<u8>,
}

impl Gpu {
    /// Opens device `ordinal` and compiles the kernels for it. A machine with
    /// no driver, no NVRTC or no device gets a typed error, never a panic.
    pub fn open(ordinal: usize) -> Result<Self, GpuError> {
        if !driver_available() {
            return Err(GpuError::NoDriver);
        }
        if !kernels::nvrtc_available() {
            return Err(GpuError::NoNvrtc);
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| GpuError::NoDevice(format!("{e:?}")))?;
        let (major, minor) = ctx.compute_capability()?;
        let arch = kernels::arch_for(major, minor);
        let module = ctx.load_module(kernels::compile(arch)?)?;
        let load = |name: &str| module.load_function(name).map_err(GpuError::from);
        Ok(Self {
            stream: ctx.default_stream(),
            palette4: load("uw_palette4_to_bf16")?,
            exceptions: load("uw_palette4_exceptions")?,
            huffman: load("uw_huffman_to_bf16")?,
            arch,
            ctx,
        })
    }

    /// The device name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn name(&self) -> Result<String, GpuError> {
        Ok(self.ctx.name()?)
    }

    /// The NVRTC architecture the kernels were compiled for.
    pub fn arch(&self) -> &'static str {
        self.arch
    }

    /// The stream all work is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Uploads a tensor's data section as stored (compressed).
    pub fn upload_section(&self, t: &Tensor<'_>) -> Result<CudaSlice<u8>, GpuError> {
        t.check_data_crc()?;
        Ok(self.stream.clone_htod(t.data())?)
    }

    /// Decodes tensor `t` on the device: uploads its section, runs the
    /// kernel for its encoding, and returns the decoded bytes in device
    /// memory. Raw tensors are copied as they are.
    pub fn decode_tensor(&self, t: &Tensor<'_>) -> Result<DeviceTensor, GpuError> {
        let section = self.upload_section(t)?;
        let n_bytes = t.decoded_len() as usize;
        let mut out = self.stream.alloc_zeros::<u8>(n_bytes.max(1))?;
        self.decode_section_into(t, &section, &mut out)?;
        Ok(DeviceTensor {
            name: t.name().to_owned(),
            bytes: out,
        })
    }

    /// Decodes an uploaded `section` of tensor `t` into `out` (at least
    /// `decoded_len` bytes), then checks the kernels' error word.
    pub fn decode_section_into(
        &self,
        t: &Tensor<'_>,
        section: &CudaSlice<u8>,
        out: &mut CudaSlice<u8>,
    ) -> Result<(), GpuError> {
        let mut error = self.stream.alloc_zeros::<i32>(1)?;
        match t.encoded()? {
            Encoded::Raw(_) => {
                if t.decoded_len() > 0 {
                    self.stream
                        .memcpy_dtod(section, &mut out.slice_mut(..section.len()))?;
                }
            }
            Encoded::Palette4(v) => {
                let h = v.header();
                let p = v.parts();
                let n = h.element_count.get();
                let mut pal = [0u8; 16];
                pal.copy_from_slice(&h.palette);
                let lo = u64::from_le_bytes(pal[..8].try_into().expect("8 bytes"));
                let hi = u64::from_le_bytes(pal[8..].try_into().expect("8 bytes"));
                let sm = section.slice(p.sign_mantissa as usize..);
                let nib = section.slice(p.nibbles as usize..);
                let plen = u32::from(h.palette_len);
                let threads = n.div_ceil(8);
                let cfg = LaunchConfig::for_num_elems(threads.min(1 << 30) as u32);
                let mut b = self.stream.launch_builder(&self.palette4);
                b.arg(&sm)
                    .arg(&nib)
                    .arg(&lo)
                    .arg(&hi)
                    .arg(&plen)
                    .arg(&n)
                    .arg(&mut *out)
                    .arg(&mut error);
                launch(b, cfg)?;
                let count = h.exception_count.get();
                if count > 0 {
                    let pos = section.slice(p.exception_positions as usize..);
                    let exps = section.slice(p.exception_exponents as usize..);
                    let cfg = LaunchConfig::for_num_elems(count.min(1 << 30) as u32);
                    let mut b = self.stream.launch_builder(&self.exceptions);
                    b.arg(&pos)
                        .arg(&exps)
                        .arg(&sm)
                        .arg(&count)
                        .arg(&n)
                        .arg(&mut *out)
                        .arg(&mut error);
                    launch(b, cfg)?;
                }
            }
            Encoded::Huffman(v) => {
                let h = *v.header();
                let p = *v.parts();
                let tables = self.stream.clone_htod(&host_tables(&v))?;
                let sm = section.slice(p.sign_mantissa as usize..);
                let idx = section.slice(p.chunk_index as usize..);
                let sel = section.slice(p.selectors as usize..);
                let exp = section.slice(p.exp_stream as usize..);
                let (exp_len, n) = (h.exp_stream_len.get(), h.element_count.get());
                let chunk_count = h.chunk_count.get();
                let (chunk_log2, block_log2) = (u32::from(h.chunk_log2), u32::from(h.block_log2));
                let (sel_bits, max_len, table_count) = (
                    u32::from(h.selector_bits),
                    u32::from(h.max_code_len),
                    u32::from(h.table_count),
                );
                let cfg = LaunchConfig::for_num_elems(chunk_count);
                let mut b = self.stream.launch_builder(&self.huffman);
                b.arg(&sm)
                    .arg(&idx)
                    .arg(&sel)
                    .arg(&exp)
                    .arg(&exp_len)
                    .arg(&n);
                b.arg(&chunk_count)
                    .arg(&chunk_log2)
                    .arg(&block_log2)
                    .arg(&sel_bits);
                b.arg(&max_len)
                    .arg(&table_count)
                    .arg(&tables)
                    .arg(&mut *out)
                    .arg(&mut error);
                launch(b, cfg)?;
            }
        }
        let code = self.stream.clone_dtoh(&error)?[0];
        if code != 0 {
            return Err(GpuError::Corrupt {
                tensor: t.index(),
                code,
            });
        }
        Ok(())
    }

    /// Decodes every tensor of `file` into device memory.
    pub fn decode_file(&self, file: &UwFile<'_>) -> Result<Vec<DeviceTensor>, GpuError> {
        file.tensors().map(|t| self.decode_tensor(&t)).collect()
    }

    /// Copies device bytes back to the host (for checks).
    pub fn to_host(&self, bytes: &CudaSlice<u8>, len: usize) -> Result<Vec<u8>, GpuError> {
        let mut v = self.stream.clone_dtoh(bytes)?;
        v.truncate(len);
        Ok(v)
    }
}

/// The decode tables of a Huffman tensor, laid out as the kernel expects:
/// `table_count` tables of `2^max_code_len` entries, as built for the CPU.
/// Built here with `uw_format::huffman::build_decode_table`, so the kernels
/// do not depend on the CPU decoder's own (possibly faster) table layout.
pub fn host_tables(v: &uw_format::HuffmanView<'_>) -> Vec<u32> {
    let h = v.header();
    let size = 1usize << h.max_code_len;
    let symbols = usize::from(h.palette_len) + usize::from(h.has_escape);
    let escape = (h.has_escape == 1).then_some(usize::from(h.palette_len));
    let mut tables = vec![0u32; size * usize::from(h.table_count)];
    for (t, table) in tables.chunks_exact_mut(size).enumerate() {
        uw_format::huffman::build_decode_table(
            &h.code_lengths[t][..symbols],
            v.palette(),
            escape,
            h.max_code_len,
            table,
        );
    }
    tables
}

#[allow(unsafe_code)]
fn launch(mut b: cudarc::driver::LaunchArgs<'_>, cfg: LaunchConfig) -> Result<(), GpuError> {
    // SAFETY: each kernel's arguments were pushed in the order and with the
    // types of its CUDA signature (kernels/*.cu); every pointer is a device
    // allocation covering the range the kernel reads or writes, which it
    // bounds by the element counts passed alongside.
    unsafe { b.launch(cfg) }?;
    Ok(())
}
