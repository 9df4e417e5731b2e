//! The fast CPU backend: rayon over rows / output channels (every task owns what it writes, so results do not
//! depend on the thread count) with SIMD-friendly inner loops.

use super::Backend;

pub struct Cpu;

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }
}
