//! One file per method recipe, and [`build_method`] to choose one by name.
mod autoencoder;
mod bank;
mod bigan;
mod classification;
mod cpc;
mod dcgan;
mod denoising_autoencoder;
mod frame_order;
mod inpainting;
mod jigsaw;
mod latents;
mod moco;
mod next_frame;
mod npid;
mod odd_one_out;
mod pirl;
mod relative_patch;
mod rotation;
mod samples;
mod shuffle_learn;
mod side;
mod simclr;

pub use autoencoder::{Autoencoder, RECONSTRUCTIONS_FILE};
pub use bigan::{Bigan, BIGAN_FILE};
pub use cpc::Cpc;
pub use dcgan::{Dcgan, SAMPLES_FILE};
pub use frame_order::{FrameOrder, FrameRecipe};
pub use inpainting::Inpainting;
pub use jigsaw::Jigsaw;
pub use moco::Moco;
pub use next_frame::{NextFrame, PREDICTIONS_FILE};
pub use npid::Npid;
pub use odd_one_out::OddOneOut;
pub use pirl::Pirl;
pub use relative_patch::RelativePatch;
pub use rotation::Rotation;
pub use shuffle_learn::ShuffleLearn;
pub use simclr::SimClr;

use crate::config::TrainConfig;
use crate::method::Method;
use crate::{Result, TrainError};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use selfsup_encoders::{seeded_var_builder, Encoder, EncoderKind};

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
    "shuffle-learn",
    "odd-one-out",
    "cpc",
    "next-frame",
    "autoencoder",
    "denoising-autoencoder",
    "dcgan",
    "bigan",
];

/// The methods that learn from video clips (`video:<path>` or `moving-fmnist`).
pub const VIDEO_METHODS: &[&str] = &["shuffle-learn", "odd-one-out", "next-frame"];

/// What a method needs to know about the data to build itself.
#[derive(Clone, Copy, Debug)]
pub struct DataShape {
    /// Image channels.
    pub channels: usize,
    /// Image (or video frame) height and width.
    pub size: usize,
    /// Images in the training split (the memory bank's slots).
    pub images: usize,
    /// Frames per item: 1 for images, the clip length for video datasets.
    pub clip_len: usize,
    /// How the loader normalised the pixels.
    pub normalization: Normalization,
}

impl DataShape {
    /// The shape of `data`: its channels, frame side, length, clip length and
    /// normalisation.
    pub fn of(data: &selfsup_data::Dataset) -> Self {
        Self {
            channels: data.channels,
            size: data.frame_height(),
            images: data.len(),
            clip_len: data.clip_len,
            normalization: Normalization::new(&data.mean, &data.std),
        }
    }
}

impl Default for DataShape {
    /// One 28x28 grayscale image, unnormalised.
    fn default() -> Self {
        Self {
            channels: 1,
            size: 28,
            images: 1,
            clip_len: 1,
            normalization: Normalization::default(),
        }
    }
}

/// Per-channel mean and standard deviation (in `[0, 1]` pixel units) that the loader
/// subtracts and divides by; channels past the image's are unused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    /// Per-channel mean.
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
}

impl Default for Normalization {
    /// The identity: mean 0, deviation 1.
    fn default() -> Self {
        Self {
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }
}

impl Normalization {
    /// From a dataset's per-channel statistics (at most 3 channels are kept).
    pub fn new(mean: &[f32], std: &[f32]) -> Self {
        let mut out = Self::default();
        for (c, (m, s)) in mean.iter().zip(std).take(3).enumerate() {
            out.mean[c] = *m;
            out.std[c] = *s;
        }
        out
    }

    /// The normalised values of black and white pixels in each of the first `channels`
    /// channels: the bounds a generator's output must stay within.
    pub fn value_range(&self, channels: usize) -> (Vec<f32>, Vec<f32>) {
        (0..channels.min(3))
            .map(|c| {
                (
                    -self.mean[c] / self.std[c],
                    (1.0 - self.mean[c]) / self.std[c],
                )
            })
            .unzip()
    }
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
        "shuffle-learn" => Ok(Box::new(ShuffleLearn::new(cfg, data, vb)?)),
        "odd-one-out" => Ok(Box::new(OddOneOut::new(cfg, data, vb)?)),
        "cpc" => Ok(Box::new(Cpc::new(cfg, data, vb)?)),
        "next-frame" => Ok(Box::new(NextFrame::new(cfg, data, vb)?)),
        "autoencoder" => Ok(Box::new(Autoencoder::new(cfg, data, vb)?)),
        "denoising-autoencoder" => Ok(Box::new(Autoencoder::denoising(cfg, data, vb)?)),
        "dcgan" => Ok(Box::new(Dcgan::new(cfg, data, varmap, device)?)),
        "bigan" => Ok(Box::new(Bigan::new(cfg, data, vb)?)),
        other => Err(TrainError::config(
            "method",
            format!(
                "unknown method {other:?}; available: {}",
                METHODS.join(", ")
            ),
        )),
    }
}

/// Checks that a video method is given clips.
///
/// # Errors
/// A [`TrainError::Config`] naming the dataset setting when `data` holds still images.
pub(crate) fn require_clips(method: &str, data: DataShape) -> Result<()> {
    if data.clip_len < 2 {
        return Err(TrainError::config(
            "dataset",
            format!(
                "{method} learns from video: use --dataset video:<file-or-folder> or moving-fmnist"
            ),
        ));
    }
    Ok(())
}

/// Values in the encoder's feature map of one `data` image, `D·h·w`, found by running
/// it once in evaluation mode (no running statistics change).
///
/// # Errors
/// If the images are too small for the encoder.
pub(crate) fn map_len(encoder: &dyn Encoder, data: DataShape, device: &Device) -> Result<usize> {
    let probe = Tensor::zeros((1, data.channels, data.size, data.size), DType::F32, device)?;
    Ok(encoder.forward_map(&probe, false)?.elem_count())
}

/// Parses `cfg.encoder`, applying `cfg.width` to the small-cnn.
pub(crate) fn encoder_kind(cfg: &TrainConfig) -> Result<EncoderKind> {
    let kind: EncoderKind = cfg
        .encoder
        .parse()
        .map_err(|e| TrainError::config("encoder", format!("{e}")))?;
    Ok(kind.with_width(cfg.width))
}
