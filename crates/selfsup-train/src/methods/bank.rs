//! The memory-bank objective shared by NPID and PIRL: a feature is pulled towards its
//! own sample's bank slot and pushed from K slots drawn at random.
use crate::config::{BankLoss, TrainConfig, UnwrittenSlot};
use crate::{Result, TrainError};
use candle_core::{DType, Device, Tensor};
use selfsup_contrastive::{info_nce, l2_normalize, nce, nce_log_normaliser, MemoryBank};
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
///
/// With `contrastive.bank_unwritten = own-feature` a slot that no step has
/// written yet is no target: its sample's positive is the sample's own feature and its
/// first write stores the feature instead of mixing it with the random initial vector.
pub(super) struct BankObjective {
    bank: MemoryBank,
    /// Which slots hold a feature of their sample (all of them from the start when
    /// unwritten slots count as their random vectors).
    written: Vec<bool>,
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
const WRITTEN: &str = "bank.written";

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
            written: vec![c.bank_unwritten == UnwrittenSlot::Random; images],
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

    /// This step's positives (the batch's own slots, or for a slot not yet written the
    /// normalised `features` of its sample, detached) and shared negatives. `features`
    /// are what [`BankObjective::remember`] will be given.
    ///
    /// # Shapes
    /// `features` `(B, D)`; out `(B, D)` and `(K, D)`.
    pub fn targets(
        &self,
        indices: &[usize],
        features: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let mut rng = Rng::derive(self.seed, &[NEGATIVES_STREAM, self.steps]);
        let global = all_gather_indices(self.group.as_ref(), indices)?;
        let negatives = self.bank.negatives(&global, self.negatives, &mut rng)?;
        let slots = self.bank.get(indices)?;
        if indices.iter().all(|&i| self.written[i]) {
            return Ok((slots, negatives));
        }
        let written: Vec<f32> = indices
            .iter()
            .map(|&i| f32::from(self.written[i]))
            .collect();
        let written = Tensor::from_vec(written, (indices.len(), 1), slots.device())?;
        let own = l2_normalize(&features.detach().to_dtype(slots.dtype())?)?;
        let positives = (slots.broadcast_mul(&written)? + own.broadcast_mul(&(1.0 - written)?)?)?;
        Ok((positives, negatives))
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
        let (later, first): (Vec<usize>, Vec<usize>) =
            (0..indices.len()).partition(|&row| self.written[indices[row]]);
        for (rows, momentum) in [(later, self.momentum), (first, 0.0)] {
            if rows.is_empty() {
                continue;
            }
            let slots: Vec<usize> = rows.iter().map(|&row| indices[row]).collect();
            let rows: Vec<u32> = rows.iter().map(|&row| row as u32).collect();
            let rows = Tensor::from_vec(rows, slots.len(), features.device())?;
            self.bank
                .update(&slots, &features.index_select(&rows, 0)?, momentum)?;
            for slot in slots {
                self.written[slot] = true;
            }
        }
        self.steps += 1;
        Ok(())
    }

    /// The bank, which slots are written, step count and normaliser, for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let device = self.bank.slots().device();
        let scalars = [
            (STEPS, counter_tensor(self.steps, device)),
            (
                LOG_Z,
                Tensor::new(&[self.log_z.unwrap_or(f64::NAN)], device),
            ),
            (
                WRITTEN,
                Tensor::from_vec(
                    self.written.iter().map(|&w| u8::from(w)).collect(),
                    self.written.len(),
                    device,
                ),
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

    /// Restores what [`BankObjective::state`] saved. A checkpoint from before slots were
    /// tracked counts every slot as written, as its bank had mixed them all.
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
        self.written = match state.get(WRITTEN) {
            None => vec![true; self.written.len()],
            Some(written) => {
                let written = written.to_dtype(DType::U8)?.to_vec1::<u8>()?;
                if written.len() != self.written.len() {
                    candle_core::bail!(
                        "`{WRITTEN}` has {} entries in the checkpoint but the bank has {} slots",
                        written.len(),
                        self.written.len()
                    )
                }
                written.into_iter().map(|w| w != 0).collect()
            }
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn objective(unwritten: UnwrittenSlot) -> BankObjective {
        let mut cfg = TrainConfig::for_method("npid");
        cfg.batch_size = 2;
        cfg.contrastive.negatives = 3;
        cfg.contrastive.bank_unwritten = unwritten;
        BankObjective::new(&cfg, 6, 2, &Device::Cpu).unwrap()
    }

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2::<f32>().unwrap()
    }

    fn close(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn an_unwritten_slot_is_its_own_feature_until_its_first_write_stores_it() {
        let mut obj = objective(UnwrittenSlot::OwnFeature);
        let random = rows(obj.bank.slots());
        let feats = Tensor::new(&[[3.0f32, 4.0], [0.0, -2.0]], &Device::Cpu).unwrap();
        let unit = [vec![0.6, 0.8], vec![0.0, -1.0]];
        // Slot 1 is already written, slot 4 is not.
        obj.written[1] = true;
        let (pos, _) = obj.targets(&[4, 1], &feats).unwrap();
        assert!(close(&rows(&pos), &[unit[0].clone(), random[1].clone()]));
        obj.remember(&feats);
        obj.commit(&[4, 1]).unwrap();
        let slots = rows(obj.bank.slots());
        assert!(
            close(&slots[4..5], &unit[..1]),
            "first write stores the feature"
        );
        let mixed: Vec<f32> = (0..2)
            .map(|j| 0.5 * random[1][j] + 0.5 * unit[1][j])
            .collect();
        let norm = mixed.iter().map(|v| v * v).sum::<f32>().sqrt();
        let mixed: Vec<f32> = mixed.iter().map(|v| v / norm).collect();
        assert!(close(&slots[1..2], &[mixed]), "a later write mixes");
        assert!(obj.written[4] && !obj.written[0]);
        // Written slots are targets from now on, whatever the features.
        let (pos, _) = obj.targets(&[4], &feats.narrow(0, 1, 1).unwrap()).unwrap();
        assert!(close(&rows(&pos), &slots[4..5]));
    }

    #[test]
    fn random_unwritten_slots_are_targets_and_mixed_from_the_start() {
        let mut obj = objective(UnwrittenSlot::Random);
        let random = rows(obj.bank.slots());
        let feats = Tensor::new(&[[1.0f32, 0.0]], &Device::Cpu).unwrap();
        let (pos, _) = obj.targets(&[2], &feats).unwrap();
        assert!(close(&rows(&pos), &random[2..3]));
        obj.remember(&feats);
        obj.commit(&[2]).unwrap();
        assert!(!close(&rows(obj.bank.slots())[2..3], &[vec![1.0, 0.0]]));
    }

    #[test]
    fn written_slots_survive_a_checkpoint_and_old_checkpoints_count_as_written() {
        let mut obj = objective(UnwrittenSlot::OwnFeature);
        obj.remember(&Tensor::new(&[[1.0f32, 0.0]], &Device::Cpu).unwrap());
        obj.commit(&[3]).unwrap();
        let mut state: HashMap<String, Tensor> = obj.state().into_iter().collect();
        let mut fresh = objective(UnwrittenSlot::OwnFeature);
        fresh.load_state(&state).unwrap();
        assert_eq!(fresh.written, obj.written);
        state.remove(WRITTEN);
        fresh.load_state(&state).unwrap();
        assert!(fresh.written.iter().all(|&w| w));
        state.insert(
            WRITTEN.into(),
            Tensor::zeros(2, DType::U8, &Device::Cpu).unwrap(),
        );
        let msg = fresh.load_state(&state).unwrap_err().to_string();
        assert!(msg.contains("bank.written"), "{msg}");
    }
}
