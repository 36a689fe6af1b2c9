//! Shuffle & Learn (Misra, Zitnick, Hebert 2016, "Shuffle and Learn: Unsupervised
//! Learning using Temporal Order Verification"): is the middle frame of a tuple between
//! the other two in time?
use super::frame_order::{FrameOrder, FrameOrderNet, FrameRecipe};
use super::DataShape;
use crate::config::TrainConfig;
use crate::Result;
use candle_nn::VarBuilder;
use selfsup_data::pretext::ShuffleLearnViews;
use selfsup_data::ViewRecipe;
use std::sync::Arc;

/// Frames per tuple.
const TUPLE: usize = 3;

/// Shuffle & Learn: the tuple's three frames through a siamese [`FrameOrderNet`] whose
/// head reads the differences of successive embeddings (e_c − e_b, e_d − e_c), in order
/// or not, with cross-entropy over balanced positives and negatives
/// ([`ShuffleLearnViews`]).
///
/// Misra et al. concatenate the three embeddings themselves. On one short video
/// (vtest.avi, 37 training clips) that head memorises the clips: training loss 0.01,
/// held-out accuracy 69.7% (docs/methods.md). Differences cancel the static scene and
/// keep the motion, which is what order is about.
pub type ShuffleLearn = FrameOrder<ShuffleLearnViews>;

impl FrameRecipe for ShuffleLearnViews {
    const METHOD: &'static str = "shuffle-learn";
}

impl ShuffleLearn {
    /// Shuffle & Learn on the clips of `data`, its frames cropped to at least
    /// `cfg.pretext.frame_crop` of their area, one crop for all or one each
    /// (`cfg.pretext.frame_crop_per_frame`).
    ///
    /// # Errors
    /// If the data are not video clips long enough for a tuple, or for an unknown encoder.
    pub fn new(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Self> {
        let net = FrameOrderNet::new(ShuffleLearnViews::METHOD, cfg, data, vb, (1, TUPLE, 2))?;
        let views = ShuffleLearnViews {
            clip_len: data.clip_len,
            frame_height: data.size,
            crop_scale: (cfg.pretext.frame_crop, 1.0),
            crop_per_frame: cfg.pretext.frame_crop_per_frame,
        };
        views.validate()?;
        Ok(Self {
            net,
            views: Arc::new(views),
        })
    }
}
