//! `ThreadBound<T>`: a value holding wgpu objects, kept where wgpu allows it. Natively wgpu's objects may move
//! between threads: the holder owns the value (behind a mutex). In the browser they must stay on the thread that
//! made them (a Worker), yet a `train::Run` must stay `Send` for the CPU path's thread pool: the holder keeps an
//! id, the value lives in that thread's registry, and reaching it from any other thread is an error — never
//! undefined behaviour (so wgpu's `fragile-send-sync-non-atomic-wasm` is not needed).

use super::gpu_error;
use crate::error::Result;
use std::sync::{Mutex, MutexGuard, TryLockError};

/// A shared handle to the value, usable on this thread.
#[cfg(not(target_arch = "wasm32"))]
pub type Shared<T> = std::sync::Arc<Mutex<T>>;
#[cfg(target_arch = "wasm32")]
pub type Shared<T> = std::rc::Rc<Mutex<T>>;

#[cfg(not(target_arch = "wasm32"))]
pub struct ThreadBound<T>(Shared<T>);

#[cfg(not(target_arch = "wasm32"))]
impl<T> ThreadBound<T> {
    pub fn new(value: T) -> ThreadBound<T> {
        ThreadBound(std::sync::Arc::new(Mutex::new(value)))
    }

    pub fn get(&self) -> Result<Shared<T>> {
        Ok(self.0.clone())
    }
}

#[cfg(target_arch = "wasm32")]
pub struct ThreadBound<T: 'static> {
    id: u64,
    _t: std::marker::PhantomData<fn() -> T>,
}

#[cfg(target_arch = "wasm32")]
thread_local! {
    static VALUES: std::cell::RefCell<std::collections::HashMap<u64, std::rc::Rc<dyn std::any::Any>>> = Default::default();
}

#[cfg(target_arch = "wasm32")]
impl<T: 'static> ThreadBound<T> {
    pub fn new(value: T) -> ThreadBound<T> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let shared: Shared<T> = std::rc::Rc::new(Mutex::new(value));
        VALUES.with(|m| m.borrow_mut().insert(id, shared));
        ThreadBound { id, _t: std::marker::PhantomData }
    }

    pub fn get(&self) -> Result<Shared<T>> {
        VALUES
            .with(|m| m.borrow().get(&self.id).cloned())
            .and_then(|v| v.downcast::<Mutex<T>>().ok())
            .ok_or_else(|| gpu_error("this run's GPU belongs to another thread (WebGPU objects stay on the thread that made them)"))
    }
}

#[cfg(target_arch = "wasm32")]
impl<T: 'static> Drop for ThreadBound<T> {
    fn drop(&mut self) {
        // On another thread the value cannot be reached; it is freed with its thread.
        let _ = VALUES.try_with(|m| m.borrow_mut().remove(&self.id));
    }
}

/// The value, or an error while another call is using it (never a wait: in the browser nothing may block).
pub fn lock<T>(s: &Shared<T>) -> Result<MutexGuard<'_, T>> {
    match s.try_lock() {
        Ok(g) => Ok(g),
        Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(TryLockError::WouldBlock) => Err(gpu_error("the run's GPU is busy with another call")),
    }
}
