//! Device buffers of f32, u32 or i32 elements, views into them, upload and (asynchronous) readback.
//!
//! Readback copies into a MAP_READ staging buffer and awaits `map_async`: natively the device is polled until the
//! copy is done (so awaiting it never stalls), in the browser the callback arrives from the event loop.

use super::{gpu_error, Binding, Encoder, Gpu};
use crate::error::Result;
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
            enc.enc.clear_buffer(&dst.buf.buf, off, Some(size));
        }
    }

    /// Records dst ← src (same length).
    pub fn copy<T: Element>(&self, enc: &mut Encoder, dst: GpuSlice<T>, src: GpuSlice<T>) -> Result<()> {
        if src.len != dst.len {
            return Err(gpu_error(format!("copying {} elements into a slice of {}", src.len, dst.len)));
        }
        let ((so, size), (doff, _)) = (src.bytes(), dst.bytes());
        if size > 0 {
            enc.enc.copy_buffer_to_buffer(&src.buf.buf, so, &dst.buf.buf, doff, size);
        }
        Ok(())
    }

    /// Reads a slice back, after everything submitted so far. Submits a copy of its own.
    pub async fn read<T: Element>(&self, src: GpuSlice<'_, T>) -> Result<Vec<T>> {
        let (off, size) = src.bytes();
        if size == 0 {
            return Ok(vec![]);
        }
        let staging = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.encoder();
        enc.enc.copy_buffer_to_buffer(&src.buf.buf, off, &staging, 0, size);
        self.submit(enc)?;
        let (tx, rx) = oneshot();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| tx.send(r));
        #[cfg(not(target_arch = "wasm32"))]
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| gpu_error(format!("waiting for the device: {e}")))?;
        rx.await.map_err(|e| gpu_error(format!("reading a buffer back: {e}")))?;
        let out = {
            let view = staging.slice(..).get_mapped_range().map_err(|e| gpu_error(format!("mapping a buffer: {e}")))?;
            bytemuck::pod_collect_to_vec(&view)
        };
        staging.unmap();
        self.ctx.take_error()?;
        Ok(out)
    }

    /// `read`, blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_blocking<T: Element>(&self, src: GpuSlice<'_, T>) -> Result<Vec<T>> {
        pollster::block_on(self.read(src))
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
