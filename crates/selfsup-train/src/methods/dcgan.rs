//! DCGAN (Radford et al. 2016, "Unsupervised Representation Learning with Deep
//! Convolutional Generative Adversarial Networks"): a generator of up-convolutions
//! with batch norm and a `tanh` output plays against a convolutional
//! discriminator; the representation is the discriminator's features, as the
//! paper evaluated it.
use super::latents::Latents;
use super::samples::{keep, write_rows, SHOWN};
use super::side::{SideNet, GAN_BETAS};
use super::{encoder_kind, DataShape, Normalization};
use crate::config::TrainConfig;
use crate::method::{Method, ENCODER_PREFIX};
use crate::optim::is_running_stat;
use crate::Result;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Linear, Module, ModuleT, VarMap};
use selfsup_data::views::Identity;
use selfsup_data::{Batch, ViewRecipe};
use selfsup_dist::Communicator;
use selfsup_encoders::{seeded_var_builder, torch_linear, Encoder};
use selfsup_generative::{discriminator_loss, generator_loss, Decoder};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The artefact grid, overwritten at every checkpoint: two rows of samples from
/// fixed codes, then a row of real images.
pub const SAMPLES_FILE: &str = "samples.png";

/// The discriminator is the shared encoder (its pooled features are the
/// representation) with a linear layer to one logit, trained by the run's optimizer
/// on real images against the generator's samples. The generator, a [`Decoder`]
/// from `generative.latent-dim` Gaussian codes with its output bounded to the valid
/// pixel range, is a [`SideNet`] trained after each step with the non-saturating
/// loss through the updated discriminator. Both use DCGAN's Adam (2e-4, β1 = 0.5).
///
/// The discriminator sees real and fake images in separate batches, as in the
/// paper's code; the generator's step leaves its running statistics as they were,
/// so that they describe real and generated images alike and no generator step
/// changes the discriminator.
pub struct Dcgan {
    encoder: Box<dyn Encoder>,
    head: Linear,
    generator: SideNet<Decoder>,
    latents: Latents,
    /// The discriminator's batch-norm running statistics.
    running: Vec<Var>,
    normalization: Normalization,
    device: Device,
    /// Host copies of real images of the last training batch.
    shown: Option<Tensor>,
}

impl Dcgan {
    /// Builds the discriminator in `varmap` (encoder under `encoder.`, logit under
    /// `head.`) and the generator outside it.
    ///
    /// # Errors
    /// For an unknown encoder, or images too small for it.
    pub fn new(
        cfg: &TrainConfig,
        data: DataShape,
        varmap: &VarMap,
        device: &Device,
    ) -> Result<Self> {
        let vb = seeded_var_builder(varmap, cfg.seed, DType::F32, device);
        let encoder = encoder_kind(cfg)?.build(data.channels, vb.pp(ENCODER_PREFIX))?;
        let head = torch_linear(encoder.feature_dim(), 1, vb.pp("head"))?;
        let latent_dim = cfg.generative.latent_dim;
        let (lo, hi) = data.normalization.value_range(data.channels);
        let generator = SideNet::new("generator", cfg.seed, device, GAN_BETAS, |vb| {
            Decoder::new(latent_dim, data.channels, data.size, cfg.width, vb)?
                .with_output_range(&lo, &hi)
        })?;
        let running = {
            let vars = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
            let mut named: Vec<_> = vars.iter().filter(|(k, _)| is_running_stat(k)).collect();
            named.sort_by(|a, b| a.0.cmp(b.0));
            named.into_iter().map(|(_, v)| v.clone()).collect()
        };
        Ok(Self {
            encoder,
            head,
            generator,
            latents: Latents::new(cfg.seed, latent_dim)?,
            running,
            normalization: data.normalization,
            device: device.clone(),
            shown: None,
        })
    }

    /// The discriminator's logits, in training mode (batch statistics).
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.head
            .forward(&self.encoder.forward_t(x, true)?)?
            .squeeze(1)
    }

    fn real(batch: &Batch) -> candle_core::Result<&Tensor> {
        match batch.views.as_slice() {
            [x] => Ok(x),
            other => candle_core::bail!("GANs expect 1 view per image, got {}", other.len()),
        }
    }
}

impl Method for Dcgan {
    fn name(&self) -> &'static str {
        "dcgan"
    }

    /// The generator's gradients are averaged like the run's; each rank draws its rows
    /// of the global batch's codes.
    fn join_group(&mut self, comm: Arc<dyn Communicator>) -> std::result::Result<(), String> {
        self.latents.shard(comm.rank(), comm.world_size());
        self.generator.join_group(comm).map_err(|e| e.to_string())
    }

    fn views(&self) -> Arc<dyn ViewRecipe> {
        Arc::new(Identity)
    }

    /// The discriminator's loss on the batch against as many (detached) samples.
    fn loss(&mut self, batch: &Batch) -> candle_core::Result<Tensor> {
        let real = Self::real(batch)?;
        let z = self.latents.draw(real.dim(0)?, &self.device)?;
        let fake = self.generator.net.forward_t(&z, true)?.detach();
        self.shown = Some(keep(real)?);
        // Fakes first, so that the last update of the running statistics is real images'.
        let fake_logits = self.logits(&fake)?;
        discriminator_loss(&self.logits(real)?, &fake_logits)
    }

    /// The generator's step: fresh samples, labelled real, through the updated
    /// discriminator, whose running statistics are restored afterwards.
    fn side_step(&mut self, batch: &Batch, lr: f64) -> candle_core::Result<Option<f32>> {
        let n = Self::real(batch)?.dim(0)?;
        let z = self.latents.draw(n, &self.device)?;
        let fake = self.generator.net.forward_t(&z, true)?;
        let saved = self
            .running
            .iter()
            .map(|v| v.as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let loss = generator_loss(&self.logits(&fake)?)?;
        for (var, value) in self.running.iter().zip(&saved) {
            var.set(value)?;
        }
        self.generator.step(&loss, lr)
    }

    fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    /// Overwrites [`SAMPLES_FILE`] with samples of the generator in evaluation mode.
    fn write_artifacts(&self, run_dir: &Path, _step: usize) -> Result<()> {
        let Some(real) = &self.shown else {
            return Ok(());
        };
        let z = self.latents.fixed(2 * SHOWN, &self.device)?;
        let fake = self.generator.net.forward_t(&z, false)?;
        let rows = [
            fake.narrow(0, 0, SHOWN)?,
            fake.narrow(0, SHOWN, SHOWN)?,
            real.clone(),
        ];
        write_rows(&run_dir.join(SAMPLES_FILE), &rows, &self.normalization)
    }

    /// The generator (weights, running statistics, Adam state) and the code counter.
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut state = self.generator.state();
        state.push(self.latents.state());
        state
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> candle_core::Result<()> {
        self.generator.load_state(state)?;
        self.latents.load_state(state)
    }
}
