//! Odd-one-out (Fernando, Bilen, Gavves, Gould 2017, "Self-Supervised Video
//! Representation Learning With Odd-One-Out Networks"): of several sub-clips of a
//! video, which one has its frames out of order?
use super::classification::{batch_targets, ClassificationTask};
use super::{encoder_kind, map_len, require_clips, DataShape};
use crate::config::TrainConfig;
use crate::method::ENCODER_PREFIX;
use crate::Result;
use candle_core::Tensor;
use candle_nn::{Module, VarBuilder};
use selfsup_data::pretext::OddOneOutViews;
use selfsup_data::{Batch, ViewRecipe};
use selfsup_encoders::Encoder;
use selfsup_pretext::{classify, stack_of_differences, Classified, FrameEmbedding, MlpHead};
use std::sync::Arc;

/// Odd-one-out: every frame of the `N` sub-clips → one tower (one batch): the encoder's
/// feature map and a [`FrameEmbedding`] → per sub-clip the differences of successive
/// frames' embeddings, all concatenated ([`stack_of_differences`]) → [`MlpHead`] with
/// one hidden layer → `N`-way cross-entropy against the odd sub-clip's index
/// ([`OddOneOutViews`]).
pub struct OddOneOut {
    encoder: Box<dyn Encoder>,
    embed: FrameEmbedding,
    head: MlpHead,
    views: Arc<OddOneOutViews>,
}

impl OddOneOut {
    /// Builds the frame encoder under `encoder.`, the frame embedding under `frame.` and
    /// the classifier under `head.`, with
    /// `cfg.pretext.questions` sub-clips of `cfg.pretext.question_frames` frames.
    ///
    /// # Errors
    /// If the data are not video clips long enough for the sub-clips, or for an unknown
    /// encoder.
    pub fn new(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Self> {
        require_clips("odd-one-out", data)?;
        let views = OddOneOutViews {
            clip_len: data.clip_len,
            frame_height: data.size,
            crop_scale: (cfg.pretext.frame_crop, 1.0),
            questions: cfg.pretext.questions,
            frames: cfg.pretext.question_frames,
        };
        views.validate()?;
        let encoder = encoder_kind(cfg)?.build(data.channels, vb.pp(ENCODER_PREFIX))?;
        let dim = encoder.feature_dim();
        let embed = FrameEmbedding::new(
            map_len(encoder.as_ref(), data, vb.device())?,
            dim,
            vb.pp("frame"),
        )?;
        let fused = views.questions * (views.frames - 1) * dim;
        let head = MlpHead::new(fused, dim, views.questions, vb.pp("head"))?;
        Ok(Self {
            encoder,
            embed,
            head,
            views: Arc::new(views),
        })
    }

    /// Odd-one logits of each question.
    ///
    /// # Shapes
    /// `N·F` views of `(B, C, H, W)` to `(B, N)`.
    fn logits(&self, views: &[Tensor], train: bool) -> candle_core::Result<Tensor> {
        let (questions, frames) = (self.views.questions, self.views.frames);
        if views.len() != questions * frames {
            candle_core::bail!(
                "odd-one-out expects {questions} sub-clips of {frames} frames, got {} views",
                views.len()
            )
        }
        let maps = self.encoder.forward_map(&Tensor::cat(views, 0)?, train)?;
        let features = self.embed.forward(&maps)?;
        self.head
            .forward(&stack_of_differences(&features, questions, frames)?)
    }
}

impl ClassificationTask for OddOneOut {
    const NAME: &'static str = "odd-one-out";

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
