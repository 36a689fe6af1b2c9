//! One file per method recipe, and [`build_method`] to choose one by name.
mod bank;
mod classification;
mod inpainting;
mod jigsaw;
mod moco;
mod npid;
mod pirl;
mod relative_patch;
mod rotation;
mod simclr;

pub use inpainting::Inpainting;
pub use jigsaw::Jigsaw;
pub use moco::Moco;
pub use npid::Npid;
pub use pirl::Pirl;
pub use relative_patch::RelativePatch;
pub use rotation::Rotation;
pub use simclr::SimClr;

use crate::config::TrainConfig;
use crate::method::Method;
use crate::{Result, TrainError};
use candle_core::{DType, Device};
use candle_nn::VarMap;
use selfsup_encoders::{seeded_var_builder, EncoderKind};

/// Names accepted by `--method`.
pub const METHODS: &[&str] = &[
    "simclr",
    "moco",
    "npid",
    "pirl",
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
    /// Images in the training split (the memory bank's slots).
    pub images: usize,
}

/// Builds the method that `cfg.method` names, with its trainable variables in
/// `varmap`, initialised from `cfg.seed`.
///
/// # Errors
/// A [`TrainError::Config`] for an unknown method or settings the method cannot use.
pub fn build_method(
    cfg: &TrainConfig,
    data: DataShape,
    varmap: &VarMap,
    device: &Device,
) -> Result<Box<dyn Method>> {
    let vb = seeded_var_builder(varmap, cfg.seed, DType::F32, device);
    match cfg.method.as_str() {
        "simclr" => Ok(Box::new(SimClr::new(cfg, data, vb)?)),
        "moco" => Ok(Box::new(Moco::new(cfg, data, varmap, device)?)),
        "npid" => Ok(Box::new(Npid::new(cfg, data, vb)?)),
        "pirl" => Ok(Box::new(Pirl::new(cfg, data, vb)?)),
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
