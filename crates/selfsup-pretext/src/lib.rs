//! Heads and losses of the pretext tasks: the free labels come from
//! `selfsup-data`'s view recipes, the methods that train them live in
//! `selfsup-train`.
//!
//! - [`MlpHead`] and [`classify`]: the classifier that rotation, relative patch
//!   location and jigsaw put on top of the encoder, with its cross-entropy and
//!   top-1 count.
//! - [`inpainting_loss`] and [`masked_squared_error`]: the context encoder's
//!   overlap-weighted L2 loss and held-out measure (inpainting); its decoder and
//!   adversary come from `selfsup-generative`.
//! - [`FrameEmbedding`], [`concat_views`] and [`stack_of_differences`]: how
//!   Shuffle & Learn and odd-one-out embed and fuse the frames they order.

mod classifier;
mod inpainting;
mod temporal;

pub use classifier::{classify, Classified, MlpHead};
pub use inpainting::{inpainting_loss, masked_squared_error};
pub use temporal::{concat_views, stack_of_differences, FrameEmbedding};
