//! Batch normalization over `(N, C, H, W)` with fused per-channel passes,
//! optionally followed by a fused ReLU.

use candle_core::{bail, DType, Result, Tensor, D};

use crate::batch_norm_kernels::BnTrain;
use crate::bn_stats::Stats;
use crate::format::MemoryFormat;
use crate::sync::current_group;

/// Training-mode batch normalization (Ioffe & Szegedy, 2015) with batch
/// statistics and an exact, fused backward pass.
///
/// Returns `(y, mean, var)` where `mean` and `var` are the (detached) batch
/// mean and biased variance per channel, for the caller's running-statistics
/// update (PyTorch uses the unbiased variance there: multiply by
/// `M / (M - 1)` with `M = N * H * W *` [`batch_norm_world`](crate::batch_norm_world)).
/// Under [`sync_batch_norm`](crate::sync_batch_norm) the statistics, and the
/// backward's sums, cover the samples of every process. Gradients flow to `x`, `weight` and
/// `bias`; the backward pass is not itself differentiable on the CPU path.
///
/// On devices other than the CPU, or for dtypes other than `f32`, this is
/// computed from candle ops instead.
///
/// # Shapes
///
/// - `x`: `(N, C, H, W)`; `weight`, `bias`: `(C)`.
/// - returns: `y` `(N, C, H, W)` contiguous, `mean` and `var` `(C)`.
///
/// # Errors
///
/// Fails when `x` is not 4-D or `weight`/`bias` do not have `C` elements.
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    train(x, weight, bias, eps, false)
}

/// [`batch_norm_train`] followed by a ReLU, `y = max(0, BN(x))`, fused into
/// the same kernels: the ReLU costs no pass over memory of its own in either
/// direction.
///
/// The gradient is masked by `y > 0`, as PyTorch's `threshold_backward`
/// does (candle's own `relu` also lets the gradient through where its input
/// is exactly 0; both are subgradients). `mean` and `var` are the statistics
/// of `x`, as for [`batch_norm_train`].
///
/// On devices other than the CPU, or for dtypes other than `f32`, this is
/// composed from candle ops instead.
///
/// # Shapes
///
/// As [`batch_norm_train`].
///
/// # Errors
///
/// As [`batch_norm_train`].
pub fn batch_norm_train_relu(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    train(x, weight, bias, eps, true)
}

/// Both training-mode variants, synchronised over the thread's
/// [`sync_batch_norm`](crate::sync_batch_norm) group if any.
fn train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let sync = current_group();
    let (_, c, _, _) = x.dims4()?;
    if weight.dims() != [c] || bias.dims() != [c] {
        bail!(
            "batch_norm_train: weight {:?} and bias {:?} must be ({c})",
            weight.dims(),
            bias.dims()
        )
    }
    if !x.device().is_cpu() || [x.dtype(), weight.dtype(), bias.dtype()] != [DType::F32; 3] {
        if sync.is_some() {
            bail!("synchronised batch norm runs on the CPU with f32 only")
        }
        let (y, mean, var) = batch_norm_train_composed(x, weight, bias, eps)?;
        let y = if relu { y.relu()? } else { y };
        return Ok((y, mean, var));
    }
    let x = x.contiguous()?;
    let stats = x.apply_op1_no_bwd(&Stats { sync: sync.clone() })?; // (2, C): mean, biased var
    let affine = Tensor::stack(&[weight, bias], 0)?; // (2, C), tracked
    let format = MemoryFormat::Nchw;
    let y = x.apply_op3(
        &stats,
        &affine,
        BnTrain {
            eps,
            relu,
            sync,
            format,
        },
    )?;
    Ok((y, stats.get(0)?, stats.get(1)?))
}

/// Evaluation-mode batch normalization with running statistics:
/// `y = (x - mean) / sqrt(var + eps) * weight + bias`, built from candle
/// ops (one broadcast multiply and add), so it is differentiable everywhere.
///
/// # Shapes
///
/// - `x`: `(N, C, H, W)`, or `(N, H, W, C)` in [`MemoryFormat::Nhwc`];
///   the others: `(C)`.
/// - returns: the shape of `x`.
///
/// # Errors
///
/// Fails when the shapes do not match.
pub fn batch_norm_eval(
    x: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    format: MemoryFormat,
) -> Result<Tensor> {
    let (_, c, _, _) = format.nchw_dims(x)?;
    let scale = (weight / (running_var + eps)?.sqrt()?)?;
    let shift = (bias - (running_mean * &scale)?)?;
    let per_channel = format.dims((1, c, 1, 1));
    x.broadcast_mul(&scale.reshape(&per_channel)?)?
        .broadcast_add(&shift.reshape(&per_channel)?)
}

/// The same computation from plain candle ops (fallback and test reference).
pub(crate) fn batch_norm_train_composed(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, c, h, w) = x.dims4()?;
    let xc = x.transpose(0, 1)?.reshape((c, n * h * w))?;
    let mean = xc.mean_keepdim(D::Minus1)?;
    let centred = xc.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = centred.broadcast_div(&(&var + eps)?.sqrt()?)?;
    let y = xhat
        .broadcast_mul(&weight.reshape((c, 1))?)?
        .broadcast_add(&bias.reshape((c, 1))?)?;
    let y = y.reshape((c, n, h, w))?.transpose(0, 1)?.contiguous()?;
    Ok((y, mean.flatten_all()?.detach(), var.flatten_all()?.detach()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::test_util::{rand, rel_err};
    use candle_core::Var;

    /// The composed reference: candle's ops, then candle's `relu` if `relu`.
    fn reference(
        x: &Tensor,
        wt: &Tensor,
        b: &Tensor,
        relu: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (y, mean, var) = batch_norm_train_composed(x, wt, b, 1e-5)?;
        Ok((if relu { y.relu()? } else { y }, mean, var))
    }

    fn check(shape: [usize; 4], relu: bool) -> Result<()> {
        let c = shape[1];
        // An offset mean exercises the centring.
        let x = Var::from_tensor(&((rand(&shape, 1)? * 3.0)? + 2.0)?)?;
        // Weights of both signs: the ReLU keeps the top or the bottom part.
        let wt = Var::from_tensor(&rand(&[c], 2)?)?;
        let b = Var::from_tensor(&rand(&[c], 3)?)?;
        let r = rand(&shape, 4)?;
        let ours = if relu {
            batch_norm_train_relu(&x, &wt, &b, 1e-5)?
        } else {
            batch_norm_train(&x, &wt, &b, 1e-5)?
        };
        let expected = reference(&x, &wt, &b, relu)?;
        for (name, a, e) in [
            ("y", &ours.0, &expected.0),
            ("mean", &ours.1, &expected.1),
            ("var", &ours.2, &expected.2),
        ] {
            let err = rel_err(a, e)?;
            assert!(err < 1e-4, "{name} {shape:?} relu={relu}: {err}");
        }
        let g_ours = (&ours.0 * &r)?.sum_all()?.backward()?;
        let g_ref = (&expected.0 * &r)?.sum_all()?.backward()?;
        for (name, v) in [("x", &x), ("weight", &wt), ("bias", &b)] {
            let (Some(a), Some(e)) = (g_ours.get(v), g_ref.get(v)) else {
                panic!("missing {name} gradient for {shape:?} relu={relu}")
            };
            let err = rel_err(a, e)?;
            assert!(err < 1e-4, "grad {name} {shape:?} relu={relu}: {err}");
        }
        Ok(())
    }

    #[test]
    fn train_matches_composed_candle_ops() -> Result<()> {
        check([4, 3, 5, 7], false)?;
        check([1, 5, 3, 2], false)?;
        check([2, 32, 14, 14], false)?;
        check([7, 2, 1, 1], false)?;
        Ok(())
    }

    #[test]
    fn train_relu_matches_composed_batch_norm_then_candle_relu() -> Result<()> {
        check([4, 3, 5, 7], true)?;
        check([1, 5, 3, 2], true)?;
        check([1, 13, 4, 9], true)?;
        check([3, 13, 7, 5], true)?;
        check([2, 32, 14, 14], true)?;
        check([7, 2, 1, 1], true)?;
        Ok(())
    }

    #[test]
    fn train_relu_masks_exactly_where_the_output_is_zero() -> Result<()> {
        let x = Var::from_tensor(&rand(&[3, 5, 4, 6], 17)?)?;
        let (wt, b) = (rand(&[5], 18)?, rand(&[5], 19)?);
        let y = batch_norm_train_relu(&x, &wt, &b, 1e-5)?.0;
        let plain = batch_norm_train(&x, &wt, &b, 1e-5)?.0;
        assert_eq!(
            y.flatten_all()?.to_vec1::<f32>()?,
            plain.relu()?.flatten_all()?.to_vec1::<f32>()?
        );
        // With sum(y) as the loss, dy = 1 and the BN backward sees the mask.
        let masked = y.sum_all()?.backward()?;
        let mask = y.detach().gt(0.0)?.to_dtype(DType::F32)?;
        let explicit = (&plain * &mask)?.sum_all()?.backward()?;
        let (Some(a), Some(e)) = (masked.get(&x), explicit.get(&x)) else {
            panic!("missing x gradient")
        };
        assert!(rel_err(a, e)? < 1e-4);
        Ok(())
    }

    #[test]
    fn train_accepts_strided_input() -> Result<()> {
        let base = rand(&[3, 4, 5, 6], 5)?; // (C, N, H, W)
        let x = base.transpose(0, 1)?;
        let (wt, b) = (rand(&[3], 6)?, rand(&[3], 7)?);
        let ours = batch_norm_train(&x, &wt, &b, 1e-5)?.0;
        let reference = batch_norm_train_composed(&x, &wt, &b, 1e-5)?.0;
        assert!(rel_err(&ours, &reference)? < 1e-4);
        Ok(())
    }

    #[test]
    fn eval_uses_running_stats() -> Result<()> {
        let x = rand(&[2, 3, 4, 4], 8)?;
        let (mean, var) = (rand(&[3], 9)?, (rand(&[3], 10)?.abs()? + 0.5)?);
        let (wt, b) = (rand(&[3], 11)?, rand(&[3], 12)?);
        let y = batch_norm_eval(&x, &mean, &var, &wt, &b, 1e-5, MemoryFormat::Nchw)?;
        let view = |t: &Tensor| t.reshape((1, 3, 1, 1));
        let expected = x
            .broadcast_sub(&view(&mean)?)?
            .broadcast_div(&view(&(&var + 1e-5)?.sqrt()?)?)?
            .broadcast_mul(&view(&wt)?)?
            .broadcast_add(&view(&b)?)?;
        assert!(rel_err(&y, &expected)? < 1e-5);
        // Channels last: the same values, permuted.
        let nhwc = MemoryFormat::Nhwc;
        let y = batch_norm_eval(&nhwc.from_nchw(&x)?, &mean, &var, &wt, &b, 1e-5, nhwc)?;
        assert!(rel_err(&nhwc.to_nchw(&y)?, &expected)? < 1e-5);
        Ok(())
    }

    #[test]
    fn rejects_bad_shapes() -> Result<()> {
        let x = rand(&[2, 3, 4, 4], 13)?;
        assert!(batch_norm_train(&x, &rand(&[4], 14)?, &rand(&[3], 15)?, 1e-5).is_err());
        assert!(batch_norm_train(
            &rand(&[2, 3, 4], 16)?,
            &rand(&[3], 14)?,
            &rand(&[3], 15)?,
            1e-5
        )
        .is_err());
        Ok(())
    }
}
