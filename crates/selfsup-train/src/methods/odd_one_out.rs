//! Odd-one-out (Fernando, Bilen, Gavves, Gould 2017, "Self-Supervised Video
//! Representation Learning With Odd-One-Out Networks"): of several sub-clips of a
//! video, which one has its frames out of order?
use super::classification::{batch_targets, ClassificationTask};
use super::frame_order::FrameOrderNet;
use super::DataShape;
use crate::config::TrainConfig;
use crate::Result;
use candle_nn::VarBuilder;
use selfsup_data::pretext::OddOneOutViews;
use selfsup_data::{Batch, ViewRecipe};
use selfsup_encoders::Encoder;
use selfsup_pretext::{classify, Classified};
use std::sync::Arc;

/// Odd-one-out: the `N` sub-clips' frames through a [`FrameOrderNet`] whose head reads
/// each sub-clip's stack of differences (the fusion Fernando et al. found best), `N`-way
/// cross-entropy against the odd sub-clip's index ([`OddOneOutViews`]).
pub struct OddOneOut {
    net: FrameOrderNet,
    views: Arc<OddOneOutViews>,
}

impl OddOneOut {
    /// Odd-one-out with `cfg.pretext.questions` sub-clips of `cfg.pretext.question_frames`
    /// frames, sharing a crop of `cfg.pretext.frame_crop`.
    ///
    /// # Errors
    /// If the data are not video clips long enough for the sub-clips, or for an unknown
    /// encoder.
    pub fn new(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Self> {
        let views = OddOneOutViews {
            clip_len: data.clip_len,
            frame_height: data.size,
            crop_scale: (cfg.pretext.frame_crop, 1.0),
            questions: cfg.pretext.questions,
            frames: cfg.pretext.question_frames,
        };
        let net = FrameOrderNet::new(
            Self::NAME,
            cfg,
            data,
            vb,
            (views.questions, views.frames, views.questions),
        )?;
        views.validate()?;
        Ok(Self {
            net,
            views: Arc::new(views),
        })
    }
}

impl ClassificationTask for OddOneOut {
    const NAME: &'static str = "odd-one-out";

    fn recipe(&self) -> Arc<dyn ViewRecipe> {
        self.views.clone()
    }

    fn backbone(&self) -> &dyn Encoder {
        self.net.encoder.as_ref()
    }

    fn classified(&self, batch: &Batch, train: bool) -> candle_core::Result<Classified> {
        classify(
            &self.net.logits(&batch.views, train)?,
            batch_targets(batch, Self::NAME)?,
        )
    }
}
