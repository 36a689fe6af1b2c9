//! Backbones for selfsup: each maps a batch of images `(N, C, H, W)` to one
//! feature vector per image `(N, D)`.
//!
//! - [`SmallCnn`]: four conv–BN–ReLU layers and global average pooling, for
//!   28x28 / 32x32 images.
//! - [`ResNet`]: ResNet-18 and ResNet-50 (He et al. 2016) with a CIFAR or an
//!   ImageNet [`Stem`], named like torchvision's state dict so an exported
//!   encoder loads into torchvision.
//! - [`EncoderKind`]: the command-line names (`small-cnn`, `resnet18-cifar`,
//!   `resnet18`, `resnet50-cifar`, `resnet50`) and a `build` that returns a
//!   `Box<dyn` [`Encoder`]`>`.
//! - [`seeded_var_builder`]: a `VarBuilder` that initialises weights from a
//!   seed, bit for bit reproducibly (candle's own CPU RNG cannot be seeded).
//! - [`pool`]: a differentiable padded max-pool (candle's `max_pool2d`
//!   backward is wrong when kernel != stride) and global average pooling.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarMap;
//! use selfsup_encoders::{seeded_var_builder, EncoderKind};
//!
//! # fn main() -> candle_core::Result<()> {
//! let varmap = VarMap::new();
//! let vb = seeded_var_builder(&varmap, 42, DType::F32, &Device::Cpu);
//! let kind: EncoderKind = "small-cnn".parse().map_err(candle_core::Error::wrap)?;
//! let encoder = kind.with_width(8).build(1, vb)?;
//! let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu)?;
//! assert_eq!(encoder.forward_t(&x, false)?.dims(), &[2, 64]);
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//! - `cuda`: forwards to `candle-core/cuda`, `candle-nn/cuda` and
//!   `selfsup-data/cuda`.
//! - `metal`: forwards to `candle-core/metal`, `candle-nn/metal` and
//!   `selfsup-data/metal`.

mod batch_norm;
mod conv_bn;
mod encoder;
mod init;
pub mod pool;
mod resnet;
mod small_cnn;
#[cfg(test)]
mod test_util;

pub use batch_norm::BatchNorm2d;
pub use encoder::{Encoder, EncoderKind, ParseEncoderKindError, Stem};
pub use init::{seeded_var_builder, torch_default_init, torch_linear, TORCHVISION_CONV_INIT};
pub use resnet::{Block, ResNet, ResNetConfig};
pub use small_cnn::SmallCnn;
