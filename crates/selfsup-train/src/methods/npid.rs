//! NPID (Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance
//! Discrimination"): every image is its own class, represented by a running average
//! of its features in a memory bank.
use super::bank::BankObjective;
use super::simclr::simclr_views;
use super::{encoder_kind, DataShape};
use crate::config::TrainConfig;
use crate::method::{Method, ENCODER_PREFIX};
use crate::Result;
use candle_core::Tensor;
use candle_nn::{Linear, Module, VarBuilder};
use selfsup_data::{Batch, SimclrViews, ViewRecipe};
use selfsup_dist::Communicator;
use selfsup_encoders::{torch_linear, Encoder};
use std::collections::HashMap;
use std::sync::Arc;

/// NPID: one augmented view → encoder → linear layer to `projection_dim` → L2-normalised
/// feature, scored against its bank slot and K bank negatives (NCE by default,
/// τ = 0.07). After the step the slot moves towards the feature with momentum 0.5.
pub struct Npid {
    encoder: Box<dyn Encoder>,
    head: Linear,
    views: Arc<SimclrViews>,
    objective: BankObjective,
}

impl Npid {
    /// Builds the encoder under `encoder.`, the linear head under `head.` and a bank of
    /// `data.images` slots.
    ///
    /// # Errors
    /// For an unknown encoder, K too large for the dataset, or a bank that does not fit.
    pub fn new(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Self> {
        let encoder = encoder_kind(cfg)?.build(data.channels, vb.pp(ENCODER_PREFIX))?;
        let head = torch_linear(encoder.feature_dim(), cfg.projection_dim, vb.pp("head"))?;
        let objective = BankObjective::new(cfg, data.images, cfg.projection_dim, vb.device())?;
        Ok(Self {
            encoder,
            head,
            views: Arc::new(simclr_views(cfg, data.size, 1)),
            objective,
        })
    }
}

impl Method for Npid {
    fn name(&self) -> &'static str {
        "npid"
    }

    /// The loss is a mean over samples; the bank is shared (see [`BankObjective`]).
    fn join_group(&mut self, comm: Arc<dyn Communicator>) -> std::result::Result<(), String> {
        self.objective.join_group(comm);
        Ok(())
    }

    fn views(&self) -> Arc<dyn ViewRecipe> {
        self.views.clone()
    }

    fn loss(&mut self, batch: &Batch) -> candle_core::Result<Tensor> {
        let [view] = batch.views.as_slice() else {
            candle_core::bail!("NPID expects 1 view per image, got {}", batch.views.len())
        };
        let features = self.head.forward(&self.encoder.forward_t(view, true)?)?;
        let (positives, negatives) = self.objective.targets(&batch.indices, &features)?;
        let loss = self.objective.loss(&features, &positives, &negatives)?;
        self.objective.remember(&features);
        Ok(loss)
    }

    fn after_step(&mut self, batch: &Batch) -> candle_core::Result<()> {
        self.objective.commit(&batch.indices)
    }

    fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        self.objective.state()
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> candle_core::Result<()> {
        self.objective.load_state(state)
    }
}
