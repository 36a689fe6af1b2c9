//! SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
//! Representations"): two augmented views per image, a projection head, and NT-Xent.
use super::{encoder_kind, DataShape};
use crate::config::TrainConfig;
use crate::method::{Method, ENCODER_PREFIX};
use crate::{Result, TrainError};
use candle_core::Tensor;
use candle_nn::{ModuleT, VarBuilder};
use selfsup_contrastive::{nt_xent, ProjectionHead};
use selfsup_data::{Batch, ColorJitter, SimclrViews, ViewRecipe};
use selfsup_dist::tensor::all_gather_rows;
use selfsup_dist::{Communicator, SingleProcess};
use selfsup_encoders::Encoder;
use std::sync::Arc;

/// SimCLR: encoder → projection head → NT-Xent between the two views of each image.
///
/// In a data-parallel run the projections of every rank are gathered before the
/// loss, so that negatives come from the whole global batch, as one process at the
/// global batch size would use (the bug of lightly issue 1018 is leaving them local).
pub struct SimClr {
    encoder: Box<dyn Encoder>,
    head: ProjectionHead,
    views: Arc<SimclrViews>,
    temperature: f64,
    group: Arc<dyn Communicator>,
}

impl SimClr {
    /// Builds the encoder that `cfg.encoder` names under `encoder.` and the head under `head.`.
    ///
    /// # Errors
    /// For an unknown encoder or a batch too small to hold negatives.
    pub fn new(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Self> {
        if cfg.batch_size < 2 {
            return Err(TrainError::config(
                "batch-size",
                format!(
                    "SimCLR needs at least 2 images per batch for negatives, got {}",
                    cfg.batch_size
                ),
            ));
        }
        let kind = encoder_kind(cfg)?;
        let encoder = kind.build(data.channels, vb.pp(ENCODER_PREFIX))?;
        let dim = encoder.feature_dim();
        let head = ProjectionHead::new(dim, dim, cfg.projection_dim, vb.pp("head"))?;
        Ok(Self {
            encoder,
            head,
            views: Arc::new(simclr_views(cfg, data.size, 2)),
            temperature: cfg.temperature,
            group: Arc::new(SingleProcess),
        })
    }

    /// The projections of view `x`, gathered from every rank in rank order.
    fn project(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let z = self
            .head
            .forward_t(&self.encoder.forward_t(x, true)?, true)?;
        Ok(all_gather_rows(self.group.as_ref(), &z)?)
    }
}

/// `count` views per image with the SimCLR augmentations at `cfg`'s crop scale and
/// jitter strength (hue at a quarter of it); shared by SimCLR, MoCo, NPID and PIRL.
pub(super) fn simclr_views(cfg: &TrainConfig, size: usize, count: usize) -> SimclrViews {
    let mut views = SimclrViews::for_size(size);
    views.count = count;
    views.crop_scale = (cfg.crop_min_scale, 1.0);
    views.jitter_p = cfg.jitter_p;
    views.jitter = ColorJitter::new(
        cfg.jitter,
        cfg.jitter,
        cfg.jitter,
        (cfg.jitter * 0.25).min(0.5),
    );
    views
}

impl Method for SimClr {
    fn name(&self) -> &'static str {
        "simclr"
    }

    fn views(&self) -> Arc<dyn ViewRecipe> {
        self.views.clone()
    }

    fn loss(&mut self, batch: &Batch) -> candle_core::Result<Tensor> {
        let [v0, v1] = batch.views.as_slice() else {
            candle_core::bail!(
                "SimCLR expects 2 views per image, got {}",
                batch.views.len()
            )
        };
        // One forward pass per view, so batch norm normalises each view on its own
        // statistics, as lightly's and solo-learn's SimCLR do.
        nt_xent(&self.project(v0)?, &self.project(v1)?, self.temperature)
    }

    fn join_group(&mut self, comm: Arc<dyn Communicator>) -> std::result::Result<(), String> {
        self.group = comm;
        Ok(())
    }

    fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }
}
