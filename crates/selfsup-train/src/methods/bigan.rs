//! BiGAN (Donahue et al. 2017, "Adversarial Feature Learning"; also ALI, Dumoulin
//! et al. 2017): an encoder E maps images to codes, a generator G maps codes to
//! images, and a discriminator tells `(x, E(x))` from `(G(z), z)`. At the optimum E
//! inverts G; the representation is E.
use super::latents::Latents;
use super::samples::{keep, write_rows};
use super::side::{SideNet, GAN_BETAS};
use super::{encoder_kind, DataShape, Normalization};
use crate::config::TrainConfig;
use crate::method::{Method, ENCODER_PREFIX};
use crate::Result;
use candle_core::{Device, Tensor};
use candle_nn::{Linear, Module, ModuleT, VarBuilder};
use selfsup_data::views::Identity;
use selfsup_data::{Batch, ViewRecipe};
use selfsup_dist::Communicator;
use selfsup_encoders::{torch_linear, Encoder};
use selfsup_generative::{discriminator_loss, Decoder, JointDiscriminator};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The artefact grid, overwritten at every checkpoint: real images, their
/// reconstructions `G(E(x))`, and samples `G(z)` from fixed codes.
pub const BIGAN_FILE: &str = "bigan.png";

/// The run's optimizer trains E (the shared encoder and a linear layer from its
/// pooled features to a `generative.latent-dim` code) and G (a [`Decoder`] with its
/// output bounded to the valid pixel range) together, on the discriminator's loss
/// with the labels swapped, through a frozen copy of the discriminator. The
/// [`JointDiscriminator`] is a [`SideNet`] trained after each step on the same
/// batch's detached pairs. Both use DCGAN's Adam (2e-4, β1 = 0.5).
pub struct Bigan {
    encoder: Box<dyn Encoder>,
    to_code: Linear,
    generator: Decoder,
    discriminator: SideNet<JointDiscriminator>,
    latents: Latents,
    normalization: Normalization,
    /// Weight of the cycle-consistency term `|G(E(x)) − x|²` (0 for plain BiGAN).
    cycle_weight: f64,
    device: Device,
    /// The last batch's detached `(x, E(x))` and `(G(z), z)`, for the discriminator.
    pending: Option<[Tensor; 4]>,
    /// Host copies of real images of the last training batch.
    shown: Option<Tensor>,
}

impl Bigan {
    /// Builds E under `encoder.` and `code.`, G under `generator.`, and the
    /// discriminator outside the run.
    ///
    /// # Errors
    /// For an unknown encoder, or images too small for it.
    pub fn new(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Self> {
        let encoder = encoder_kind(cfg)?.build(data.channels, vb.pp(ENCODER_PREFIX))?;
        let latent_dim = cfg.generative.latent_dim;
        let to_code = torch_linear(encoder.feature_dim(), latent_dim, vb.pp("code"))?;
        let (lo, hi) = data.normalization.value_range(data.channels);
        let generator = Decoder::new(
            latent_dim,
            data.channels,
            data.size,
            cfg.width,
            vb.pp("generator"),
        )?
        .with_output_range(&lo, &hi)?;
        let discriminator =
            SideNet::new("discriminator", cfg.seed, vb.device(), GAN_BETAS, |vb| {
                JointDiscriminator::new(data.channels, latent_dim, cfg.width, vb)
            })?;
        Ok(Self {
            encoder,
            to_code,
            generator,
            discriminator,
            latents: Latents::new(cfg.seed, latent_dim)?,
            normalization: data.normalization,
            cycle_weight: cfg.generative.cycle_weight,
            device: vb.device().clone(),
            pending: None,
            shown: None,
        })
    }

    /// E(x): the code of each image.
    fn encode(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.to_code.forward(&self.encoder.forward_t(x, train)?)
    }
}

impl Method for Bigan {
    fn name(&self) -> &'static str {
        "bigan"
    }

    /// The discriminator's gradients are averaged like the run's; each rank draws its rows
    /// of the global batch's codes.
    fn join_group(&mut self, comm: Arc<dyn Communicator>) -> std::result::Result<(), String> {
        self.latents.shard(comm.rank(), comm.world_size());
        self.discriminator
            .join_group(comm)
            .map_err(|e| e.to_string())
    }

    fn views(&self) -> Arc<dyn ViewRecipe> {
        Arc::new(Identity)
    }

    /// E and G's loss: the discriminator's, with `(G(z), z)` labelled real and
    /// `(x, E(x))` fake, plus `cycle_weight` times the mean squared error of
    /// `G(E(x))` against `x` when that weight is positive (ALICE's explicit
    /// cycle consistency, Li et al. 2017).
    fn loss(&mut self, batch: &Batch) -> candle_core::Result<Tensor> {
        let [x] = batch.views.as_slice() else {
            candle_core::bail!("bigan expects 1 view per image, got {}", batch.views.len())
        };
        let code = self.encode(x, true)?;
        let z = self.latents.draw(x.dim(0)?, &self.device)?;
        let fake = self.generator.forward_t(&z, true)?;
        let d = self.discriminator.net.frozen();
        let mut loss = discriminator_loss(&d.forward(&fake, &z)?, &d.forward(x, &code)?)?;
        if self.cycle_weight > 0.0 {
            let rebuilt = self.generator.forward_t(&code, true)?;
            let cycle = (rebuilt - x)?.sqr()?.mean_all()?;
            loss = (loss + (cycle * self.cycle_weight)?)?;
        }
        self.pending = Some([x.detach(), code.detach(), fake.detach(), z]);
        self.shown = Some(keep(x)?);
        Ok(loss)
    }

    /// The discriminator's step on the last batch's pairs.
    fn side_step(&mut self, _batch: &Batch, lr: f64) -> candle_core::Result<Option<f32>> {
        let Some([x, code, fake, z]) = self.pending.take() else {
            return Ok(None);
        };
        let d = &self.discriminator.net;
        let loss = discriminator_loss(&d.forward(&x, &code)?, &d.forward(&fake, &z)?)?;
        self.discriminator.step(&loss, lr)
    }

    fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    /// Overwrites [`BIGAN_FILE`], with every network in evaluation mode.
    fn write_artifacts(&self, run_dir: &Path, _step: usize) -> Result<()> {
        let Some(real) = &self.shown else {
            return Ok(());
        };
        let x = real.to_device(&self.device)?;
        let rebuilt = self.generator.forward_t(&self.encode(&x, false)?, false)?;
        let z = self.latents.fixed(x.dim(0)?, &self.device)?;
        let samples = self.generator.forward_t(&z, false)?;
        let rows = [x, rebuilt, samples];
        write_rows(&run_dir.join(BIGAN_FILE), &rows, &self.normalization)
    }

    /// The discriminator (weights and Adam state) and the code counter.
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut state = self.discriminator.state();
        state.push(self.latents.state());
        state
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> candle_core::Result<()> {
        self.discriminator.load_state(state)?;
        self.latents.load_state(state)
    }
}
