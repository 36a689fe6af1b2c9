//! Shuffle & Learn (Misra, Zitnick, Hebert 2016, "Shuffle and Learn: Unsupervised
//! Learning using Temporal Order Verification"): is the middle frame of a tuple between
//! the other two in time?
use super::classification::{batch_targets, ClassificationTask};
use super::{encoder_kind, map_len, require_clips, DataShape};
use crate::config::TrainConfig;
use crate::method::ENCODER_PREFIX;
use crate::Result;
use candle_core::Tensor;
use candle_nn::{Module, VarBuilder};
use selfsup_data::pretext::ShuffleLearnViews;
use selfsup_data::{Batch, ViewRecipe};
use selfsup_encoders::Encoder;
use selfsup_pretext::{classify, stack_of_differences, Classified, FrameEmbedding, MlpHead};
use std::sync::Arc;

/// Frames per tuple.
const TUPLE: usize = 3;

/// Shuffle & Learn: the tuple's three frames → one siamese tower (one batch of `3N`):
/// the encoder's feature map and a [`FrameEmbedding`] → the differences of successive
/// embeddings, concatenated ([`stack_of_differences`]) → [`MlpHead`] with one hidden
/// layer → in order or not, with cross-entropy over balanced positives and negatives
/// ([`ShuffleLearnViews`]).
///
/// Misra et al. concatenate the three embeddings themselves. On one short video
/// (vtest.avi, 39 training clips) that head memorises the clips: training loss 0.01,
/// held-out accuracy 69.7%. Differences cancel the static scene, which is all that tells
/// the clips apart, and keep the motion, which is what order is about
/// (docs/methods.md).
pub struct ShuffleLearn {
    encoder: Box<dyn Encoder>,
    embed: FrameEmbedding,
    head: MlpHead,
    views: Arc<ShuffleLearnViews>,
}

impl ShuffleLearn {
    /// Builds the frame encoder under `encoder.`, the frame embedding under `frame.` and
    /// the classifier under `head.`.
    ///
    /// # Errors
    /// If the data are not video clips long enough for a tuple, or for an unknown encoder.
    pub fn new(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Self> {
        require_clips("shuffle-learn", data)?;
        let views = ShuffleLearnViews {
            clip_len: data.clip_len,
            frame_height: data.size,
            crop_scale: (cfg.pretext.frame_crop, 1.0),
        };
        views.validate()?;
        let encoder = encoder_kind(cfg)?.build(data.channels, vb.pp(ENCODER_PREFIX))?;
        let dim = encoder.feature_dim();
        let embed = FrameEmbedding::new(
            map_len(encoder.as_ref(), data, vb.device())?,
            dim,
            vb.pp("frame"),
        )?;
        let head = MlpHead::new((TUPLE - 1) * dim, dim, 2, vb.pp("head"))?;
        Ok(Self {
            encoder,
            embed,
            head,
            views: Arc::new(views),
        })
    }

    /// In-order logits of each tuple.
    ///
    /// # Shapes
    /// 3 views of `(N, C, H, W)` to `(N, 2)`.
    fn logits(&self, views: &[Tensor], train: bool) -> candle_core::Result<Tensor> {
        if views.len() != TUPLE {
            candle_core::bail!(
                "shuffle-learn expects {TUPLE} frames per tuple, got {}",
                views.len()
            )
        }
        let maps = self.encoder.forward_map(&Tensor::cat(views, 0)?, train)?;
        let features = self.embed.forward(&maps)?;
        self.head
            .forward(&stack_of_differences(&features, 1, TUPLE)?)
    }
}

impl ClassificationTask for ShuffleLearn {
    const NAME: &'static str = "shuffle-learn";

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
