//! Device buffers of f32, u32 or i32 elements, views into them, upload and (asynchronous) readback, and the pool
//! that lets a training step allocate its activations and scratch buffers once per shape.
//!
//! Readback copies into a MAP_READ staging buffer and awaits `map_async`: natively the device is polled until the
//! copy is done (so awaiting it never stalls), in the browser the callback arrives from the event loop.
//!
//! The pool: `Gpu::pooled` hands out a buffer of the exact size asked for, reusing one that is free, so the next
//! step with the same shapes reuses exactly the same buffers (and its recorded bind groups). A buffer is free when
//! its `Pooled` handle has been dropped, and then:
//! - for a buffer the encoder's commands fill (`pooled`, `pooled_zeros`: a kernel's output, a clear, a copy), at
//!   once — even within the encoder being recorded. The commands run in the order they are recorded and WebGPU
//!   orders each dispatch's reads and writes after the ones before it, so a later command overwriting a buffer
//!   whose handle is gone cannot disturb an earlier one that used it. This is what keeps a step's memory near
//!   what it needs at its peak (the forward's saved activations plus one layer's temporaries), not the sum of
//!   every temporary it makes: a backward layer's buffers are reused by the next layer's;
//! - for a buffer filled from the host (`pooled_upload`), only if a submission has happened since it was last
//!   handed out (the epoch counts submissions): `queue.write_buffer` lands before the whole submission runs, so
//!   it must never write a buffer that a command of the same submission still reads.
//!
//! Rule for callers: do not submit another encoder (a readback, say) while one is being recorded; and never keep a
//! buffer's contents past dropping its handle (views borrow the handle, so the compiler holds you to it).

use super::{gpu_error, Binding, Encoder, Gpu};
use crate::error::Result;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// An element type the kernels read: 4 bytes, plain data.
pub trait Element: bytemuck::Pod + Send + Sync + 'static {}
impl Element for f32 {}
impl Element for u32 {}
impl Element for i32 {}

/// A buffer of `len` elements of T on the device (STORAGE, COPY_SRC, COPY_DST).
pub struct GpuBuffer<T: Element> {
    pub(crate) buf: wgpu::Buffer,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Element> Clone for GpuBuffer<T> {
    /// Another handle to the same device memory.
    fn clone(&self) -> Self {
        GpuBuffer { buf: self.buf.clone(), len: self.len, _t: PhantomData }
    }
}

/// A buffer lent by the pool (`Gpu::pooled`); dropping it gives it back (usable after the next submission).
pub struct Pooled<T: Element> {
    buf: GpuBuffer<T>,
    _lease: Arc<()>,
}

impl<T: Element> std::ops::Deref for Pooled<T> {
    type Target = GpuBuffer<T>;
    fn deref(&self) -> &GpuBuffer<T> {
        &self.buf
    }
}

struct PoolEntry {
    buf: wgpu::Buffer,
    /// Held by the `Pooled` handle while lent.
    lease: Arc<()>,
    /// The epoch it was last handed out in.
    epoch: u64,
}

/// How a pooled buffer's contents will be written, which decides when a given-back buffer may be lent again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Filled {
    /// By commands recorded into the encoder (kernels, clears, copies): ordered after every earlier command.
    ByCommands,
    /// By `queue.write_buffer`: lands before the submission's first command.
    FromHost,
}

/// Buffers by byte size, and the epoch (submissions so far).
#[derive(Default)]
pub(crate) struct Pool {
    by_size: HashMap<u64, Vec<PoolEntry>>,
    epoch: u64,
    /// Bytes held.
    bytes: u64,
}

impl Pool {
    /// A submission happened: buffers lent before it are free once their handles are dropped.
    pub(crate) fn next_epoch(&mut self) {
        self.epoch += 1;
    }
}

/// Elements `offset .. offset + len` of a buffer. Bound with a byte offset, so `offset` must be a multiple of
/// minStorageBufferOffsetAlignment / 4 elements (64 f32 on most adapters; the parameter layout aligns every
/// tensor to that) — the ops check it.
pub struct GpuSlice<'a, T: Element> {
    buf: &'a GpuBuffer<T>,
    offset: usize,
    len: usize,
}

impl<T: Element> Clone for GpuSlice<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Element> Copy for GpuSlice<'_, T> {}

impl<T: Element> GpuBuffer<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole buffer.
    pub fn all(&self) -> GpuSlice<'_, T> {
        GpuSlice { buf: self, offset: 0, len: self.len }
    }

    /// Elements offset .. offset + len; out of range is an error.
    pub fn slice(&self, offset: usize, len: usize) -> Result<GpuSlice<'_, T>> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(gpu_error(format!(
                "slice {offset}..{} of a buffer of {} elements",
                offset.saturating_add(len),
                self.len
            )));
        }
        Ok(GpuSlice { buf: self, offset, len })
    }
}

impl<'a, T: Element> From<&'a GpuBuffer<T>> for GpuSlice<'a, T> {
    fn from(b: &'a GpuBuffer<T>) -> Self {
        b.all()
    }
}

impl<'a, T: Element> GpuSlice<'a, T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Elements offset .. offset + len of this slice; out of range is an error.
    pub fn sub(&self, offset: usize, len: usize) -> Result<GpuSlice<'a, T>> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(gpu_error(format!(
                "slice {offset}..{} of a slice of {} elements",
                offset.saturating_add(len),
                self.len
            )));
        }
        Ok(GpuSlice { buf: self.buf, offset: self.offset + offset, len })
    }

    /// The binding of its first n elements.
    pub(crate) fn bind(&self, n: usize) -> Binding<'a> {
        let n = n.min(self.len).max(1);
        Binding { buf: &self.buf.buf, offset: (self.offset * 4) as u64, size: (n * 4) as u64 }
    }

    fn bytes(&self) -> (u64, u64) {
        ((self.offset * 4) as u64, (self.len * 4) as u64)
    }
}

impl Gpu {
    /// A buffer holding `data`.
    pub fn upload<T: Element>(&self, data: &[T]) -> Result<GpuBuffer<T>> {
        let b = self.zeros::<T>(data.len())?;
        if !data.is_empty() {
            self.ctx.queue.write_buffer(&b.buf, 0, bytemuck::cast_slice(data));
        }
        Ok(b)
    }

    /// A buffer of `len` zeros (wgpu zero-initialises new buffers).
    pub fn zeros<T: Element>(&self, len: usize) -> Result<GpuBuffer<T>> {
        // Never size 0: a binding must have a nonzero size, and an empty op binds one element it does not touch.
        let bytes = (len.max(1) * 4) as u64;
        self.ctx.check_buffer_size(bytes)?;
        let buf = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(GpuBuffer { buf, len, _t: PhantomData })
    }

    /// A buffer of `len` elements from the pool, contents unspecified: the caller's recorded commands write every
    /// element they read (it may be one given back earlier in this same encoder).
    pub fn pooled<T: Element>(&self, len: usize) -> Result<Pooled<T>> {
        self.lend(len, Filled::ByCommands)
    }

    /// A pooled buffer of `len` elements, free by the rule for how it will be `filled` (the module's comment).
    fn lend<T: Element>(&self, len: usize, filled: Filled) -> Result<Pooled<T>> {
        let bytes = (len.max(1) * 4) as u64;
        let mut pool = self.lock_pool();
        let epoch = pool.epoch;
        let free_now = |e: &PoolEntry| {
            Arc::strong_count(&e.lease) == 1 && (filled == Filled::ByCommands || e.epoch < epoch)
        };
        let free = pool.by_size.get_mut(&bytes).and_then(|v| v.iter_mut().find(|e| free_now(e)));
        if let Some(e) = free {
            e.epoch = epoch;
            return Ok(Pooled { buf: GpuBuffer { buf: e.buf.clone(), len, _t: PhantomData }, _lease: e.lease.clone() });
        }
        drop(pool);
        let fresh = self.zeros::<T>(len)?;
        let lease = Arc::new(());
        let mut pool = self.lock_pool();
        pool.bytes += bytes;
        pool.by_size.entry(bytes).or_default().push(PoolEntry { buf: fresh.buf.clone(), lease: lease.clone(), epoch });
        Ok(Pooled { buf: fresh, _lease: lease })
    }

    /// A pooled buffer of zeros: the clear is recorded into `enc`.
    pub fn pooled_zeros<T: Element>(&self, enc: &mut Encoder, len: usize) -> Result<Pooled<T>> {
        let b = self.pooled::<T>(len)?;
        self.clear(enc, b.all());
        Ok(b)
    }

    /// A pooled buffer holding `data` (written with the queue, before the next submission runs).
    pub fn pooled_upload<T: Element>(&self, data: &[T]) -> Result<Pooled<T>> {
        let b = self.lend::<T>(data.len(), Filled::FromHost)?;
        self.write(b.all(), data)?;
        Ok(b)
    }

    /// Bytes the pool holds (lent or free).
    pub fn pool_bytes(&self) -> u64 {
        self.lock_pool().bytes
    }

    /// Frees every pooled buffer not lent out (after a change of shapes, say).
    pub fn trim_pool(&self) {
        let mut pool = self.lock_pool();
        let mut freed = 0;
        for v in pool.by_size.values_mut() {
            v.retain(|e| {
                let keep = Arc::strong_count(&e.lease) > 1;
                if !keep {
                    freed += e.buf.size();
                }
                keep
            });
        }
        pool.bytes -= freed;
    }

    pub(crate) fn lock_pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        // Entries are pushed whole, so a panic while holding the lock leaves the pool consistent.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Overwrites `dst` with `data` (same length), ordered before the next submission.
    pub fn write<T: Element>(&self, dst: GpuSlice<T>, data: &[T]) -> Result<()> {
        if data.len() != dst.len {
            return Err(gpu_error(format!("writing {} elements into a slice of {}", data.len(), dst.len)));
        }
        if !data.is_empty() {
            self.ctx.queue.write_buffer(&dst.buf.buf, dst.bytes().0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Records dst ← 0.
    pub fn clear<T: Element>(&self, enc: &mut Encoder, dst: GpuSlice<T>) {
        let (off, size) = dst.bytes();
        if size > 0 {
            enc.commands().clear_buffer(&dst.buf.buf, off, Some(size));
        }
    }

    /// Records dst ← src (same length).
    pub fn copy<T: Element>(&self, enc: &mut Encoder, dst: GpuSlice<T>, src: GpuSlice<T>) -> Result<()> {
        if src.len != dst.len {
            return Err(gpu_error(format!("copying {} elements into a slice of {}", src.len, dst.len)));
        }
        let ((so, size), (doff, _)) = (src.bytes(), dst.bytes());
        if size > 0 {
            enc.commands().copy_buffer_to_buffer(&src.buf.buf, so, &dst.buf.buf, doff, size);
        }
        Ok(())
    }

    /// Reads a slice back, after everything submitted so far. Submits a copy of its own.
    pub async fn read<T: Element>(&self, src: GpuSlice<'_, T>) -> Result<Vec<T>> {
        let mut enc = self.encoder();
        let rb = self.read_after(&mut enc, src);
        self.submit(enc)?;
        rb.wait(self).await
    }

    /// Records a copy of `src` into a staging buffer at this point of `enc`; once `enc` is submitted, `wait` on
    /// the result gives the data (so a step and the readback of its scalars are one submission).
    pub fn read_after<T: Element>(&self, enc: &mut Encoder, src: GpuSlice<'_, T>) -> Readback<T> {
        let (off, size) = src.bytes();
        if size == 0 {
            return Readback { staging: None, _t: PhantomData };
        }
        let staging = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        enc.commands().copy_buffer_to_buffer(&src.buf.buf, off, &staging, 0, size);
        Readback { staging: Some(staging), _t: PhantomData }
    }

    /// `read`, blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_blocking<T: Element>(&self, src: GpuSlice<'_, T>) -> Result<Vec<T>> {
        pollster::block_on(self.read(src))
    }
}

/// A copy recorded by `Gpu::read_after`, to be waited for after its encoder is submitted.
pub struct Readback<T: Element> {
    staging: Option<wgpu::Buffer>,
    _t: PhantomData<T>,
}

impl<T: Element> Readback<T> {
    /// The data, once the submission holding the copy has run: natively the device is polled until then; in the
    /// browser the map callback arrives from the event loop.
    pub async fn wait(self, gpu: &Gpu) -> Result<Vec<T>> {
        self.wait_until(gpu, None).await
    }

    /// `wait`, where `submission` is the one holding the copy: natively only it (and those before it) are waited
    /// for, not submissions made after it (a training step submitted ahead, `train::gpu`).
    pub async fn wait_until(self, gpu: &Gpu, submission: Option<wgpu::SubmissionIndex>) -> Result<Vec<T>> {
        let Some(staging) = self.staging else {
            return Ok(vec![]);
        };
        let (tx, rx) = oneshot();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| tx.send(r));
        #[cfg(not(target_arch = "wasm32"))]
        gpu.ctx
            .device
            .poll(wgpu::PollType::Wait { submission_index: submission, timeout: None })
            .map_err(|e| gpu_error(format!("waiting for the device: {e}")))?;
        #[cfg(target_arch = "wasm32")]
        let _ = submission;
        rx.await.map_err(|e| gpu_error(format!("reading a buffer back: {e}")))?;
        let out = {
            let view = staging.slice(..).get_mapped_range().map_err(|e| gpu_error(format!("mapping a buffer: {e}")))?;
            bytemuck::pod_collect_to_vec(&view)
        };
        staging.unmap();
        gpu.ctx.take_error()?;
        Ok(out)
    }

    /// `wait`, blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait_blocking(self, gpu: &Gpu) -> Result<Vec<T>> {
        pollster::block_on(self.wait(gpu))
    }
}

/// A one-shot channel for the `map_async` callback: the sender stores the value and wakes the receiver.
struct Shared<V> {
    value: Option<V>,
    waker: Option<Waker>,
}

struct Sender<V>(Arc<Mutex<Shared<V>>>);
struct Receiver<V>(Arc<Mutex<Shared<V>>>);

fn oneshot<V>() -> (Sender<V>, Receiver<V>) {
    let s = Arc::new(Mutex::new(Shared { value: None, waker: None }));
    (Sender(s.clone()), Receiver(s))
}

impl<V> Sender<V> {
    fn send(self, v: V) {
        let waker = {
            let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
            s.value = Some(v);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<V> Future for Receiver<V> {
    type Output = V;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<V> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
