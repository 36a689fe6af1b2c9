//! Rotation prediction (Gidaris, Singh, Komodakis 2018, "Unsupervised Representation
//! Learning by Predicting Image Rotations"): every image appears in the batch at 0, 90,
//! 180 and 270 degrees, and a classifier on the encoder features names the rotation.
use super::classification::ClassificationTask;
use super::{encoder_kind, DataShape};
use crate::config::TrainConfig;
use crate::method::ENCODER_PREFIX;
use crate::Result;
use candle_core::{Device, Tensor};
use candle_nn::{Module, VarBuilder};
use selfsup_data::pretext::{RotationViews, ROTATIONS};
use selfsup_data::{Batch, ViewRecipe};
use selfsup_encoders::Encoder;
use selfsup_pretext::{classify, Classified, MlpHead};
use std::sync::Arc;

/// Rotation prediction: the four rotated views → encoder (one batch of `4N`, so batch
/// norm sees every rotation together, as in the paper) → [`MlpHead`] with one hidden
/// layer of the feature width → 4-way cross-entropy against the view index.
///
/// Gidaris et al. put the classifier on top of the network's own later blocks and find
/// the last block too specific to the task; the hidden layer plays those blocks' part,
/// so the pooled features that the linear probe reads stay more general.
pub struct Rotation {
    encoder: Box<dyn Encoder>,
    head: MlpHead,
    views: Arc<RotationViews>,
}

impl Rotation {
    /// Builds the encoder under `encoder.` and the classifier under `head.`, with
    /// [`RotationViews::for_size`] views of `data.size` pixels.
    ///
    /// # Errors
    /// For an unknown encoder or an empty image size.
    pub fn new(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Self> {
        let views = RotationViews::for_size(data.size);
        views.validate()?;
        let encoder = encoder_kind(cfg)?.build(data.channels, vb.pp(ENCODER_PREFIX))?;
        let dim = encoder.feature_dim();
        let head = MlpHead::new(dim, dim, ROTATIONS, vb.pp("head"))?;
        Ok(Self {
            encoder,
            head,
            views: Arc::new(views),
        })
    }

    /// Rotation logits of the four views, view-major.
    ///
    /// # Shapes
    /// 4 views of `(N, C, S, S)` to `(4N, 4)`.
    fn logits(&self, views: &[Tensor], train: bool) -> candle_core::Result<Tensor> {
        if views.len() != ROTATIONS {
            candle_core::bail!(
                "rotation expects {ROTATIONS} views per image, got {}",
                views.len()
            )
        }
        let features = self.encoder.forward_t(&Tensor::cat(views, 0)?, train)?;
        self.head.forward(&features)
    }
}

/// The labels of `n` images' views stacked view-major: `n` zeros, `n` ones, `n` twos, `n` threes.
///
/// # Shapes
/// `(4n,)`, `u32`.
fn rotation_labels(n: usize, device: &Device) -> candle_core::Result<Tensor> {
    let labels: Vec<u32> = (0..ROTATIONS as u32)
        .flat_map(|k| std::iter::repeat_n(k, n))
        .collect();
    Tensor::from_vec(labels, ROTATIONS * n, device)
}

impl ClassificationTask for Rotation {
    const NAME: &'static str = "rotation";

    fn recipe(&self) -> Arc<dyn ViewRecipe> {
        self.views.clone()
    }

    fn backbone(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    fn classified(&self, batch: &Batch, train: bool) -> candle_core::Result<Classified> {
        let logits = self.logits(&batch.views, train)?;
        let n = batch.views[0].dim(0)?;
        classify(&logits, &rotation_labels(n, logits.device())?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::method::{Method, PretextMetric, PretextTally};
    use candle_core::DType;
    use candle_nn::VarMap;
    use selfsup_encoders::seeded_var_builder;

    #[test]
    fn pretext_eval_scores_all_four_rotations_of_every_image() {
        let dev = Device::Cpu;
        let cfg = TrainConfig {
            method: "rotation".into(),
            width: 4,
            ..Default::default()
        };
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 1, DType::F32, &dev);
        let m = Rotation::new(
            &cfg,
            DataShape {
                channels: 1,
                size: 12,
                images: 1,
                clip_len: 1,
                ..DataShape::default()
            },
            vb,
        )
        .unwrap();
        let n = 5;
        let views: Vec<Tensor> = (0..ROTATIONS)
            .map(|_| Tensor::randn(0f32, 1.0, (n, 1, 12, 12), &dev).unwrap())
            .collect();
        let predicted = m
            .logits(&views, false)
            .unwrap()
            .argmax(1)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        // Row r holds view r / n, whose label is r / n.
        let correct = predicted
            .iter()
            .enumerate()
            .filter(|&(r, &p)| p as usize == r / n)
            .count();
        let batch = Batch {
            views,
            labels: None,
            indices: (0..n).collect(),
            targets: None,
        };
        let tally = m.pretext_eval(&batch).unwrap();
        assert_eq!(
            tally,
            PretextTally {
                sum: correct as f64,
                count: ROTATIONS * n
            }
        );
        assert_eq!(m.pretext_eval(&batch).unwrap(), tally, "eval changed state");
        assert_eq!(m.pretext_metric(), Some(PretextMetric::Top1));
        assert_eq!(
            rotation_labels(2, &dev).unwrap().to_vec1::<u32>().unwrap(),
            vec![0, 0, 1, 1, 2, 2, 3, 3]
        );
        let short = Batch {
            views: batch.views[..3].to_vec(),
            ..batch
        };
        assert!(m.pretext_eval(&short).is_err());
    }
}
