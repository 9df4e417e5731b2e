//! Runtime choice of the instruction set for the hot loops. The crate is built for the baseline target (on
//! x86-64 that is SSE2: 4 lanes), so `multiversion!` compiles a kernel's body three times, as is, with AVX2 and with
//! AVX-512 enabled, and calls the widest one the CPU has. The body and the `#[inline(always)]` helpers it calls
//! inline into each copy, where LLVM vectorises the fixed-width lane loops 8 or 16 wide. Elsewhere (wasm32 with
//! simd128, aarch64 with NEON) the baseline already is the SIMD target and the macro emits the plain function.
//!
//! The choice never changes a result: Rust neither contracts a·b + c into an FMA nor reassociates sums, so the
//! vectorised code performs the same IEEE operations in the same order on every instruction set. The exceptions
//! are the products: the `gemm` crate's kernels and the attention tiles' AVX-512 kernel (`tile`) use fused
//! multiply-adds, so those bits depend on the CPU (never on the thread count).

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Level {
    Base,
    Avx2,
    Avx512,
}

/// The widest instruction set this CPU supports among those the kernels are compiled for.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn level() -> Level {
    use std::arch::is_x86_feature_detected as has;
    if has!("avx512f") && has!("avx2") && has!("fma") {
        Level::Avx512
    } else if has!("avx2") && has!("fma") {
        Level::Avx2
    } else {
        Level::Base
    }
}

/// `multiversion! { fn name(a: A, b: B) -> R { body } }` defines `name`, which runs `body` compiled for
/// `level()`. Arguments are plain `ident: type` (no patterns, no generics).
macro_rules! multiversion {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                match $crate::backend::cpu::simd::level() {
                    // SAFETY: `level()` names only instruction sets this CPU reports.
                    $crate::backend::cpu::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::backend::cpu::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::backend::cpu::simd::Level::Base => {}
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::super::math;
    use crate::rng::Rng;

    /// A mix of the kernels' building blocks: the transcendental functions and the lane reductions. (Not the
    /// attention tile product: natively it has its own AVX-512 kernel with fused multiply-adds, see `tile`.)
    #[inline(always)]
    fn mix(out: &mut [f32], x: &[f32]) {
        let n = x.len();
        for i in 0..n {
            out[i] = math::gelu(x[i]) + math::gelu_grad(x[i]) * math::sigmoid(x[i]) - math::exp(x[i]);
        }
        out[0] = math::sum(x) + math::dot(x, &x[1..]) * math::max(x) + math::sum_sq_dev(x, 0.3);
    }

    fn baseline(out: &mut [f32], x: &[f32]) {
        mix(out, x)
    }

    multiversion! {
        fn widest(out: &mut [f32], x: &[f32]) {
            mix(out, x)
        }
    }

    #[test]
    fn the_widest_instruction_set_gives_the_same_bits_as_the_baseline_build() {
        #[cfg(target_arch = "x86_64")]
        eprintln!("dispatching to {:?}", super::level());
        let mut rng = Rng::new(3);
        let x: Vec<f32> = (0..1000).map(|_| rng.normal() as f32 * 4.0).collect();
        let (mut a, mut b) = (vec![0.0f32; 1000], vec![0.0f32; 1000]);
        baseline(&mut a, &x);
        widest(&mut b, &x);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(&a) == bits(&b));
    }
}
