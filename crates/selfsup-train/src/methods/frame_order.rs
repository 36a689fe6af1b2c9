//! The network that Shuffle & Learn and odd-one-out share: a frame tower and a head
//! over the differences of successive frames, in groups ("sub-clips") of frames.
use super::classification::{batch_targets, ClassificationTask};
use super::{encoder_kind, map_len, require_clips, DataShape};
use crate::config::TrainConfig;
use crate::method::ENCODER_PREFIX;
use crate::Result;
use candle_core::Tensor;
use candle_nn::{Module, VarBuilder};
use selfsup_data::{Batch, ViewRecipe};
use selfsup_encoders::Encoder;
use selfsup_pretext::{classify, stack_of_differences, Classified, FrameEmbedding, MlpHead};
use std::sync::Arc;

/// A frame-order view recipe and the `--method` it serves.
pub trait FrameRecipe: ViewRecipe + 'static {
    /// The `--method` name.
    const METHOD: &'static str;
}

/// A frame-order method: a [`FrameOrderNet`] trained on the free labels of recipe `V`
/// (Shuffle & Learn's tuples, odd-one-out's questions).
pub struct FrameOrder<V> {
    pub(crate) net: FrameOrderNet,
    pub(crate) views: Arc<V>,
}

impl<V: FrameRecipe> ClassificationTask for FrameOrder<V> {
    const NAME: &'static str = V::METHOD;

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

/// Every frame of a sample's `groups` groups of `frames` frames → one tower (one batch):
/// the encoder's feature map and a [`FrameEmbedding`] → per group the differences of
/// successive embeddings, all concatenated ([`stack_of_differences`]) → [`MlpHead`]
/// with one hidden layer → `classes` logits.
pub(crate) struct FrameOrderNet {
    pub(crate) encoder: Box<dyn Encoder>,
    embed: FrameEmbedding,
    head: MlpHead,
    groups: usize,
    frames: usize,
}

impl FrameOrderNet {
    /// Builds the encoder under `encoder.`, the frame embedding under `frame.` and the
    /// classifier under `head.`, for the clips of `data`.
    ///
    /// # Errors
    /// If `data` are not video clips, or for an unknown encoder.
    pub(crate) fn new(
        method: &str,
        cfg: &TrainConfig,
        data: DataShape,
        vb: VarBuilder,
        (groups, frames, classes): (usize, usize, usize),
    ) -> Result<Self> {
        require_clips(method, data)?;
        let encoder = encoder_kind(cfg)?.build(data.channels, vb.pp(ENCODER_PREFIX))?;
        let dim = encoder.feature_dim();
        let map = map_len(encoder.as_ref(), data, vb.device())?;
        let embed = FrameEmbedding::new(map, dim, vb.pp("frame"))?;
        let fused = groups * (frames - 1) * dim;
        let head = MlpHead::new(fused, dim, classes, vb.pp("head"))?;
        Ok(Self {
            encoder,
            embed,
            head,
            groups,
            frames,
        })
    }

    /// The logits of each sample.
    ///
    /// # Shapes
    /// `groups · frames` views of `(N, C, H, W)`, group-major, to `(N, classes)`.
    pub(crate) fn logits(&self, views: &[Tensor], train: bool) -> candle_core::Result<Tensor> {
        let (groups, frames) = (self.groups, self.frames);
        if views.len() != groups * frames {
            candle_core::bail!(
                "expected {groups} groups of {frames} frames, got {} views",
                views.len()
            )
        }
        let maps = self.encoder.forward_map(&Tensor::cat(views, 0)?, train)?;
        let features = self.embed.forward(&maps)?;
        self.head
            .forward(&stack_of_differences(&features, groups, frames)?)
    }
}
