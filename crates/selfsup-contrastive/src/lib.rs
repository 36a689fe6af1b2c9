//! Contrastive learning building blocks for selfsup, usable from plain candle code.
//!
//! - [`nt_xent`]: the NT-Xent loss of SimCLR (Chen et al. 2020).
//! - [`info_nce`]: InfoNCE with an explicit set of negatives (Oord et al. 2018; MoCo, He et al. 2020).
//! - [`ProjectionHead`]: the Linear–BN–ReLU–Linear projection head of SimCLR.
//!
//! Features: `cuda` and `metal` forward to candle.
mod loss;
mod normalize;
mod projection;

pub use loss::{info_nce, nt_xent};
pub use normalize::l2_normalize;
pub use projection::ProjectionHead;
