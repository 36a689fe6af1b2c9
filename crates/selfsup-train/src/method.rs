//! The [`Method`] trait: what a self-supervised method contributes to training.
use candle_core::Tensor;
use selfsup_data::{Batch, ViewRecipe};
use selfsup_dist::Communicator;
use selfsup_encoders::Encoder;
use std::path::Path;
use std::sync::Arc;

/// A self-supervised method: an encoder plus heads, a view recipe, a loss and an
/// after-step hook. All of its trainable variables live in the run's `VarMap`,
/// the encoder's under [`ENCODER_PREFIX`].
///
/// State outside the optimizer (memory banks, queues, momentum encoders) is kept
/// as detached tensors, updated in [`Method::after_step`] and saved through
/// [`Method::state`].
pub trait Method: Send {
    /// The method's name, as given to `--method`.
    fn name(&self) -> &'static str;

    /// How each training image is turned into views.
    fn views(&self) -> Arc<dyn ViewRecipe>;

    /// The loss of one batch, with the model in training mode.
    ///
    /// # Errors
    /// On tensor errors or views of the wrong shape.
    fn loss(&mut self, batch: &Batch) -> candle_core::Result<Tensor>;

    /// Runs after each optimizer step (EMA, bank or queue updates). The default does nothing.
    ///
    /// # Errors
    /// On tensor errors.
    fn after_step(&mut self, _batch: &Batch) -> candle_core::Result<()> {
        Ok(())
    }

    /// Trains the method's side network, kept outside the run's optimizer (a GAN's
    /// other player, inpainting's adversary), on `batch` at learning rate `lr`,
    /// after the run's step and [`Method::after_step`]. Returns the side loss, or
    /// `None` when there is no side network. When the loss is not finite the method
    /// takes no step, and the trainer stops as it does for the main loss. The default
    /// does nothing.
    ///
    /// # Errors
    /// On tensor errors.
    fn side_step(&mut self, _batch: &Batch, _lr: f64) -> candle_core::Result<Option<f32>> {
        Ok(None)
    }

    /// Joins a data-parallel run of `comm.world_size()` ranks (called only when there
    /// is more than one). The trainer averages the run's gradients over ranks; a method
    /// whose loss couples samples in other ways (negatives from other images, banks,
    /// queues, side networks) gathers what it needs here, or refuses with the reason.
    /// The default accepts: a loss that is a mean of per-sample (or per-group) terms
    /// averages over ranks to the mean over the global batch.
    ///
    /// # Errors
    /// Why the method cannot run data-parallel.
    fn join_group(&mut self, _comm: Arc<dyn Communicator>) -> std::result::Result<(), String> {
        Ok(())
    }

    /// The backbone being pretrained, used for evaluation and export.
    fn encoder(&self) -> &dyn Encoder;

    /// The held-out measure of the pretext task, if the method has one.
    fn pretext_metric(&self) -> Option<PretextMetric> {
        None
    }

    /// Scores one held-out batch (views from [`Method::views`]) with the model in
    /// evaluation mode, without changing any state. Only called when
    /// [`Method::pretext_metric`] is `Some`.
    ///
    /// # Errors
    /// On tensor errors.
    fn pretext_eval(&self, _batch: &Batch) -> candle_core::Result<PretextTally> {
        Ok(PretextTally::default())
    }

    /// Scores a trivial reference predictor on the same held-out batch as
    /// [`Method::pretext_eval`], in the same measure (next-frame prediction: copying the
    /// last context frame), or `None` when the method has none. Reported as
    /// `pretext_baseline` next to the method's own score. The default has none.
    ///
    /// # Errors
    /// On tensor errors.
    fn pretext_baseline(&self, _batch: &Batch) -> candle_core::Result<Option<PretextTally>> {
        Ok(None)
    }

    /// Writes files that belong with the run into `run_dir` (the jigsaw permutation
    /// set, inpainting sample grids). Called at every checkpoint and at the end of
    /// training, after `step` steps. The default writes nothing.
    ///
    /// # Errors
    /// On I/O or tensor errors.
    fn write_artifacts(&self, _run_dir: &Path, _step: usize) -> crate::Result<()> {
        Ok(())
    }

    /// Named state tensors that are not variables (banks, queues), for checkpoints.
    fn state(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Restores what [`Method::state`] returned.
    ///
    /// # Errors
    /// If a tensor is missing or has the wrong shape.
    fn load_state(
        &mut self,
        _state: &std::collections::HashMap<String, Tensor>,
    ) -> candle_core::Result<()> {
        Ok(())
    }
}

/// The pretext task's own held-out measure, reported in `eval.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PretextMetric {
    /// Top-1 accuracy of a classification pretext task, in percent (`pretext_top1`).
    Top1,
    /// Mean squared error of a reconstruction pretext task (`pretext_mse`).
    Mse,
}

/// Running totals of a pretext measure over held-out batches.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PretextTally {
    /// Correct predictions ([`PretextMetric::Top1`]) or summed squared errors ([`PretextMetric::Mse`]).
    pub sum: f64,
    /// Predictions made, or elements compared.
    pub count: usize,
}

impl PretextTally {
    /// The summed squared difference of `pred` and `target` and the elements compared
    /// (the reconstruction and prediction tasks' [`PretextMetric::Mse`]).
    ///
    /// # Errors
    /// If the shapes differ.
    pub fn squared_error(pred: &Tensor, target: &Tensor) -> candle_core::Result<Self> {
        let sq = (pred - target)?.sqr()?;
        Ok(Self {
            sum: sq
                .to_dtype(candle_core::DType::F64)?
                .sum_all()?
                .to_scalar::<f64>()?,
            count: sq.elem_count(),
        })
    }

    /// Adds another batch's totals.
    pub fn add(&mut self, other: PretextTally) {
        self.sum += other.sum;
        self.count += other.count;
    }

    /// The measure: percent correct for `Top1`, mean for `Mse`; `None` when nothing was counted.
    pub fn value(&self, metric: PretextMetric) -> Option<f64> {
        (self.count > 0).then(|| {
            let mean = self.sum / self.count as f64;
            match metric {
                PretextMetric::Top1 => 100.0 * mean,
                PretextMetric::Mse => mean,
            }
        })
    }
}

/// Name prefix of the encoder's variables in the run's `VarMap`. Exported weights drop it,
/// so that their names are torchvision's.
pub const ENCODER_PREFIX: &str = "encoder";
