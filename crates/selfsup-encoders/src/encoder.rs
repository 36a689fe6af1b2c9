//! The [`Encoder`] trait and the [`EncoderKind`] that names and builds one.

use std::fmt;
use std::str::FromStr;

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::pool::global_avg_pool;
use crate::resnet::{ResNet, ResNetConfig};
use crate::small_cnn::SmallCnn;

/// A backbone that maps a batch of images to one feature vector per image: a
/// convolutional trunk ([`Encoder::forward_map`]) and global average pooling.
pub trait Encoder: Send + Sync {
    /// Runs the trunk, without the final pooling; `train` selects batch statistics
    /// (and updates the running statistics) in batch-norm layers. Heads that need to
    /// know *where* something is (frame-order tasks) read this map.
    ///
    /// # Shapes
    /// `(N, C, H, W)` to `(N, feature_dim, h, w)`.
    ///
    /// # Errors
    /// Fails if `x` is not rank 4, has the wrong number of channels, or is too
    /// small for the encoder's downsampling.
    fn forward_map(&self, x: &Tensor, train: bool) -> Result<Tensor>;

    /// Runs the encoder: the trunk's map, globally average-pooled.
    ///
    /// # Shapes
    /// `(N, C, H, W)` to `(N, feature_dim)`.
    ///
    /// # Errors
    /// As [`Encoder::forward_map`].
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        global_avg_pool(&self.forward_map(x, train)?)
    }

    /// The length of the feature vector.
    fn feature_dim(&self) -> usize;
}

/// The stem of a ResNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stem {
    /// 3x3 stride-1 conv, no max-pool: for 32x32 inputs such as CIFAR.
    Cifar,
    /// 7x7 stride-2 conv and a 3x3 stride-2 max-pool, as in He et al. 2016.
    ImageNet,
}

/// Which backbone to build, as named on the command line.
///
/// | name | kind | features |
/// |---|---|---|
/// | `small-cnn` | [`EncoderKind::SmallCnn`] (width 32 unless set) | 8 × width |
/// | `resnet18-cifar` | ResNet-18, CIFAR stem | 512 |
/// | `resnet18` | ResNet-18, ImageNet stem | 512 |
/// | `resnet50-cifar` | ResNet-50, CIFAR stem | 2048 |
/// | `resnet50` | ResNet-50, ImageNet stem | 2048 |
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EncoderKind {
    /// [`SmallCnn`] with base width `width`.
    SmallCnn {
        /// Channels of the first conv; the last has `8 * width`.
        width: usize,
    },
    /// ResNet-18 (basic blocks).
    ResNet18 {
        /// Its stem.
        stem: Stem,
    },
    /// ResNet-50 (bottleneck blocks).
    ResNet50 {
        /// Its stem.
        stem: Stem,
    },
}

impl EncoderKind {
    /// The names that [`FromStr`] accepts, in the order of the table above.
    pub const NAMES: [&'static str; 5] = [
        "small-cnn",
        "resnet18-cifar",
        "resnet18",
        "resnet50-cifar",
        "resnet50",
    ];

    /// The default width of `small-cnn`.
    pub const DEFAULT_WIDTH: usize = 32;

    /// Sets the width of a `SmallCnn`; the ResNets have a fixed width and are
    /// returned unchanged.
    pub fn with_width(self, width: usize) -> Self {
        match self {
            Self::SmallCnn { .. } => Self::SmallCnn { width },
            other => other,
        }
    }

    /// The length of the feature vector the encoder produces.
    pub fn feature_dim(&self) -> usize {
        match self {
            Self::SmallCnn { width } => 8 * width,
            Self::ResNet18 { .. } => 512,
            Self::ResNet50 { .. } => 2048,
        }
    }

    /// Builds the encoder for images with `in_channels` channels, taking its
    /// variables from `vb` (see [`crate::seeded_var_builder`]).
    ///
    /// # Errors
    /// Fails if `in_channels` or a `SmallCnn` width is zero, or if `vb` cannot
    /// provide a variable (for example a shape mismatch with a loaded one).
    pub fn build(&self, in_channels: usize, vb: VarBuilder) -> Result<Box<dyn Encoder>> {
        Ok(match *self {
            Self::SmallCnn { width } => Box::new(SmallCnn::new(in_channels, width, vb)?),
            Self::ResNet18 { stem } => {
                Box::new(ResNet::new(&ResNetConfig::resnet18(stem), in_channels, vb)?)
            }
            Self::ResNet50 { stem } => {
                Box::new(ResNet::new(&ResNetConfig::resnet50(stem), in_channels, vb)?)
            }
        })
    }
}

impl fmt::Display for EncoderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::SmallCnn { .. } => "small-cnn",
            Self::ResNet18 { stem: Stem::Cifar } => "resnet18-cifar",
            Self::ResNet18 {
                stem: Stem::ImageNet,
            } => "resnet18",
            Self::ResNet50 { stem: Stem::Cifar } => "resnet50-cifar",
            Self::ResNet50 {
                stem: Stem::ImageNet,
            } => "resnet50",
        };
        f.write_str(name)
    }
}

/// The error of parsing an unknown [`EncoderKind`] name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseEncoderKindError {
    name: String,
}

impl fmt::Display for ParseEncoderKindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown encoder `{}`; expected one of: {}",
            self.name,
            EncoderKind::NAMES.join(", ")
        )
    }
}

impl std::error::Error for ParseEncoderKindError {}

impl FromStr for EncoderKind {
    type Err = ParseEncoderKindError;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "small-cnn" => Self::SmallCnn {
                width: Self::DEFAULT_WIDTH,
            },
            "resnet18-cifar" => Self::ResNet18 { stem: Stem::Cifar },
            "resnet18" => Self::ResNet18 {
                stem: Stem::ImageNet,
            },
            "resnet50-cifar" => Self::ResNet50 { stem: Stem::Cifar },
            "resnet50" => Self::ResNet50 {
                stem: Stem::ImageNet,
            },
            _ => {
                return Err(ParseEncoderKindError {
                    name: s.to_string(),
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn names_round_trip() -> std::result::Result<(), ParseEncoderKindError> {
        for name in EncoderKind::NAMES {
            assert_eq!(name.parse::<EncoderKind>()?.to_string(), name);
        }
        assert_eq!(
            "small-cnn".parse::<EncoderKind>()?,
            EncoderKind::SmallCnn { width: 32 }
        );
        Ok(())
    }

    #[test]
    fn unknown_name_lists_the_accepted_ones() {
        let err = "resnet34"
            .parse::<EncoderKind>()
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "unknown encoder `resnet34`; expected one of: small-cnn, resnet18-cifar, \
                 resnet18, resnet50-cifar, resnet50"
            )
        );
    }

    #[test]
    fn width_only_changes_the_small_cnn() {
        let small = EncoderKind::SmallCnn { width: 32 }.with_width(8);
        assert_eq!(small, EncoderKind::SmallCnn { width: 8 });
        assert_eq!(small.feature_dim(), 64);
        let r = EncoderKind::ResNet18 { stem: Stem::Cifar };
        assert_eq!(r.clone().with_width(8), r);
        assert_eq!(r.feature_dim(), 512);
    }
}
