//! Evaluation on frozen encoder features: kNN and a linear probe, the protocols of
//! InstDisc (Wu et al. 2018) and of the self-supervised literature generally.
mod features;
mod knn;
mod linear;

pub use features::{extract_features, Features};
pub use knn::knn_top1;
pub use linear::{linear_probe_top1, LinearProbeConfig};

use crate::{Result, TrainError};
use candle_core::Device;
use selfsup_data::Dataset;
use selfsup_encoders::Encoder;

/// Top-1 accuracies on the test split, in percent. The probes are `None` for
/// unlabelled data (video files).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalReport {
    /// Linear classifier on standardised frozen features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_probe_top1: Option<f64>,
    /// Weighted kNN (k = 200, cosine, weights exp(sim / 0.1)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knn_top1: Option<f64>,
    /// The pretext task's own top-1 on the test split (rotation, patch location, jigsaw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretext_top1: Option<f64>,
    /// The pretext task's own reconstruction MSE on the test split (inpainting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretext_mse: Option<f64>,
    /// The method's trivial reference predictor on the same test samples, in the pretext
    /// measure's unit (next-frame prediction: copying the last frame).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretext_baseline: Option<f64>,
}

/// Extracts frozen features of both splits and runs both protocols. Video clips are
/// scored frame by frame ([`Dataset::frames`]), each frame with its clip's label.
///
/// # Errors
/// If a split has no labels or on tensor errors.
pub fn evaluate(
    encoder: &dyn Encoder,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    seed: u64,
) -> Result<EvalReport> {
    let labels = |d: &Dataset| {
        d.labels.clone().ok_or_else(|| {
            TrainError::config(
                "dataset",
                format!("{} has no labels to evaluate with", d.name),
            )
        })
    };
    let (train, test) = (train.frames(), test.frames());
    let (train, test) = (train.as_ref(), test.as_ref());
    let (train_y, test_y) = (labels(train)?, labels(test)?);
    let classes = train.num_classes.max(test.num_classes);
    let train_f = extract_features(encoder, train, device, "features (train)")?;
    let test_f = extract_features(encoder, test, device, "features (test)")?;
    let knn = knn_top1(
        &train_f, &train_y, &test_f, &test_y, classes, 200, 0.1, device,
    )?;
    let linear = linear_probe_top1(
        &train_f,
        &train_y,
        &test_f,
        &test_y,
        classes,
        &LinearProbeConfig {
            seed,
            ..Default::default()
        },
        device,
    )?;
    Ok(EvalReport {
        linear_probe_top1: Some(linear),
        knn_top1: Some(knn),
        ..EvalReport::default()
    })
}
