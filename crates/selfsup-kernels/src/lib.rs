//! Fast CPU compute kernels for selfsup, with exact autograd.
//!
//! candle's CPU convolution backward is slow: the input gradient runs
//! `conv_transpose2d` as a direct loop, which dominates a training step of a
//! small CNN. This crate provides drop-in replacements built from gemm
//! microkernels (the `gemm` crate, as used by candle's matmul) plus cheap,
//! parallel data movement:
//!
//! - [`conv2d`]: convolution as one fused custom op. The forward runs im2col
//!   and a gemm per chunk of the batch, in parallel, straight into the
//!   output; the kernel and input gradients are kernels of their own, and
//!   the input gradient is skipped when the input needs none. The gradient
//!   ops are differentiable again, so second derivatives work. Channels
//!   last, 3x3 stride-1 kernels on 16 or more channels run as Winograd's
//!   F(2x2, 3x3) in all three directions (2.25x fewer multiply-adds).
//! - [`MemoryFormat`]: activations channels first (`(N, C, H, W)`) or
//!   channels last (`(N, H, W, C)`). Channels last is the CPU kernels'
//!   native order: a convolution's patches are contiguous runs of its input,
//!   its gemm writes the output rows in place, and batch norm works on rows
//!   of `C` values, with no transposes; [`conv2d_in`] and [`conv_bn_train`]
//!   take either. The encoders run channels last inside on the CPU.
//! - [`conv_bn_train`]: convolution, training-mode batch norm and an optional
//!   ReLU as one op; [`conv_bn_chain_train`]: a chain of them as one op, so
//!   that the layers' gradients pass from one to the next without candle's
//!   zero-fill and add of each.
//! - [`batch_norm_train`] and [`batch_norm_eval`]: batch normalization over
//!   `(N, C, H, W)` with fused, channel-parallel statistics and backward,
//!   without the transposes and copies of a composed version.
//!   [`batch_norm_train_relu`] fuses a following ReLU into the same passes.
//!   [`sync_batch_norm`] sums their statistics over the processes of a
//!   data-parallel run.
//! - [`relu`]: ReLU with a parallel forward and backward.
//! - [`max_pool2d`]: overlapping max-pooling with padding (PyTorch's
//!   `MaxPool2d`, as in the ResNet stem), parallel over planes in both
//!   directions; candle's own has no padding and a backward that is wrong
//!   when kernel != stride.
//! - [`im2col`] and [`col2im`]: the two adjoint data-movement ops, exposed as
//!   candle custom ops for anyone who wants to build on them.
//! - [`sgemm`]: the same gemm on plain slices, to measure the machine's
//!   sgemm rate.
//! - [`profile`]: a global per-op timer, off by default, that every op of
//!   this crate reports to.
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
mod batch_norm_kernels;
mod bn_stats;
mod conv;
mod conv_bn;
mod conv_bn_chain;
mod conv_kernels;
#[cfg(test)]
mod conv_tests;
mod format;
mod geometry;
mod im2col;
mod max_pool;
#[cfg(test)]
mod max_pool_tests;
mod patches;
pub mod profile;
mod relu;
mod sgemm;
mod sync;
#[cfg(test)]
mod test_util;
mod winograd;
mod zeros;

pub use batch_norm::{batch_norm_eval, batch_norm_train, batch_norm_train_relu};
pub use conv::{conv2d, conv2d_in, conv2d_with, conv_transpose2d, ConvThreading};
pub use conv_bn::conv_bn_train;
pub use conv_bn_chain::{conv_bn_chain_train, BatchStats, ConvBnLayer};
pub use format::MemoryFormat;
pub use im2col::{col2im, im2col, ConvGeometry};
pub use max_pool::max_pool2d;
pub use relu::{add_relu, relu};
pub use sgemm::sgemm;
pub use sync::{batch_norm_world, sync_batch_norm, unsync_batch_norm, StatsReducer, SyncGuard};
