//! PIRL (Misra & van der Maaten 2020, "Self-Supervised Learning of Pretext-Invariant
//! Representations"): an image and its jigsaw-shuffled tiles must map to the same
//! memory-bank slot, so the representation becomes invariant to the pretext
//! transformation instead of predicting it.
use super::bank::BankObjective;
use super::jigsaw::jigsaw_tiles;
use super::simclr::simclr_views;
use super::{encoder_kind, DataShape};
use crate::config::TrainConfig;
use crate::method::{Method, ENCODER_PREFIX};
use crate::Result;
use candle_core::Tensor;
use candle_nn::{Linear, Module, VarBuilder};
use selfsup_data::pretext::PirlViews;
use selfsup_data::{Batch, ViewRecipe};
use selfsup_dist::Communicator;
use selfsup_encoders::{torch_linear, Encoder};
use selfsup_pretext::concat_views;
use std::collections::HashMap;
use std::sync::Arc;

/// PIRL: both branches share the encoder.
///
/// - Image branch `f`: the augmented image → encoder → linear to `projection_dim`.
/// - Jigsaw branch `g`: `grid²` tiles in random order → encoder → a linear layer per
///   tile (shared, to `projection_dim`) → concatenation in view order → linear to
///   `projection_dim`.
///
/// Loss `λ·L(g(tiles), m_i) + (1 − λ)·L(f(image), m_i)` with λ = `contrastive.pirl_weight`,
/// τ = 0.07 and both terms against the same bank slot `m_i` and the same K negatives.
/// The bank is updated with `f(image)` only. Tiles are not normalised one by one
/// (the loader normalises every view with the dataset's statistics).
pub struct Pirl {
    encoder: Box<dyn Encoder>,
    image_head: Linear,
    tile_head: Linear,
    jigsaw_head: Linear,
    views: Arc<PirlViews>,
    objective: BankObjective,
    weight: f64,
}

impl Pirl {
    /// Builds the encoder under `encoder.`, the heads under `head.image`, `head.tile` and
    /// `head.jigsaw`, and a bank of `data.images` slots.
    ///
    /// # Errors
    /// For an unknown encoder, images too small for the grid, K too large for the
    /// dataset, or a bank that does not fit.
    pub fn new(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Self> {
        let mut tiles = jigsaw_tiles(cfg, data)?;
        tiles.normalize = false;
        let views = PirlViews {
            image: simclr_views(cfg, data.size, 1),
            tiles,
            tiles_from_view: cfg.contrastive.pirl_tiles_from_view,
        };
        views.validate()?;
        let encoder = encoder_kind(cfg)?.build(data.channels, vb.pp(ENCODER_PREFIX))?;
        let (feat, dim) = (encoder.feature_dim(), cfg.projection_dim);
        let heads = vb.pp("head");
        let count = views.tiles.count();
        Ok(Self {
            image_head: torch_linear(feat, dim, heads.pp("image"))?,
            tile_head: torch_linear(feat, dim, heads.pp("tile"))?,
            jigsaw_head: torch_linear(count * dim, dim, heads.pp("jigsaw"))?,
            objective: BankObjective::new(cfg, data.images, dim, vb.device())?,
            encoder,
            views: Arc::new(views),
            weight: cfg.contrastive.pirl_weight,
        })
    }
}

impl Method for Pirl {
    fn name(&self) -> &'static str {
        "pirl"
    }

    /// Both losses are means over samples; the bank is shared as NPID shares it (see
    /// [`BankObjective`]).
    fn join_group(&mut self, comm: Arc<dyn Communicator>) -> std::result::Result<(), String> {
        self.objective.join_group(comm);
        Ok(())
    }

    fn views(&self) -> Arc<dyn ViewRecipe> {
        self.views.clone()
    }

    fn loss(&mut self, batch: &Batch) -> candle_core::Result<Tensor> {
        let count = self.views.num_views();
        let Some((image, tiles)) = batch
            .views
            .split_first()
            .filter(|_| batch.views.len() == count)
        else {
            candle_core::bail!(
                "PIRL expects {count} views per image (the image and its tiles), got {}",
                batch.views.len()
            )
        };
        let f = self
            .image_head
            .forward(&self.encoder.forward_t(image, true)?)?;
        let tile_features = self.encoder.forward_t(&Tensor::cat(tiles, 0)?, true)?;
        let per_tile = self.tile_head.forward(&tile_features)?;
        let g = self
            .jigsaw_head
            .forward(&concat_views(&per_tile, tiles.len())?)?;
        let (positives, negatives) = self.objective.targets(&batch.indices, &f)?;
        let jigsaw_loss = self.objective.loss(&g, &positives, &negatives)?;
        let image_loss = self.objective.loss(&f, &positives, &negatives)?;
        self.objective.remember(&f);
        (jigsaw_loss * self.weight)? + (image_loss * (1.0 - self.weight))?
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
