//! Relative patch location (Doersch, Gupta, Efros 2015, "Unsupervised Visual
//! Representation Learning by Context Prediction"): a patch and one of its eight
//! neighbours go through the shared encoder, and an MLP on the two features names
//! which neighbour it is.
use super::classification::{batch_targets, ClassificationTask};
use super::{encoder_kind, DataShape};
use crate::config::TrainConfig;
use crate::method::ENCODER_PREFIX;
use crate::Result;
use candle_core::Tensor;
use candle_nn::{Module, VarBuilder};
use selfsup_data::pretext::{RelativePatchViews, DEFAULT_UPSCALE, NEIGHBOURS};
use selfsup_data::{Batch, ViewRecipe};
use selfsup_encoders::Encoder;
use selfsup_pretext::{classify, Classified, MlpHead};
use std::sync::Arc;

/// Relative patch location: anchor and neighbour patches → shared encoder (one batch
/// of `2N`, siamese) → features concatenated `[anchor, neighbour]` → [`MlpHead`] with a
/// hidden layer of twice the feature width (the paper's fc7 after the concatenation)
/// → 8-way cross-entropy against the neighbour's index in [`NEIGHBOURS`].
pub struct RelativePatch {
    encoder: Box<dyn Encoder>,
    head: MlpHead,
    views: Arc<RelativePatchViews>,
}

impl RelativePatch {
    /// Builds the encoder under `encoder.`, the classifier under `head.` and the
    /// [`RelativePatchViews`] for `data.size x data.size` images from `cfg.pretext`'s
    /// grid, gap and jitter. Patches are `cfg.pretext.patch_size` pixels, or with 0
    /// [`DEFAULT_UPSCALE`] times their natural side (14x14 on 28x28 images), as jigsaw's
    /// tiles.
    ///
    /// # Errors
    /// For an unknown encoder, a grid below 3x3, or images too small for the grid.
    pub fn new(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Self> {
        let p = &cfg.pretext;
        let mut views = RelativePatchViews::new(data.size, data.size, p.grid, p.gap, p.jitter, 0)?;
        views.patch_size = match p.patch_size {
            0 => DEFAULT_UPSCALE * views.grid().patch,
            side => side,
        };
        views.validate()?;
        let encoder = encoder_kind(cfg)?.build(data.channels, vb.pp(ENCODER_PREFIX))?;
        let dim = encoder.feature_dim();
        let head = MlpHead::new(2 * dim, 2 * dim, NEIGHBOURS.len(), vb.pp("head"))?;
        Ok(Self {
            encoder,
            head,
            views: Arc::new(views),
        })
    }

    /// Neighbour logits of a batch of patch pairs.
    ///
    /// # Shapes
    /// 2 views of `(N, C, s, s)` to `(N, 8)`.
    fn logits(&self, views: &[Tensor], train: bool) -> candle_core::Result<Tensor> {
        let [anchor, neighbour] = views else {
            candle_core::bail!(
                "relative patch location expects 2 views per image, got {}",
                views.len()
            )
        };
        let n = anchor.dim(0)?;
        let features = self
            .encoder
            .forward_t(&Tensor::cat(&[anchor, neighbour], 0)?, train)?;
        let pairs = Tensor::cat(&[features.narrow(0, 0, n)?, features.narrow(0, n, n)?], 1)?;
        self.head.forward(&pairs)
    }
}

impl ClassificationTask for RelativePatch {
    const NAME: &'static str = "relative-patch";

    fn recipe(&self) -> Arc<dyn ViewRecipe> {
        self.views.clone()
    }

    fn backbone(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    fn classified(&self, batch: &Batch, train: bool) -> candle_core::Result<Classified> {
        classify(
            &self.logits(&batch.views, train)?,
            batch_targets(batch, Self::NAME)?,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::method::{Method, PretextMetric, PretextTally};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;
    use selfsup_encoders::seeded_var_builder;

    fn build(size: usize, patch_size: usize) -> Result<RelativePatch> {
        let mut cfg = TrainConfig {
            method: "relative-patch".into(),
            width: 4,
            ..Default::default()
        };
        cfg.pretext.patch_size = patch_size;
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 1, DType::F32, &Device::Cpu);
        RelativePatch::new(
            &cfg,
            DataShape {
                channels: 1,
                size,
                images: 1,
                clip_len: 1,
                ..DataShape::default()
            },
            vb,
        )
    }

    #[test]
    fn pretext_eval_counts_the_pairs_whose_argmax_is_the_target() {
        let dev = Device::Cpu;
        let m = build(28, 0).unwrap();
        assert_eq!(m.views.view_size(), 14);
        let n = 6;
        let views: Vec<Tensor> = (0..2)
            .map(|_| Tensor::randn(0f32, 1.0, (n, 1, 14, 14), &dev).unwrap())
            .collect();
        let predicted = m
            .logits(&views, false)
            .unwrap()
            .argmax(1)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        // Rows 1, 2 and 5 get their predicted class as target, the others a wrong one.
        let targets: Vec<u32> = predicted
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                if [1, 2, 5].contains(&i) {
                    p
                } else {
                    (p + 3) % 8
                }
            })
            .collect();
        let batch = Batch {
            views,
            labels: None,
            indices: (0..n).collect(),
            targets: Some(Tensor::from_vec(targets, (n, 1), &dev).unwrap()),
        };
        let tally = m.pretext_eval(&batch).unwrap();
        assert_eq!(tally, PretextTally { sum: 3.0, count: n });
        assert_eq!(m.pretext_eval(&batch).unwrap(), tally, "eval changed state");
        assert_eq!(m.pretext_metric(), Some(PretextMetric::Top1));
        let unlabelled = Batch {
            targets: None,
            ..batch
        };
        assert!(m.pretext_eval(&unlabelled).is_err());
    }

    #[test]
    fn patch_size_setting_and_small_images() {
        assert_eq!(build(28, 9).unwrap().views.view_size(), 9);
        let e = build(10, 0).err().unwrap().to_string();
        assert!(e.contains("grid") && e.contains("10x10"), "{e}");
    }
}
