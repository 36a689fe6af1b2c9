//! Heads and losses of the pretext tasks: the free labels come from
//! `selfsup-data`'s view recipes, the methods that train them live in
//! `selfsup-train`.
//!
//! - [`MlpHead`] and [`classify`]: the classifier that rotation, relative patch
//!   location and jigsaw put on top of the encoder, with its cross-entropy and
//!   top-1 count.
//! - [`Decoder`], [`inpainting_loss`] and [`masked_squared_error`]: the context
//!   encoder's up-convolution decoder and its overlap-weighted L2 loss (inpainting).
//! - [`Discriminator`], [`discriminator_loss`] and [`generator_loss`]: the optional
//!   adversarial loss of inpainting.
//! - [`FrameEmbedding`], [`concat_views`] and [`stack_of_differences`]: how
//!   Shuffle & Learn and odd-one-out embed and fuse the frames they order.

mod classifier;
mod decoder;
mod discriminator;
mod temporal;

pub use classifier::{classify, Classified, MlpHead};
pub use decoder::{inpainting_loss, masked_squared_error, Decoder, DECODER_STAGES};
pub use discriminator::{discriminator_loss, generator_loss, Discriminator};
pub use temporal::{concat_views, stack_of_differences, FrameEmbedding};
