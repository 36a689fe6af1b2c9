//! Contrastive Predictive Coding (van den Oord et al. 2018, "Representation Learning
//! with Contrastive Predictive Coding"; Hénaff et al. 2020, "Data-Efficient Image
//! Recognition with Contrastive Predictive Coding"): a grid of overlapping patches,
//! each encoded on its own; a context network over the rows above; one linear
//! predictor per step k that guesses the latent k rows below; InfoNCE against the
//! other latents of the batch.
//!
//! - [`PatchGrid`] cuts images into the grid, [`PatchEncoder`] encodes it (and is an
//!   [`Encoder`] whose map is the grid of patch latents).
//! - [`CpcHead`]: the masked-convolution context network and the predictors `W_k`.
//! - [`cpc_logits`], [`cpc_loss`] and [`cpc_top1`]: the InfoNCE scores, targets, loss
//!   and accuracy.
//!
//! Latent grids are channels-last, `(N, rows, cols, D)`: for video, the rows are the
//! frames of a clip and there is one column.
mod head;
mod loss;
mod patches;

pub use head::{CpcHead, CpcHeadConfig};
pub use loss::{candidate_group, cpc_logits, cpc_loss, cpc_top1, CpcLogits};
pub use patches::{PatchEncoder, PatchGrid};

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use candle_core::{Device, Tensor};
    use candle_nn::VarMap;
    use selfsup_data::Rng;

    /// Standard-normal test input of `shape` from `seed`.
    pub(crate) fn input(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = Rng::new(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The sorted variable names of `varmap`.
    pub(crate) fn var_names(varmap: &VarMap) -> Vec<String> {
        let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
        names.sort();
        names
    }
}
