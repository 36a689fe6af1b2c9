use candle_core::{Result, Tensor};

/// Scales each row of `x` to unit L2 norm, like PyTorch's `F.normalize(x, dim=1)`
/// (norms below 1e-12 are clamped to avoid division by zero).
///
/// # Shapes
/// `x`: (N, D) → (N, D).
///
/// # Errors
/// If `x` is not rank 2.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}
