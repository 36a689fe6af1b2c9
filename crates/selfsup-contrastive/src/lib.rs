//! Contrastive learning building blocks for selfsup, usable from plain candle code.
//!
//! - [`nt_xent`]: the NT-Xent loss of SimCLR (Chen et al. 2020).
//! - [`info_nce`]: InfoNCE with an explicit set of negatives (Oord et al. 2018; MoCo, He et al. 2020).
//! - [`nce`]: noise-contrastive estimation against a memory bank (NPID, Wu et al. 2018).
//! - [`MemoryBank`]: running-average features per sample (NPID; PIRL, Misra & van der Maaten 2020).
//! - [`Queue`]: MoCo's FIFO of keys.
//! - [`MomentumEncoder`]: an EMA copy of a model (MoCo's key encoder).
//! - [`ProjectionHead`]: the Linear–BN–ReLU–Linear projection head of SimCLR.
//! - CPC: Contrastive Predictive Coding (van den Oord et al. 2018; Hénaff et al. 2020):
//!   the patch grid and [`PatchEncoder`], the masked-convolution context network and
//!   predictors ([`CpcHead`]), and the InfoNCE loss with its targets ([`cpc_loss`]).
//!
//! Features: `cuda` and `metal` forward to candle.
mod cpc;
mod loss;
mod memory_bank;
mod momentum;
mod nce;
mod normalize;
mod projection;
mod queue;

pub use cpc::{
    candidate_group, cpc_logits, cpc_loss, cpc_top1, CpcHead, CpcHeadConfig, CpcLogits,
    PatchEncoder, PatchGrid,
};
pub use loss::{info_nce, nt_xent};
pub use memory_bank::{bank_bytes, MemoryBank, DEFAULT_BANK_MOMENTUM};
pub use momentum::{cosine_momentum, MomentumEncoder, DEFAULT_KEY_MOMENTUM};
pub use nce::{nce, nce_log_normaliser};
pub use normalize::l2_normalize;
pub use projection::ProjectionHead;
pub use queue::Queue;
