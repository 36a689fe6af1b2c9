//! Fast CPU compute kernels for selfsup, with exact autograd.
//!
//! candle's CPU convolution backward is slow: the input gradient runs
//! `conv_transpose2d` as a direct loop, which dominates a training step of a
//! small CNN. This crate provides drop-in replacements built from one large,
//! multi-threaded matmul plus cheap, parallel data movement:
//!
//! - [`conv2d`]: convolution as im2col + matmul. Its backward is exact and is
//!   itself differentiable (col2im's backward is im2col), so second
//!   derivatives work too.
//! - [`batch_norm_train`] and [`batch_norm_eval`]: batch normalization over
//!   `(N, C, H, W)` with fused, channel-parallel statistics and backward,
//!   without the transposes and copies of a composed version.
//! - [`im2col`] and [`col2im`]: the two adjoint data-movement ops, exposed as
//!   candle custom ops for anyone who wants to build on them.
//!
//! On devices other than the CPU, and for dtypes other than `f32`, the
//! functions fall back to candle's own ops, so callers can use them
//! unconditionally.
//!
//! # Features
//!
//! - `cuda`: forwards to `candle-core/cuda`.
//! - `metal`: forwards to `candle-core/metal`.
//!
//! Both are off by default; the CPU kernels need neither.

mod batch_norm;
mod conv;
mod im2col;
#[cfg(test)]
mod test_util;

pub use batch_norm::{batch_norm_eval, batch_norm_train};
pub use conv::conv2d;
pub use im2col::{col2im, im2col, ConvGeometry};
