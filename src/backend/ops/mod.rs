//! The scalar reference ops: direct loops over the maths, written to be read, not to be fast. Every fast kernel
//! is tested against these, and these are tested by finite differences and against PyTorch.

mod act;
mod attention;
mod linear;
mod loss;
mod norm;
mod rope;

pub use act::{activation_backward, activation_forward, gelu, gelu_grad, sigmoid};
pub use attention::{attention_backward, attention_forward, attention_probs};
pub use linear::{matmul_backward, matmul_forward};
pub use loss::{adamw, cross_entropy, sum_squares};
pub use norm::{norm_backward, norm_forward};
pub use rope::rope_apply;
