//! The memory-bank objective shared by NPID and PIRL: a feature is pulled towards its
//! own sample's bank slot and pushed from K slots drawn at random.
use crate::config::{BankLoss, TrainConfig};
use crate::{Result, TrainError};
use candle_core::{DType, Device, Tensor};
use selfsup_contrastive::{info_nce, nce, nce_log_normaliser, MemoryBank};
use selfsup_data::Rng;
use selfsup_dist::tensor::{all_gather_indices, all_gather_rows};
use selfsup_dist::{Communicator, SingleProcess};
use std::collections::HashMap;
use std::sync::Arc;

/// RNG stream of negative sampling, kept apart from augmentation (keyed by epoch).
const NEGATIVES_STREAM: u64 = 0x4E45_4741;

/// Errors unless `cfg.contrastive.negatives` plus one batch fit in the `images` of the
/// training split, so that negatives never need to repeat the batch's own images.
pub(super) fn check_negatives(cfg: &TrainConfig, images: usize) -> Result<()> {
    let k = cfg.contrastive.negatives;
    if k + cfg.batch_size > images {
        return Err(TrainError::config(
            "contrastive.negatives",
            format!(
                "{k} negatives plus a batch of {} exceed the {images} training images (K must be at most N − batch)",
                cfg.batch_size
            ),
        ));
    }
    Ok(())
}

/// A step counter as a one-element `i64` tensor, for checkpoints.
pub(super) fn counter_tensor(steps: u64, device: &Device) -> candle_core::Result<Tensor> {
    Tensor::new(&[steps as i64], device)
}

/// Reads the tensor `name` of `state`, with an error that names it when it is missing.
pub(super) fn state_tensor<'a>(
    state: &'a HashMap<String, Tensor>,
    name: &str,
) -> candle_core::Result<&'a Tensor> {
    state
        .get(name)
        .ok_or_else(|| candle_core::Error::Msg(format!("method state lacks `{name}`")))
}

/// Reads a counter written by [`counter_tensor`].
pub(super) fn state_counter(
    state: &HashMap<String, Tensor>,
    name: &str,
) -> candle_core::Result<u64> {
    Ok(state_tensor(state, name)?.to_vec1::<i64>()?[0] as u64)
}

/// A [`MemoryBank`] with its loss, negatives and bookkeeping.
///
/// Each step draws one set of K negatives shared by the whole batch, uniformly from
/// the slots that are not the batch's own, from a stream keyed by (seed, step), so a
/// resumed run draws exactly what an uninterrupted one would. NPID draws K per sample;
/// sharing them makes the negatives one `(K, D)` matrix and the logits one matmul.
///
/// In a data-parallel run ([`BankObjective::join_group`]) every rank keeps the whole
/// bank: the negatives avoid the global batch's slots, NCE's normaliser comes from the
/// global first batch, and every rank writes every rank's features, so the banks stay
/// identical and equal to one process's at the global batch size.
pub(super) struct BankObjective {
    bank: MemoryBank,
    loss: BankLoss,
    negatives: usize,
    momentum: f64,
    temperature: f64,
    seed: u64,
    /// Optimizer steps taken, which keys the negatives' RNG stream.
    steps: u64,
    /// NPID's `ln Z`, fixed on the first batch (NCE only).
    log_z: Option<f64>,
    /// This step's features, written to the bank by [`BankObjective::commit`].
    pending: Option<Tensor>,
    /// The ranks sharing the bank.
    group: Arc<dyn Communicator>,
}

/// Names of the objective's tensors in the checkpoint's method state.
const SLOTS: &str = "bank.slots";
const STEPS: &str = "bank.steps";
const LOG_Z: &str = "bank.log_z";

impl BankObjective {
    /// A bank of `images` slots of size `dim` with `cfg.contrastive`'s loss and settings.
    ///
    /// # Errors
    /// If K plus one batch exceeds the training images, or the bank does not fit in memory.
    pub fn new(cfg: &TrainConfig, images: usize, dim: usize, device: &Device) -> Result<Self> {
        let c = &cfg.contrastive;
        check_negatives(cfg, images)?;
        let bank = MemoryBank::new(images, dim, cfg.seed ^ NEGATIVES_STREAM, device)
            .map_err(|e| TrainError::config("contrastive", e.to_string()))?;
        Ok(Self {
            bank,
            loss: c.bank_loss,
            negatives: c.negatives,
            momentum: c.bank_momentum,
            temperature: cfg.temperature,
            seed: cfg.seed,
            steps: 0,
            log_z: None,
            pending: None,
            group: Arc::new(SingleProcess),
        })
    }

    /// Shares the bank with the ranks of `group`.
    pub fn join_group(&mut self, group: Arc<dyn Communicator>) {
        self.group = group;
    }

    /// This step's positives (the batch's own slots) and shared negatives.
    ///
    /// # Shapes
    /// `(B, D)` and `(K, D)`.
    pub fn targets(&self, indices: &[usize]) -> candle_core::Result<(Tensor, Tensor)> {
        let mut rng = Rng::derive(self.seed, &[NEGATIVES_STREAM, self.steps]);
        let global = all_gather_indices(self.group.as_ref(), indices)?;
        let negatives = self.bank.negatives(&global, self.negatives, &mut rng)?;
        Ok((self.bank.get(indices)?, negatives))
    }

    /// The loss of features `q` against `positives` and `negatives` from
    /// [`BankObjective::targets`]; NCE fixes its normaliser on its first call.
    pub fn loss(
        &mut self,
        q: &Tensor,
        positives: &Tensor,
        negatives: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let t = self.temperature;
        match self.loss {
            BankLoss::Infonce => info_nce(q, positives, negatives, t),
            BankLoss::Nce => {
                let n = self.bank.len();
                let log_z = match self.log_z {
                    Some(z) => z,
                    None => {
                        let group = self.group.as_ref();
                        let q = all_gather_rows(group, &q.detach())?;
                        let positives = all_gather_rows(group, &positives.detach())?;
                        *self
                            .log_z
                            .insert(nce_log_normaliser(&q, &positives, negatives, t, n)?)
                    }
                };
                nce(q, positives, negatives, t, log_z, n)
            }
        }
    }

    /// Keeps this step's `features` (detached) for [`BankObjective::commit`].
    pub fn remember(&mut self, features: &Tensor) {
        self.pending = Some(features.detach());
    }

    /// After the optimizer step: moves the slots of `indices` towards the remembered
    /// features and counts the step.
    pub fn commit(&mut self, indices: &[usize]) -> candle_core::Result<()> {
        let Some(features) = self.pending.take() else {
            candle_core::bail!("memory bank: a step ended without a loss for its batch")
        };
        let group = self.group.as_ref();
        let features = all_gather_rows(group, &features)?;
        let indices = all_gather_indices(group, indices)?;
        self.bank.update(&indices, &features, self.momentum)?;
        self.steps += 1;
        Ok(())
    }

    /// The bank, step count and normaliser, for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let device = self.bank.slots().device();
        let scalars = [
            (STEPS, counter_tensor(self.steps, device)),
            (
                LOG_Z,
                Tensor::new(&[self.log_z.unwrap_or(f64::NAN)], device),
            ),
        ];
        let mut out = vec![(SLOTS.to_string(), self.bank.slots().clone())];
        out.extend(
            scalars
                .into_iter()
                .filter_map(|(name, t)| t.ok().map(|t| (name.to_string(), t))),
        );
        out
    }

    /// Restores what [`BankObjective::state`] saved.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> candle_core::Result<()> {
        let slots = state_tensor(state, SLOTS)?;
        if slots.dims() != self.bank.slots().dims() {
            candle_core::bail!(
                "memory bank is {:?} in the checkpoint but {:?} for this run",
                slots.dims(),
                self.bank.slots().dims()
            )
        }
        self.bank = MemoryBank::from_tensor(slots.to_dtype(DType::F32)?)?;
        self.steps = state_counter(state, STEPS)?;
        let z = state_tensor(state, LOG_Z)?.to_vec1::<f64>()?[0];
        self.log_z = z.is_finite().then_some(z);
        Ok(())
    }
}
