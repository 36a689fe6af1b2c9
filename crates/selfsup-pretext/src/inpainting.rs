//! The context encoder's losses (Pathak et al. 2016, "Context Encoders: Feature
//! Learning by Inpainting"); its decoder is `selfsup_generative::Decoder`.
use candle_core::{DType, Result, Tensor};

/// The context encoder's reconstruction loss (Pathak et al. 2016, eq. 1 with the
/// overlap weighting of their code): a weighted mean of squared errors, with weight
/// 1 on hidden pixels (`mask`), `overlap_weight` on the overlap border (`border`)
/// and 0 elsewhere, normalised by the total weight, so that it is the mean squared
/// error per weighted element:
/// `Σ w (pred − target)² / Σ w` over all elements, `w = mask + overlap_weight · border`.
///
/// # Shapes
/// `pred` and `target` `(N, C, H, W)`; `mask` and `border` `(N, C, H, W)` or
/// `(N, 1, H, W)` (shared by the channels), 0 or 1. The loss is a scalar.
///
/// # Errors
/// If the shapes disagree or the total weight is zero (nothing to reconstruct).
pub fn inpainting_loss(
    pred: &Tensor,
    target: &Tensor,
    mask: &Tensor,
    border: &Tensor,
    overlap_weight: f64,
) -> Result<Tensor> {
    let weight = (mask + (border * overlap_weight)?)?
        .broadcast_as(pred.shape())?
        .to_dtype(pred.dtype())?;
    let total = weight.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if total <= 0.0 {
        candle_core::bail!("inpainting_loss: the mask and its border have zero total weight")
    }
    let sq = (pred - target)?.sqr()?;
    (sq * weight)?.sum_all()? / total
}

/// The summed squared error over hidden elements and their count: the numerator and
/// denominator of the masked-region MSE that inpainting reports on held-out images.
///
/// # Shapes
/// `pred` and `target` `(N, C, H, W)`; `mask` `(N, C, H, W)` or `(N, 1, H, W)`, 0 or 1.
///
/// # Errors
/// If the shapes disagree.
pub fn masked_squared_error(pred: &Tensor, target: &Tensor, mask: &Tensor) -> Result<(f64, usize)> {
    let mask = mask.broadcast_as(pred.shape())?.to_dtype(DType::F64)?;
    let sq = (pred - target)?.sqr()?.to_dtype(DType::F64)?;
    let sum = (sq * &mask)?.sum_all()?.to_scalar::<f64>()?;
    let count = mask.sum_all()?.to_scalar::<f64>()?.round() as usize;
    Ok((sum, count))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use candle_core::Device;

    #[test]
    fn loss_and_masked_error_match_hand_values() {
        let dev = Device::Cpu;
        // Two channels, one row of two pixels; pixel 0 hidden, pixel 1 on the border.
        let pred = Tensor::new(&[[[[1f32, 2.0]], [[3.0, 4.0]]]], &dev).unwrap();
        let target = Tensor::new(&[[[[0f32, 0.0]], [[1.0, 1.0]]]], &dev).unwrap();
        let mask = Tensor::new(&[[[[1f32, 0.0]]]], &dev).unwrap();
        let border = Tensor::new(&[[[[0f32, 1.0]]]], &dev).unwrap();
        // Squared errors: channel 0: 1, 4; channel 1: 4, 9.
        // Weighted: 1·1 + 10·4 + 1·4 + 10·9 = 135 over weight 1 + 10 + 1 + 10 = 22.
        let loss = inpainting_loss(&pred, &target, &mask, &border, 10.0).unwrap();
        assert!((loss.to_scalar::<f32>().unwrap() - 135.0 / 22.0).abs() < 1e-5);
        let plain = inpainting_loss(&pred, &target, &mask, &border, 0.0).unwrap();
        assert!((plain.to_scalar::<f32>().unwrap() - 2.5).abs() < 1e-6);
        assert_eq!(
            masked_squared_error(&pred, &target, &mask).unwrap(),
            (5.0, 2)
        );
        let none = mask.zeros_like().unwrap();
        assert!(inpainting_loss(&pred, &target, &none, &none, 10.0).is_err());
    }
}
