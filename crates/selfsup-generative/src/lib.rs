//! Decoders, generators, discriminators and their losses: the generative half of
//! selfsup's autoencoders, GANs, next-frame prediction and inpainting. The methods
//! that train them live in `selfsup-train`.
//!
//! - [`Decoder`]: a feature vector back to an image with `conv_transpose2d`
//!   (the context encoder's and autoencoders' decoder; with
//!   [`Decoder::with_output_range`], DCGAN's generator).
//! - [`Discriminator`], [`discriminator_loss`] and [`generator_loss`]: a small
//!   DCGAN-style image discriminator and the two sides of the GAN logistic loss.
//! - [`JointDiscriminator`]: BiGAN's discriminator of (image, code) pairs.
//! - [`gaussian_latents`]: seeded latent codes for the generators.

mod decoder;
mod discriminator;
mod joint;
mod latent;

pub use decoder::{Decoder, DECODER_STAGES};
pub use discriminator::{discriminator_loss, generator_loss, Discriminator};
pub use joint::JointDiscriminator;
pub use latent::gaussian_latents;
