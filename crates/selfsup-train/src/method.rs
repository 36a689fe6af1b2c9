//! The [`Method`] trait: what a self-supervised method contributes to training.
use candle_core::Tensor;
use selfsup_data::{Batch, ViewRecipe};
use selfsup_encoders::Encoder;
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

    /// The backbone being pretrained, used for evaluation and export.
    fn encoder(&self) -> &dyn Encoder;

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

/// Name prefix of the encoder's variables in the run's `VarMap`. Exported weights drop it,
/// so that their names are torchvision's.
pub const ENCODER_PREFIX: &str = "encoder";
