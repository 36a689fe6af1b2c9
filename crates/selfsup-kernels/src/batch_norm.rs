//! Batch normalization over `(N, C, H, W)` with fused per-channel passes.

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor, D,
};
use rayon::prelude::*;

use crate::profile;

/// Training-mode batch normalization (Ioffe & Szegedy, 2015) with batch
/// statistics and an exact, fused backward pass.
///
/// Returns `(y, mean, var)` where `mean` and `var` are the (detached) batch
/// mean and biased variance per channel, for the caller's running-statistics
/// update (PyTorch uses the unbiased variance there: multiply by
/// `M / (M - 1)` with `M = N * H * W`). Gradients flow to `x`, `weight` and
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
    let (_, c, _, _) = x.dims4()?;
    if weight.dims() != [c] || bias.dims() != [c] {
        bail!(
            "batch_norm_train: weight {:?} and bias {:?} must be ({c})",
            weight.dims(),
            bias.dims()
        )
    }
    if !x.device().is_cpu() || [x.dtype(), weight.dtype(), bias.dtype()] != [DType::F32; 3] {
        return batch_norm_train_composed(x, weight, bias, eps);
    }
    let x = x.contiguous()?;
    let stats = x.apply_op1_no_bwd(&Stats)?; // (2, C): mean, biased var
    let affine = Tensor::stack(&[weight, bias], 0)?; // (2, C), tracked
    let y = x.apply_op3(&stats, &affine, BnTrain { eps })?;
    Ok((y, stats.get(0)?, stats.get(1)?))
}

/// Evaluation-mode batch normalization with running statistics:
/// `y = (x - mean) / sqrt(var + eps) * weight + bias`, built from candle
/// ops (one broadcast multiply and add), so it is differentiable everywhere.
///
/// # Shapes
///
/// - `x`: `(N, C, H, W)`; the others: `(C)`.
/// - returns: `(N, C, H, W)`.
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
) -> Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    let scale = (weight / (running_var + eps)?.sqrt()?)?;
    let shift = (bias - (running_mean * &scale)?)?;
    x.broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
        .broadcast_add(&shift.reshape((1, c, 1, 1))?)
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

/// The contiguous `f32` data of a storage.
fn data<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("batch norm: expected a contiguous tensor")
    };
    Ok(&s.as_slice::<f32>()?[start..end])
}

/// `(N, C, H * W)` of a 4-D layout.
fn dims(l: &Layout) -> Result<(usize, usize, usize)> {
    let &[n, c, h, w] = l.dims() else {
        bail!("batch norm: expected (N, C, H, W), got {:?}", l.dims())
    };
    Ok((n, c, h * w))
}

/// The flat ranges of channel `ci`'s `n` planes.
fn planes(
    ci: usize,
    (n, c, hw): (usize, usize, usize),
) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n).map(move |ni| (ni * c + ci) * hw..(ni * c + ci + 1) * hw)
}

/// Per-channel pairs, computed in parallel, as a `(2, C)` storage.
fn pairs_to_storage(pairs: Vec<(f32, f32)>) -> (CpuStorage, Shape) {
    let c = pairs.len();
    let v = pairs.iter().map(|p| p.0).chain(pairs.iter().map(|p| p.1));
    (CpuStorage::F32(v.collect()), Shape::from((2, c)))
}

/// Mean and biased variance per channel: `(2, C)`.
struct Stats;

impl CustomOp1 for Stats {
    fn name(&self) -> &'static str {
        "selfsup-bn-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = profile::scope("bn.stats");
        let (x, d) = (data(s, l)?, dims(l)?);
        let m = (d.0 * d.2).max(1) as f64;
        let pairs = (0..d.1)
            .into_par_iter()
            .map(|ci| {
                let sum: f64 = planes(ci, d).map(|r| x[r].iter().sum::<f32>() as f64).sum();
                let mean = sum / m;
                let ss: f64 = planes(ci, d)
                    .map(|r| x[r].iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>())
                    .sum();
                (mean as f32, (ss / m) as f32)
            })
            .collect();
        Ok(pairs_to_storage(pairs))
    }
}

/// `y = (x - mean) * weight / sqrt(var + eps) + bias` on `(x, stats, affine)`.
struct BnTrain {
    eps: f64,
}

/// Per-channel `(scale, shift)` so that `out = in * scale + shift`.
fn coefficients(stats: &[f32], affine: &[f32], c: usize, eps: f64) -> Vec<(f32, f32)> {
    (0..c)
        .map(|ci| {
            let a = affine[ci] / (stats[c + ci] as f64 + eps).sqrt() as f32;
            (a, affine[c + ci] - stats[ci] * a)
        })
        .collect()
}

/// `out[plane] = a * in[plane] + b` (+ `k * extra[plane]`), in parallel over planes.
fn planewise(
    x: &[f32],
    extra: Option<(&[f32], &[f32])>,
    coef: &[(f32, f32)],
    d: (usize, usize, usize),
) -> Vec<f32> {
    let (_, c, hw) = d;
    let mut out = vec![0f32; x.len()];
    if hw > 0 {
        out.par_chunks_mut(hw).enumerate().for_each(|(p, o)| {
            let (a, b) = coef[p % c];
            let xs = &x[p * hw..][..hw];
            match extra {
                None => o.iter_mut().zip(xs).for_each(|(o, &v)| *o = v * a + b),
                Some((e, k)) => {
                    let k = k[p % c];
                    let es = &e[p * hw..][..hw];
                    for ((o, &v), &g) in o.iter_mut().zip(xs).zip(es) {
                        *o = v * a + b + g * k;
                    }
                }
            }
        });
    }
    out
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "selfsup-bn-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = profile::scope("bn.fwd");
        let (x, d) = (data(s1, l1)?, dims(l1)?);
        let coef = coefficients(data(s2, l2)?, data(s3, l3)?, d.1, self.eps);
        Ok((
            CpuStorage::F32(planewise(x, None, &coef, d)),
            l1.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        stats: &Tensor,
        affine: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let packed = Tensor::cat(&[stats, &affine.detach()], 0)?; // (4, C)
        let sums = x.apply_op3_no_bwd(&dy, &packed, &BnGradSums { eps: self.eps })?;
        let packed = Tensor::cat(&[packed, sums.clone()], 0)?; // (6, C)
        let dx = if x.track_op() {
            Some(x.apply_op3_no_bwd(&dy, &packed, &BnGradInput { eps: self.eps })?)
        } else {
            None
        };
        let daffine = Tensor::stack(&[sums.get(1)?, sums.get(0)?], 0)?;
        Ok((dx, None, Some(daffine)))
    }
}

/// `(2, C)` of `sum(dy)` and `sum(dy * xhat)` on `(x, dy, [stats; affine])`.
struct BnGradSums {
    eps: f64,
}

impl CustomOp3 for BnGradSums {
    fn name(&self) -> &'static str {
        "selfsup-bn-grad-sums"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = profile::scope("bn.bwd.sums");
        let (x, dy, p, d) = (data(s1, l1)?, data(s2, l2)?, data(s3, l3)?, dims(l1)?);
        let c = d.1;
        let pairs = (0..c)
            .into_par_iter()
            .map(|ci| {
                let (mean, inv) = (p[ci], 1.0 / (p[c + ci] as f64 + self.eps).sqrt() as f32);
                let (mut s0, mut s1) = (0f64, 0f64);
                for r in planes(ci, d) {
                    let (xs, gs) = (&x[r.clone()], &dy[r]);
                    s0 += gs.iter().sum::<f32>() as f64;
                    s1 += xs
                        .iter()
                        .zip(gs)
                        .map(|(&v, &g)| g * (v - mean))
                        .sum::<f32>() as f64;
                }
                (s0 as f32, (s1 * inv as f64) as f32)
            })
            .collect();
        Ok(pairs_to_storage(pairs))
    }
}

/// The input gradient on `(x, dy, [stats; affine; sums])`:
/// `dx = k * (dy - sum(dy) / M - xhat * sum(dy * xhat) / M)`,
/// `k = weight / sqrt(var + eps)`.
struct BnGradInput {
    eps: f64,
}

impl CustomOp3 for BnGradInput {
    fn name(&self) -> &'static str {
        "selfsup-bn-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = profile::scope("bn.bwd.x");
        let (x, dy, p, d) = (data(s1, l1)?, data(s2, l2)?, data(s3, l3)?, dims(l1)?);
        let (c, m) = (d.1, (d.0 * d.2).max(1) as f32);
        let (mut coef, mut k) = (Vec::with_capacity(c), Vec::with_capacity(c));
        for ci in 0..c {
            let (mean, var, gamma) = (p[ci], p[c + ci], p[2 * c + ci]);
            let (sum_dy, sum_dy_xhat) = (p[4 * c + ci], p[5 * c + ci]);
            let inv = 1.0 / (var as f64 + self.eps).sqrt() as f32;
            let kc = gamma * inv;
            // dx = kc * dy + a * x + b
            let a = -kc * inv * sum_dy_xhat / m;
            coef.push((a, -kc * sum_dy / m - a * mean));
            k.push(kc);
        }
        Ok((
            CpuStorage::F32(planewise(x, Some((dy, &k)), &coef, d)),
            l1.shape().clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::test_util::{rand, rel_err};
    use candle_core::Var;

    fn check(shape: [usize; 4]) -> Result<()> {
        let c = shape[1];
        // An offset mean exercises the centring.
        let x = Var::from_tensor(&((rand(&shape, 1)? * 3.0)? + 2.0)?)?;
        let wt = Var::from_tensor(&rand(&[c], 2)?)?;
        let b = Var::from_tensor(&rand(&[c], 3)?)?;
        let r = rand(&shape, 4)?;
        let ours = batch_norm_train(&x, &wt, &b, 1e-5)?;
        let reference = batch_norm_train_composed(&x, &wt, &b, 1e-5)?;
        for (name, a, e) in [
            ("y", &ours.0, &reference.0),
            ("mean", &ours.1, &reference.1),
            ("var", &ours.2, &reference.2),
        ] {
            let err = rel_err(a, e)?;
            assert!(err < 1e-4, "{name} {shape:?}: {err}");
        }
        let g_ours = (&ours.0 * &r)?.sum_all()?.backward()?;
        let g_ref = (&reference.0 * &r)?.sum_all()?.backward()?;
        for (name, v) in [("x", &x), ("weight", &wt), ("bias", &b)] {
            let (Some(a), Some(e)) = (g_ours.get(v), g_ref.get(v)) else {
                panic!("missing {name} gradient for {shape:?}")
            };
            let err = rel_err(a, e)?;
            assert!(err < 1e-4, "grad {name} {shape:?}: {err}");
        }
        Ok(())
    }

    #[test]
    fn train_matches_composed_candle_ops() -> Result<()> {
        check([4, 3, 5, 7])?;
        check([1, 5, 3, 2])?;
        check([2, 32, 14, 14])?;
        check([7, 2, 1, 1])?;
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
        let y = batch_norm_eval(&x, &mean, &var, &wt, &b, 1e-5)?;
        let view = |t: &Tensor| t.reshape((1, 3, 1, 1));
        let expected = x
            .broadcast_sub(&view(&mean)?)?
            .broadcast_div(&view(&(&var + 1e-5)?.sqrt()?)?)?
            .broadcast_mul(&view(&wt)?)?
            .broadcast_add(&view(&b)?)?;
        assert!(rel_err(&y, &expected)? < 1e-5);
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
