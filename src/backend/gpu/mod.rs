//! The WebGPU backend: every op of the `Backend` trait as a WGSL compute kernel, run through wgpu (Vulkan natively,
//! Mesa's lavapipe where there is no GPU; the browser's WebGPU on wasm32). Same op names and argument order as the
//! trait (llm.c order: outputs, saved caches, inputs, parameters, sizes); backward ops ACCUMULATE like the trait's.
//!
//! The kernels work on device buffers (`GpuBuffer`, viewed through `GpuSlice`) and are recorded into an `Encoder`;
//! nothing is read back unless asked (`Gpu::read_after`). `GpuStep` is the op trait on the GPU: it records every op
//! the model's code calls into one encoder, so a whole training step (`train::step`, driven by
//! `train::gpu::GpuTrainer`) is one submission and one readback of its scalars. Activations and scratch buffers
//! come from a pool (`Gpu::pooled`): allocated at the first step of a shape, reused after; the step's bind groups
//! and uniform parameters are recorded on a `Tape` at its first step and replayed after (no bind group is created
//! per step, only the parameters that changed are written), and consecutive dispatches share one compute pass.
//! `tests/gpu_kernels.rs` holds every kernel to the scalar reference.
//!
//! Kernels (`wgsl/`, one file per op family, each opening with its bindings, shapes and invocation→element map):
//! - `matmul`: C (+)= A·B over strided A and B, 64×64 tiles in workgroup memory, 4×4 outputs per thread;
//!   forward, dinp and dw are three stridings of it, db a column sum (`reduce`).
//! - `norm`: LayerNorm / RMSNorm, one workgroup per row; backward as a row kernel (dinp) and a column kernel (dw, db).
//! - `attention_forward`, `attention_backward`, `attention_delta`: FlashAttention-2 (Dao 2023): online softmax over
//!   K/V tiles in workgroup memory, lse saved; the backward recomputes p = exp(s − lse) in a query-parallel dq kernel
//!   and a key-parallel dk/dv kernel, so nothing (T,S)-sized is stored and nothing is written by two invocations.
//!   q, k, v are read, and dq, dk, dv added, at strided layouts carried in the uniforms (`HeadLayout`): straight
//!   from the qkv projection's rows and into its gradient's, with no head split or merge.
//! - `attention_naive_forward`, `attention_naive_backward` (`attention_naive.rs`): the textbook, materialising
//!   version — scores and probabilities in a (B,NH,T,S) matrix, one invocation per element — for teaching and the
//!   fused-vs-naive benchmark only; training does not use it.
//! - `gru` (`gru.rs`): the recurrent position encoding's GRU, a sequential kernel (one workgroup per batch row
//!   looping over T), its backward through time, and the dW_hh / db_hh sums.
//! - `activation`, `cross_entropy`, `rope`, `reduce` (Σx², Σx, column sums, gradient scaling).
//! - `workgroup_reduce`, `workgroup_reduce_subgroups`: a workgroup's sum or max, as a tree in workgroup memory or
//!   over subgroup operations, put before the kernels whose workgroups reduce a row or a chunk (norm's rows,
//!   cross_entropy's softmax, reduce's `sum` and `segment_sum`: `tree_and_subgroups!`).
//! - The model's glue (`glue.rs`): `embedding` and `embedding_backward` (row lists made on the host, so no
//!   atomics), `elementwise` (residual adds, DeepNorm's α, dropout masks), `heads` (a copy between two head
//!   layouts: the KV cache's append from the qkv rows), `reduce`'s `segment_sum` (per-tensor Σg²) and `adamw`'s `flat` (the whole buffer, skipping the update
//!   when the loss or Σg² is not finite).
//!
//! Determinism: every output element is written by exactly one invocation and every sum is formed in an order fixed
//! by the shapes (and, for the reductions on subgroups, the device's subgroup size); no atomics. Errors: shapes that
//! do not fit the buffers, requests beyond the adapter's limits and shader compile errors are `crate::Error`s,
//! never panics.

mod attention;
mod attention_naive;
mod bound;
mod buffer;
mod context;
mod glue;
mod gru;
mod matmul;
mod moe;
mod norm;
mod pointwise;
mod reduce;
mod step;

pub use bound::{lock, ThreadBound};
pub use buffer::{Element, GpuBuffer, GpuSlice, Pooled, Readback};
pub use context::GpuContext;
pub use step::{GpuStep, PendingLoss};
pub use matmul::{k_splits, MatmulTile};

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The error for anything the GPU path refuses or fails at.
pub(crate) fn gpu_error(msg: impl std::fmt::Display) -> Error {
    Error::Gpu(msg.to_string())
}

/// Shared by every WGSL file: helpers prepended to each source.
const COMMON_WGSL: &str = include_str!("wgsl/common.wgsl");

/// One compute kernel: a WGSL source, its entry point, and its bindings after the uniform parameters (binding 0).
pub(crate) struct Kernel {
    /// The file name, for labels and messages.
    pub name: &'static str,
    pub src: &'static str,
    pub entry: &'static str,
    /// Bindings 1.. in order: storage buffers, read-only or read-write.
    pub binds: &'static [Access],
}

/// The element type a memory-bound kernel (`elementwise.wgsl`, `adamw.wgsl`) is compiled for, by `alias V` and
/// `const LANES` before its source: `[f32, vec4<f32>]`, as the two kernels of a `[Kernel; 2]`. The vec4 one runs
/// where the length is a multiple of 4 (16-byte loads and stores, a quarter of the invocations; a binding's offset
/// is already a multiple of 256 bytes), the scalar one elsewhere.
macro_rules! scalar_and_vec4 {
    ($name:literal, $file:literal, $entry:literal, $binds:expr) => {
        [
            Kernel {
                name: $name,
                src: concat!("alias V = f32;\nconst LANES: u32 = 1u;\n", include_str!($file)),
                entry: $entry,
                binds: $binds,
            },
            Kernel {
                name: concat!($name, " (vec4)"),
                src: concat!("alias V = vec4<f32>;\nconst LANES: u32 = 4u;\n", include_str!($file)),
                entry: $entry,
                binds: $binds,
            },
        ]
    };
}
pub(crate) use scalar_and_vec4;

/// A kernel whose workgroups reduce (`workgroup_sum`, `workgroup_max`) compiled after each implementation of
/// them, as the two kernels of a `[Kernel; 2]`: `[tree, subgroups]` — a tree in workgroup memory
/// (`wgsl/workgroup_reduce.wgsl`, any device) or subgroup operations (`wgsl/workgroup_reduce_subgroups.wgsl`,
/// only where the device has them). `Gpu::reducing` picks the one the device runs. The file's entry points that
/// do not reduce are compiled after the tree file alone (the file calls `workgroup_sum`, so it needs one of them).
macro_rules! tree_and_subgroups {
    ($name:literal, $file:literal, $entry:literal, $binds:expr) => {
        [
            Kernel {
                name: $name,
                src: concat!(include_str!("wgsl/workgroup_reduce.wgsl"), include_str!($file)),
                entry: $entry,
                binds: $binds,
            },
            Kernel {
                name: concat!($name, " (subgroups)"),
                src: concat!(include_str!("wgsl/workgroup_reduce_subgroups.wgsl"), include_str!($file)),
                entry: $entry,
                binds: $binds,
            },
        ]
    };
}
pub(crate) use tree_and_subgroups;

/// Which of a `scalar_and_vec4` pair runs over `n` floats, and the elements of its V: (index, floats per element).
pub(crate) fn lanes(n: usize) -> (usize, usize) {
    if n.is_multiple_of(4) { (1, 4) } else { (0, 1) }
}

/// A kernel with its compile-time constants (`const NAME: u32 = value;` before the source).
pub(crate) type KernelWith = (&'static Kernel, Vec<(&'static str, u32)>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// A compiled kernel: its pipeline and the layout its bind groups are made for.
pub(crate) struct Compiled {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// Commands being recorded: dispatches and copies, plus the small buffers they use (uniform parameters, scratch)
/// kept alive until the encoder is submitted. Consecutive dispatches share one compute pass (WebGPU orders the
/// dispatches of a pass: each sees what the previous one wrote); a copy or clear ends it. With a `Tape`, the
/// dispatches reuse the bind groups and uniform slots of the step recorded on it.
pub struct Encoder {
    enc: wgpu::CommandEncoder,
    pass: Option<wgpu::ComputePass<'static>>,
    keep: Vec<wgpu::Buffer>,
    /// The tape being replayed, and the index of the next dispatch on it.
    tape: Option<(Tape, usize)>,
}

impl Encoder {
    /// The open compute pass, begun when there is none.
    fn pass(&mut self) -> &mut wgpu::ComputePass<'static> {
        let enc = &mut self.enc;
        self.pass.get_or_insert_with(|| {
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("tp"), timestamp_writes: None }).forget_lifetime()
        })
    }

    /// The command encoder, for copies and clears: ends the open compute pass first.
    pub(crate) fn commands(&mut self) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        &mut self.enc
    }
}

/// A training step recorded once and replayed (`GpuStep::replaying`, driven by `train::gpu::GpuTrainer`).
///
/// Created once, at the first step of a (config, batch shape): each dispatch's bind group, and its slot in a
/// uniform buffer shared by the whole step (one 64 KiB buffer holds 256 dispatches' parameters). The pipelines are
/// compiled once anyway (`Gpu::kernel`), and the activations come from the pool, which hands the same buffers to
/// the same ops step after step. Per step the model's ops are recorded as always, and each dispatch is compared
/// with the one at its place on the tape: same kernel, same buffer ranges → its bind group is reused, and its
/// parameters are written to its slot only when they changed (AdamW's learning rate and bias corrections, each
/// step; a cross-entropy's 1/count when the count of targets changes). A dispatch that differs (a new shape)
/// re-records the tape from there on. So after the first step nothing is created but the readback's staging
/// buffer, and what is written is the host data (token ids, targets, masks) and those few parameters.
#[derive(Clone, Default)]
pub struct Tape(Arc<Mutex<TapeState>>);

#[derive(Default)]
struct TapeState {
    entries: Vec<TapeEntry>,
    /// The uniform buffers, `UNIFORM_CHUNK` bytes each, entries' slots in order.
    chunks: Vec<wgpu::Buffer>,
    /// Parameter writes made by replays (not counting the first recording).
    writes: u64,
}

/// One dispatch on a tape.
struct TapeEntry {
    kernel: Arc<Compiled>,
    binds: Vec<(wgpu::Buffer, u64, u64)>,
    /// Its uniform slot: chunk, byte offset, and the parameters last written there.
    chunk: usize,
    offset: u64,
    params: Vec<u8>,
    bind_group: wgpu::BindGroup,
}

/// Bytes of one uniform buffer of a tape.
const UNIFORM_CHUNK: u64 = 1 << 16;

impl Tape {
    /// Dispatches on the tape.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parameter slots rewritten by replays so far (their values changed since the step before).
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TapeState> {
        // Entries are pushed whole and truncation cannot fail, so a poisoned lock is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The GPU backend: a device context and its compiled kernels.
pub struct Gpu {
    pub ctx: GpuContext,
    kernels: Mutex<HashMap<String, Arc<Compiled>>>,
    /// Bound where a kernel's optional input (a bias, say) is absent, and where an output is unused: two buffers,
    /// since one buffer may not be bound both read-only and read-write in one dispatch.
    dummy_read: wgpu::Buffer,
    dummy_write: wgpu::Buffer,
    /// Activations and scratch buffers, reused step after step (`Gpu::pooled`).
    pool: Mutex<buffer::Pool>,
    /// Submissions so far (tests assert that the GPU really ran).
    submissions: AtomicU64,
    /// Dispatches recorded so far.
    dispatches: AtomicU64,
    /// Bind groups created so far.
    bind_groups: AtomicU64,
    /// The last submission, for waiting on it and not on later ones (`Readback::wait_until`).
    last_submission: Mutex<Option<wgpu::SubmissionIndex>>,
    /// Fill every `Backend::output` buffer with NaN before its op writes it (`set_poison_outputs`).
    poison_outputs: std::sync::atomic::AtomicBool,
    /// The matmul register tile forced for every product (`set_matmul_tile`): 0 none, 4 or 8.
    matmul_tile: std::sync::atomic::AtomicU32,
    /// Whether matmuls stage their operands with vec4 loads where they allow it (`set_matmul_vec4_loads`).
    matmul_vec4: std::sync::atomic::AtomicBool,
    /// Whether the reductions run on subgroup operations (`reducing`): where the device has them, unless a test
    /// turned them off (`set_subgroups`).
    subgroups: std::sync::atomic::AtomicBool,
}

/// A buffer range to bind: (buffer, byte offset, byte size).
#[derive(Clone, Copy)]
pub(crate) struct Binding<'a> {
    buf: &'a wgpu::Buffer,
    offset: u64,
    size: u64,
}

impl Gpu {
    /// Opens the default adapter (high performance) and its device. Fails with a clear error when there is none.
    pub async fn new() -> Result<Gpu> {
        Ok(Gpu::with_context(GpuContext::new().await?))
    }

    /// `new` with `limits` requested for the device instead of the adapter's (`GpuContext::with_limits`).
    pub async fn with_limits(limits: wgpu::Limits) -> Result<Gpu> {
        Ok(Gpu::with_context(GpuContext::with_limits(Some(limits)).await?))
    }

    /// `new`, blocking (native only; in the browser, await `new`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking() -> Result<Gpu> {
        pollster::block_on(Gpu::new())
    }

    pub fn with_context(ctx: GpuContext) -> Gpu {
        let dummy = |label| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let (dummy_read, dummy_write) = (dummy("unused input"), dummy("unused output"));
        let subgroups = ctx.subgroups;
        Gpu {
            ctx,
            kernels: Mutex::new(HashMap::new()),
            dummy_read,
            dummy_write,
            pool: Mutex::new(buffer::Pool::default()),
            submissions: AtomicU64::new(0),
            dispatches: AtomicU64::new(0),
            bind_groups: AtomicU64::new(0),
            last_submission: Mutex::new(None),
            poison_outputs: std::sync::atomic::AtomicBool::new(false),
            matmul_tile: std::sync::atomic::AtomicU32::new(0),
            matmul_vec4: std::sync::atomic::AtomicBool::new(true),
            subgroups: std::sync::atomic::AtomicBool::new(subgroups),
        }
    }

    /// A check for tests: fill each buffer a training step hands out with `Backend::output` (not zeroed: its op
    /// is to write every element) with NaN first, so an op that leaves an element unwritten turns the loss NaN.
    pub fn set_poison_outputs(&self, on: bool) {
        self.poison_outputs.store(on, Ordering::Relaxed);
    }

    pub(crate) fn poisons_outputs(&self) -> bool {
        self.poison_outputs.load(Ordering::Relaxed)
    }

    /// A check for tests: run every matmul with this register tile (None: each product's own choice,
    /// `MatmulTile::for_product`), so both kernels meet awkward sizes.
    pub fn set_matmul_tile(&self, tile: Option<matmul::MatmulTile>) {
        let v = match tile {
            None => 0,
            Some(matmul::MatmulTile::Rt4) => 4,
            Some(matmul::MatmulTile::Rt8) => 8,
        };
        self.matmul_tile.store(v, Ordering::Relaxed);
    }

    /// A check for tests: with `false`, every matmul stages its operands one element at a time (matmul_load.wgsl),
    /// as products whose strides or sizes are not multiples of 4 always do.
    pub fn set_matmul_vec4_loads(&self, on: bool) {
        self.matmul_vec4.store(on, Ordering::Relaxed);
    }

    pub(crate) fn matmul_vec4_loads(&self) -> bool {
        self.matmul_vec4.load(Ordering::Relaxed)
    }

    /// A check for tests: with `false`, every reduction runs the tree in workgroup memory, as on a device without
    /// subgroup operations; with `true`, on subgroups again — an error where the device has none
    /// (`GpuContext::subgroups`).
    pub fn set_subgroups(&self, on: bool) -> Result<()> {
        if on && !self.ctx.subgroups {
            return Err(gpu_error(format!("{} has no subgroup operations", self.adapter_name())));
        }
        self.subgroups.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the reductions run on subgroup operations now.
    pub fn uses_subgroups(&self) -> bool {
        self.subgroups.load(Ordering::Relaxed)
    }

    /// The kernel of a `tree_and_subgroups!` pair that this device runs.
    pub(crate) fn reducing<'k>(&self, pair: &'k [Kernel; 2]) -> &'k Kernel {
        &pair[self.uses_subgroups() as usize]
    }

    pub(crate) fn matmul_tile(&self) -> Option<matmul::MatmulTile> {
        match self.matmul_tile.load(Ordering::Relaxed) {
            4 => Some(matmul::MatmulTile::Rt4),
            8 => Some(matmul::MatmulTile::Rt8),
            _ => None,
        }
    }

    /// The binding of an absent input.
    pub(crate) fn no_input(&self) -> Binding<'_> {
        Binding { buf: &self.dummy_read, offset: 0, size: 16 }
    }

    /// The binding of an unused output.
    pub(crate) fn no_output(&self) -> Binding<'_> {
        Binding { buf: &self.dummy_write, offset: 0, size: 16 }
    }

    /// "llvmpipe (LLVM 15.0.6, 256 bits) on Vulkan", "swiftshader on BrowserWebGpu", …
    pub fn adapter_name(&self) -> String {
        format!("{} on {:?}", self.ctx.info.name, self.ctx.info.backend)
    }

    pub fn encoder(&self) -> Encoder {
        let enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("tp") });
        Encoder { enc, pass: None, keep: vec![], tape: None }
    }

    /// An encoder whose dispatches replay `tape` (and record it, the first time).
    pub fn encoder_on(&self, tape: &Tape) -> Encoder {
        Encoder { tape: Some((tape.clone(), 0)), ..self.encoder() }
    }

    /// Submits the recorded commands. Returns the first device error seen since the last check (validation errors
    /// outside a scope, a lost device) so a failed step is not mistaken for a good one.
    pub fn submit(&self, enc: Encoder) -> Result<()> {
        let Encoder { enc, pass, keep, tape } = enc;
        drop(pass);
        if let Some((tape, used)) = tape {
            // A step shorter than the one recorded: the rest of the tape is not this step's.
            tape.lock().entries.truncate(used);
        }
        let index = self.ctx.queue.submit([enc.finish()]);
        *self.last_submission.lock().unwrap_or_else(|e| e.into_inner()) = Some(index);
        drop(keep);
        self.submissions.fetch_add(1, Ordering::Relaxed);
        self.lock_pool().next_epoch();
        self.ctx.take_error()
    }

    /// The last submission (None before the first).
    pub fn last_submission(&self) -> Option<wgpu::SubmissionIndex> {
        self.last_submission.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Submissions so far.
    pub fn submissions(&self) -> u64 {
        self.submissions.load(Ordering::Relaxed)
    }

    /// Compute dispatches recorded so far.
    pub fn dispatches(&self) -> u64 {
        self.dispatches.load(Ordering::Relaxed)
    }

    /// Bind groups created so far (a recorded step creates none after its first: `tests/gpu_training.rs`).
    pub fn bind_groups(&self) -> u64 {
        self.bind_groups.load(Ordering::Relaxed)
    }

    /// Blocks until everything submitted so far has run (native only; benchmarks and tests).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self) -> Result<()> {
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| gpu_error(format!("waiting for the device: {e}")))?;
        self.ctx.take_error()
    }

    /// Compiles (and validates, inside error scopes) every kernel whose compile-time constants do not depend on
    /// the model, plus the attention kernels for each (head size, relative-bias buckets) pair given. In the
    /// browser this must be awaited before the first op (ops cannot block on validation there); natively, kernels
    /// not prepared are compiled on first use.
    pub async fn prepare(&self, attention: &[(usize, usize)]) -> Result<()> {
        for (k, consts) in self.fixed_kernels().into_iter().chain(attention::kernels_for(attention)?) {
            self.compile(k, &consts).await?;
        }
        Ok(())
    }

    /// Compiles the attention kernels alone — the fused ones for head size `hs` without a bias, and the naive ones —
    /// which is all the attention-cost sweep (`crate::attention_cost`) runs; awaited before its first row in the
    /// browser, as `prepare` before a training step.
    pub async fn prepare_attention(&self, hs: usize) -> Result<()> {
        let fused = attention::kernels_for(&[(hs, 0)])?.into_iter().chain([(&attention::DELTA, vec![])]);
        for (k, consts) in fused.chain(attention_naive::KERNELS.iter().map(|k| (*k, vec![]))) {
            self.compile(k, &consts).await?;
        }
        Ok(())
    }

    fn fixed_kernels(&self) -> Vec<KernelWith> {
        // Of each reducing kernel, the variant the device runs: the subgroup ones do not compile without them.
        let reducing = norm::REDUCING.iter().chain(pointwise::REDUCING).chain(reduce::REDUCING).chain(glue::REDUCING);
        let mut v: Vec<_> = matmul::KERNELS
            .iter()
            .chain(norm::KERNELS)
            .chain(pointwise::KERNELS)
            .chain(reduce::KERNELS)
            .chain(glue::KERNELS)
            .chain(moe::KERNELS)
            .chain(gru::KERNELS)
            .copied()
            .chain(reducing.map(|pair| self.reducing(pair)))
            .map(|k| (k, vec![]))
            .collect();
        v.push((&attention::DELTA, vec![]));
        v
    }

    fn key(k: &Kernel, consts: &[(&str, u32)]) -> String {
        let c: Vec<String> = consts.iter().map(|(n, v)| format!("{n}={v}")).collect();
        format!("{}:{}:{}", k.name, k.entry, c.join(","))
    }

    /// Compiles a kernel with its compile-time constants (`const NAME: u32 = v;` lines put before the source),
    /// reporting WGSL and pipeline errors as `Error`s.
    async fn compile(&self, k: &Kernel, consts: &[(&str, u32)]) -> Result<Arc<Compiled>> {
        let key = Gpu::key(k, consts);
        if let Some(c) = self.lock_kernels().get(&key) {
            return Ok(c.clone());
        }
        let header: String = consts.iter().map(|(n, v)| format!("const {n}: u32 = {v}u;\n")).collect();
        let src = format!("{header}{COMMON_WGSL}\n{}", k.src);
        let layout = self.bind_group_layout(k);
        let c = Arc::new(
            self.ctx.compile(&key, &src, k.entry, Some(&layout)).await.map(|pipeline| Compiled { pipeline, layout })?,
        );
        self.lock_kernels().insert(key, c.clone());
        Ok(c)
    }

    fn lock_kernels(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Compiled>>> {
        // A panic while holding the lock leaves the map intact (entries are inserted whole), so poisoning is ignored.
        self.kernels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The compiled kernel: from the cache, else compiled now (natively; in the browser `prepare` must have run).
    fn kernel(&self, k: &Kernel, consts: &[(&str, u32)]) -> Result<Arc<Compiled>> {
        if let Some(c) = self.lock_kernels().get(&Gpu::key(k, consts)) {
            return Ok(c.clone());
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            pollster::block_on(self.compile(k, consts))
        }
        #[cfg(target_arch = "wasm32")]
        {
            Err(gpu_error(format!(
                "kernel {} was not prepared: await Gpu::prepare before running ops",
                Gpu::key(k, consts)
            )))
        }
    }

    fn bind_group_layout(&self, k: &Kernel) -> wgpu::BindGroupLayout {
        let uniform = wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let entries: Vec<_> = std::iter::once(uniform)
            .chain(k.binds.iter().enumerate().map(|(i, a)| wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: *a == Access::Read },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }))
            .collect();
        self.ctx
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(k.name), entries: &entries })
    }

    /// Records one dispatch of kernel `k` over `groups` workgroups: `params` go to a fresh uniform buffer at
    /// binding 0, `bufs` to bindings 1.. in order. Binding offsets and sizes are checked against the limits first.
    pub(crate) fn dispatch<P: bytemuck::Pod>(
        &self,
        enc: &mut Encoder,
        k: &Kernel,
        consts: &[(&str, u32)],
        params: &P,
        bufs: &[Binding],
        groups: [u32; 3],
    ) -> Result<()> {
        if bufs.len() != k.binds.len() {
            return Err(gpu_error(format!(
                "{}: {} buffers bound, the kernel has {}",
                k.name,
                bufs.len(),
                k.binds.len()
            )));
        }
        for (i, b) in bufs.iter().enumerate() {
            self.ctx.check_binding(k.name, i + 1, b.offset, b.size)?;
        }
        self.ctx.check_grid(k.name, groups)?;
        let compiled = self.kernel(k, consts)?;
        let bytes = bytemuck::bytes_of(params);
        let bg = match enc.tape.as_mut() {
            Some((tape, next)) => {
                *next += 1;
                self.replay(tape, *next - 1, k, &compiled, bytes, bufs)?
            }
            None => {
                let uniform = self.uniform(bytes);
                let bg = self.bind_group(k, &compiled, (&uniform, 0, bytes.len() as u64), bufs);
                enc.keep.push(uniform);
                bg
            }
        };
        let pass = enc.pass();
        pass.set_pipeline(&compiled.pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        self.dispatches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The bind group of dispatch `i` of `tape`: the recorded one when the dispatch is the same (kernel and buffer
    /// ranges; its parameters written to its slot if they changed), else a new one recorded in its place, the
    /// tape's later entries dropped.
    fn replay(&self, tape: &Tape, i: usize, k: &Kernel, compiled: &Arc<Compiled>, bytes: &[u8], bufs: &[Binding]) -> Result<wgpu::BindGroup> {
        let mut t = tape.lock();
        if let Some(e) = t.entries.get(i) {
            let same = Arc::ptr_eq(&e.kernel, compiled)
                && e.params.len() == bytes.len()
                && e.binds.len() == bufs.len()
                && e.binds.iter().zip(bufs).all(|((buf, o, n), b)| buf == b.buf && *o == b.offset && *n == b.size);
            if same {
                let changed = e.params != bytes;
                if changed {
                    self.ctx.queue.write_buffer(&t.chunks[e.chunk], e.offset, bytes);
                    t.writes += 1;
                    t.entries[i].params = bytes.to_vec();
                }
                return Ok(t.entries[i].bind_group.clone());
            }
        }
        t.entries.truncate(i);
        // The next slot after the last entry's (slots are taken in order), in a new chunk when this one is full.
        let align = self.ctx.limits.min_uniform_buffer_offset_alignment as u64;
        let size = (bytes.len() as u64).next_multiple_of(align.max(16));
        let (mut chunk, mut offset) = t.entries.last().map_or((0, 0), |e| (e.chunk, e.offset + (e.params.len() as u64).next_multiple_of(align.max(16))));
        if offset + size > UNIFORM_CHUNK {
            (chunk, offset) = (chunk + 1, 0);
        }
        if chunk == t.chunks.len() {
            t.chunks.push(self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("step parameters"),
                size: UNIFORM_CHUNK,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        self.ctx.queue.write_buffer(&t.chunks[chunk], offset, bytes);
        let bind_group = self.bind_group(k, compiled, (&t.chunks[chunk], offset, size), bufs);
        let binds = bufs.iter().map(|b| (b.buf.clone(), b.offset, b.size)).collect();
        t.entries.push(TapeEntry { kernel: compiled.clone(), binds, chunk, offset, params: bytes.to_vec(), bind_group: bind_group.clone() });
        Ok(bind_group)
    }

    /// A bind group of kernel `k`: the parameters' range of a uniform buffer (buffer, offset, size) at binding 0,
    /// `bufs` at 1.. .
    fn bind_group(&self, k: &Kernel, compiled: &Compiled, uniform: (&wgpu::Buffer, u64, u64), bufs: &[Binding]) -> wgpu::BindGroup {
        let binding = |buf, offset, size| {
            wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: buf, offset, size: wgpu::BufferSize::new(size) })
        };
        let (ub, uo, us) = uniform;
        let entries: Vec<_> = std::iter::once(wgpu::BindGroupEntry { binding: 0, resource: binding(ub, uo, us.next_multiple_of(16)) })
            .chain(bufs.iter().enumerate().map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32 + 1, resource: binding(b.buf, b.offset, b.size) }))
            .collect();
        let bg = self.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(k.name),
            layout: &compiled.layout,
            entries: &entries,
        });
        self.bind_groups.fetch_add(1, Ordering::Relaxed);
        bg
    }

    fn uniform(&self, bytes: &[u8]) -> wgpu::Buffer {
        // Not `create_buffer_init`: wgpu's helper panics when the device is lost; this path reports it instead.
        let b = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: (bytes.len() as u64).next_multiple_of(16),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.ctx.queue.write_buffer(&b, 0, bytes);
        b
    }

    /// `n` workgroups as a grid within the per-dimension limit: (n, 1, 1), or (max, ⌈n/max⌉, 1); kernels rebuild
    /// the linear index with `group_index` (common.wgsl) and skip indices ≥ n.
    pub(crate) fn grid(&self, n: usize) -> Result<[u32; 3]> {
        let max = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        if n <= max {
            Ok([n as u32, 1, 1])
        } else if n.div_ceil(max) <= max {
            Ok([max as u32, n.div_ceil(max) as u32, 1])
        } else {
            Err(gpu_error(format!("{n} workgroups exceed the adapter's grid ({max}² per dispatch)")))
        }
    }
}

/// Milliseconds on a monotonic clock (natively since the first call; in the browser `performance.now()`), for
/// the time a step takes to issue.
pub fn now_ms() -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1e3
    }
    #[cfg(target_arch = "wasm32")]
    {
        performance_now()
    }
}

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// `performance.now()` of the calling thread (a Worker or the page).
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// u32 from a size, or an error naming it (WGSL indexes with u32).
pub(crate) fn u32_of(what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| gpu_error(format!("{what} = {n} does not fit the kernels' 32-bit indices")))
}

/// A `HeadLayout` as the kernels' uniforms carry it: offset, batch, head and row strides.
pub(crate) fn layout_u32(l: crate::backend::HeadLayout) -> Result<[u32; 4]> {
    Ok([u32_of("layout offset", l.offset)?, u32_of("batch stride", l.batch)?, u32_of("head stride", l.head)?, u32_of("row stride", l.row)?])
}

/// Checks that `s` holds at least `need` elements.
pub(crate) fn need<T: Element>(what: &str, s: &GpuSlice<T>, need: usize) -> Result<()> {
    if s.len() < need {
        return Err(gpu_error(format!("{what} has {} elements, the op needs {need}", s.len())));
    }
    Ok(())
}
