//! Odd-one-out (Fernando, Bilen, Gavves, Gould 2017, "Self-Supervised Video
//! Representation Learning With Odd-One-Out Networks"): of several sub-clips of a
//! video, which one has its frames out of order?
use super::frame_order::{FrameOrder, FrameOrderNet, FrameRecipe};
use super::DataShape;
use crate::config::TrainConfig;
use crate::Result;
use candle_nn::VarBuilder;
use selfsup_data::pretext::OddOneOutViews;
use selfsup_data::ViewRecipe;
use std::sync::Arc;

/// Odd-one-out: the `N` sub-clips' frames through a [`FrameOrderNet`] whose head reads
/// each sub-clip's stack of differences (the fusion Fernando et al. found best), `N`-way
/// cross-entropy against the odd sub-clip's index ([`OddOneOutViews`]).
pub type OddOneOut = FrameOrder<OddOneOutViews>;

impl FrameRecipe for OddOneOutViews {
    const METHOD: &'static str = "odd-one-out";
}

impl OddOneOut {
    /// Odd-one-out with `cfg.pretext.questions` sub-clips of `cfg.pretext.question_frames`
    /// frames, cropped as Shuffle & Learn's frames are.
    ///
    /// # Errors
    /// If the data are not video clips long enough for the sub-clips, or for an unknown
    /// encoder.
    pub fn new(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Self> {
        let views = OddOneOutViews {
            clip_len: data.clip_len,
            frame_height: data.size,
            crop_scale: (cfg.pretext.frame_crop, 1.0),
            crop_per_frame: cfg.pretext.frame_crop_per_frame,
            questions: cfg.pretext.questions,
            frames: cfg.pretext.question_frames,
        };
        let net = FrameOrderNet::new(
            OddOneOutViews::METHOD,
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
