//! One file per method recipe, and [`build_method`] to choose one by name.
mod classification;
mod inpainting;
mod jigsaw;
mod relative_patch;
mod rotation;
mod simclr;

pub use inpainting::Inpainting;
pub use jigsaw::Jigsaw;
pub use relative_patch::RelativePatch;
pub use rotation::Rotation;
pub use simclr::SimClr;

use crate::config::TrainConfig;
use crate::method::Method;
use crate::{Result, TrainError};
use candle_nn::VarBuilder;
use selfsup_encoders::EncoderKind;

/// Names accepted by `--method`.
pub const METHODS: &[&str] = &[
    "simclr",
    "jigsaw",
    "rotation",
    "relative-patch",
    "inpainting",
];

/// What a method needs to know about the data to build itself.
#[derive(Clone, Copy, Debug)]
pub struct DataShape {
    /// Image channels.
    pub channels: usize,
    /// Image height and width.
    pub size: usize,
}

/// Builds the method that `cfg.method` names, with its variables in `vb`.
///
/// # Errors
/// A [`TrainError::Config`] for an unknown method or settings the method cannot use.
pub fn build_method(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Box<dyn Method>> {
    match cfg.method.as_str() {
        "simclr" => Ok(Box::new(SimClr::new(cfg, data, vb)?)),
        "jigsaw" => Ok(Box::new(Jigsaw::new(cfg, data, vb)?)),
        "rotation" => Ok(Box::new(Rotation::new(cfg, data, vb)?)),
        "relative-patch" => Ok(Box::new(RelativePatch::new(cfg, data, vb)?)),
        "inpainting" => Ok(Box::new(Inpainting::new(cfg, data, vb)?)),
        other => Err(TrainError::config(
            "method",
            format!(
                "unknown method {other:?}; available: {}",
                METHODS.join(", ")
            ),
        )),
    }
}

/// Parses `cfg.encoder`, applying `cfg.width` to the small-cnn.
pub(crate) fn encoder_kind(cfg: &TrainConfig) -> Result<EncoderKind> {
    let kind: EncoderKind = cfg
        .encoder
        .parse()
        .map_err(|e| TrainError::config("encoder", format!("{e}")))?;
    Ok(kind.with_width(cfg.width))
}
