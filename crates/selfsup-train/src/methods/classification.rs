//! What the classification pretext tasks (rotation, relative patch location, jigsaw)
//! have in common: a cross-entropy loss during training and top-1 on held-out images,
//! both from [`ClassificationTask::classified`]. The [`Method`] implementation is shared.
use crate::method::{Method, PretextMetric, PretextTally};
use crate::Result;
use candle_core::Tensor;
use selfsup_data::{Batch, ViewRecipe};
use selfsup_encoders::Encoder;
use selfsup_pretext::Classified;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// A pretext task whose free label is a class: it names itself, its views and its
/// encoder, and scores a batch; every such type is a [`Method`].
pub(crate) trait ClassificationTask: Send {
    /// The `--method` name.
    const NAME: &'static str;

    /// The view recipe that makes the free labels.
    fn recipe(&self) -> Arc<dyn ViewRecipe>;

    /// The backbone being pretrained.
    fn backbone(&self) -> &dyn Encoder;

    /// Loss and top-1 count of a batch, with the model in training (`train`) or
    /// evaluation mode.
    ///
    /// # Errors
    /// On tensor errors or views of the wrong shape.
    fn classified(&self, batch: &Batch, train: bool) -> candle_core::Result<Classified>;

    /// As [`Method::write_artifacts`]; nothing by default.
    ///
    /// # Errors
    /// On I/O errors.
    fn artifacts(&self, _run_dir: &Path, _step: usize) -> Result<()> {
        Ok(())
    }

    /// As [`Method::state`]; nothing by default.
    fn task_state(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// As [`Method::load_state`]; nothing by default.
    ///
    /// # Errors
    /// If the saved state does not fit.
    fn load_task_state(&mut self, _state: &HashMap<String, Tensor>) -> candle_core::Result<()> {
        Ok(())
    }
}

/// The free labels of a batch whose recipe makes targets.
///
/// # Errors
/// If the batch has none (its views did not come from the task's recipe).
pub(crate) fn batch_targets<'a>(batch: &'a Batch, task: &str) -> candle_core::Result<&'a Tensor> {
    batch.targets.as_ref().ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "{task} batches need their free labels (batch.targets)"
        ))
    })
}

impl<T: ClassificationTask> Method for T {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn views(&self) -> Arc<dyn ViewRecipe> {
        self.recipe()
    }

    fn loss(&mut self, batch: &Batch) -> candle_core::Result<Tensor> {
        Ok(self.classified(batch, true)?.loss)
    }

    fn encoder(&self) -> &dyn Encoder {
        self.backbone()
    }

    fn pretext_metric(&self) -> Option<PretextMetric> {
        Some(PretextMetric::Top1)
    }

    fn pretext_eval(&self, batch: &Batch) -> candle_core::Result<PretextTally> {
        let c = self.classified(batch, false)?;
        Ok(PretextTally {
            sum: c.correct as f64,
            count: c.total,
        })
    }

    fn write_artifacts(&self, run_dir: &Path, step: usize) -> Result<()> {
        self.artifacts(run_dir, step)
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        self.task_state()
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> candle_core::Result<()> {
        self.load_task_state(state)
    }
}
