//! Pooling built from differentiable ops.
//!
//! candle's `max_pool2d` backward is only correct when kernel == stride, and it
//! has no padding, so the overlapping 3x3/s2/p1 max-pool of the ResNet stem is
//! composed here from `cat`, `narrow`, `reshape` and `maximum`, which all have
//! a backward pass.

use candle_core::{bail, Result, Tensor};

/// Max-pooling over the last two dims with a square `kernel`, `stride` and
/// zero-cost `padding` (padded cells never win), differentiable end to end.
///
/// The window is separable, so it pools along the width and then along the
/// height. For each of the `kernel` offsets along an axis, the strided
/// subsample is taken by a `narrow` of length `stride * out`, a reshape to
/// `(out, stride)` and a `narrow` of the first column, and the offsets are
/// combined with `maximum`. Where several cells tie for the maximum, the
/// gradient is split between them (candle's `maximum` backward).
///
/// # Shapes
/// `(N, C, H, W)` to `(N, C, H', W')` with
/// `H' = (H + 2 * padding - kernel) / stride + 1`, rounded down (and likewise
/// for `W'`), as in PyTorch's `MaxPool2d` with `ceil_mode=False`.
///
/// # Errors
/// Fails if `x` is not rank 4, if `kernel` or `stride` is zero, if
/// `padding > kernel / 2`, or if the padded input is smaller than the kernel.
pub fn max_pool2d_padded(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    x.dims4()?;
    if kernel == 0 || stride == 0 {
        bail!("max-pool kernel ({kernel}) and stride ({stride}) must be positive")
    }
    if padding > kernel / 2 {
        bail!("max-pool padding ({padding}) must be at most half the kernel ({kernel})")
    }
    let x = pool_axis(x, 3, kernel, stride, padding)?;
    pool_axis(&x, 2, kernel, stride, padding)
}

/// Max-pooling along one axis of `x`.
fn pool_axis(
    x: &Tensor,
    dim: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let len = x.dim(dim)?;
    if len + 2 * padding < kernel {
        bail!(
            "max-pool input of size {len} along dim {dim} is smaller than the kernel ({kernel}) \
             with padding {padding}"
        )
    }
    let out = (len + 2 * padding - kernel) / stride + 1;
    // Every offset reads `stride * out` cells starting at `offset`, so the
    // padded axis must be at least `kernel - 1 + stride * out` long.
    let after = (kernel - 1 + stride * out).saturating_sub(len + padding);
    let padded = pad_lowest(x, dim, padding, after)?;
    let mut dims = padded.dims().to_vec();
    dims[dim] = out;
    dims.insert(dim + 1, stride);
    let mut pooled: Option<Tensor> = None;
    for offset in 0..kernel {
        let taps = padded
            .narrow(dim, offset, stride * out)?
            .reshape(dims.as_slice())?
            .narrow(dim + 1, 0, 1)?
            .squeeze(dim + 1)?;
        pooled = Some(match pooled {
            None => taps,
            Some(acc) => acc.maximum(&taps)?,
        });
    }
    match pooled {
        Some(p) => Ok(p),
        None => bail!("max-pool kernel must be positive"),
    }
}

/// Pads `dim` of `x` with `before` and `after` cells holding the lowest finite
/// `f32`, which no real activation beats.
fn pad_lowest(x: &Tensor, dim: usize, before: usize, after: usize) -> Result<Tensor> {
    let block = |n: usize| -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        dims[dim] = n;
        Tensor::full(f32::MIN, dims, x.device())?.to_dtype(x.dtype())
    };
    let mut parts = Vec::with_capacity(3);
    if before > 0 {
        parts.push(block(before)?);
    }
    parts.push(x.clone());
    if after > 0 {
        parts.push(block(after)?);
    }
    Tensor::cat(&parts, dim)
}

/// Global average pooling: the mean over the spatial dims.
///
/// # Shapes
/// `(N, C, H, W)` to `(N, C)`.
///
/// # Errors
/// Fails if `x` is not rank 4.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.dims4()?;
    x.mean((2, 3))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use candle_core::{DType, Device, Var};
    use selfsup_data::Rng;

    fn random(shape: &[usize], seed: u64) -> Result<Tensor> {
        let mut rng = Rng::new(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
    }

    /// Brute-force 3x3/s2/p1 max-pool of one (H, W) plane: the output and,
    /// for each output cell, the flat index of the winning input cell.
    fn reference(plane: &[f32], h: usize, w: usize) -> (Vec<f32>, Vec<usize>, usize, usize) {
        let (oh, ow) = ((h + 2 - 3) / 2 + 1, (w + 2 - 3) / 2 + 1);
        let (mut out, mut arg) = (Vec::new(), Vec::new());
        for i in 0..oh {
            for j in 0..ow {
                let mut best = (f32::NEG_INFINITY, 0);
                for y in (2 * i).saturating_sub(1)..(2 * i + 2).min(h) {
                    for x in (2 * j).saturating_sub(1)..(2 * j + 2).min(w) {
                        if plane[y * w + x] > best.0 {
                            best = (plane[y * w + x], y * w + x);
                        }
                    }
                }
                out.push(best.0);
                arg.push(best.1);
            }
        }
        (out, arg, oh, ow)
    }

    #[test]
    fn forward_matches_candle_max_pool_on_prepadded_input() -> Result<()> {
        for (h, w) in [(8, 8), (7, 9), (5, 6)] {
            let x = random(&[2, 3, h, w], (h * 10 + w) as u64)?;
            let ours = max_pool2d_padded(&x, 3, 2, 1)?;
            let padded = pad_lowest(&pad_lowest(&x, 2, 1, 1)?, 3, 1, 1)?;
            let theirs = padded.max_pool2d_with_stride(3, 2)?;
            assert_eq!(ours.dims(), theirs.dims());
            let diff = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0);
        }
        // With kernel == stride and no padding, candle's op applies directly.
        let x = random(&[2, 2, 6, 4], 1)?;
        let ours = max_pool2d_padded(&x, 2, 2, 0)?;
        let theirs = x.max_pool2d(2)?;
        let diff = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }

    #[test]
    fn forward_and_gradient_match_brute_force_on_odd_sizes() -> Result<()> {
        for (h, w) in [(7, 5), (6, 9), (3, 3), (1, 2)] {
            let x = Var::from_tensor(&random(&[1, 1, h, w], (h * 31 + w) as u64)?)?;
            let y = max_pool2d_padded(x.as_tensor(), 3, 2, 1)?;
            let plane: Vec<f32> = x.as_tensor().flatten_all()?.to_vec1()?;
            let (want, arg, oh, ow) = reference(&plane, h, w);
            assert_eq!(y.dims(), &[1, 1, oh, ow]);
            assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, want);
            // loss = sum(y * c): each output sends c to its winning input.
            let c = random(&[1, 1, oh, ow], 99)?;
            let grads = (&y * &c)?.sum_all()?.backward()?;
            let g: Vec<f32> = match grads.get(x.as_tensor()) {
                Some(g) => g.flatten_all()?.to_vec1()?,
                None => bail!("no gradient for the max-pool input"),
            };
            let mut expected = vec![0f32; h * w];
            for (k, cv) in c.flatten_all()?.to_vec1::<f32>()?.into_iter().enumerate() {
                expected[arg[k]] += cv;
            }
            for (a, b) in g.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-6, "{g:?} vs {expected:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn output_sizes_and_errors() -> Result<()> {
        let x = Tensor::zeros((1, 1, 112, 111), DType::F32, &Device::Cpu)?;
        assert_eq!(max_pool2d_padded(&x, 3, 2, 1)?.dims(), &[1, 1, 56, 56]);
        assert_eq!(max_pool2d_padded(&x, 3, 1, 1)?.dims(), &[1, 1, 112, 111]);
        assert!(max_pool2d_padded(&x, 3, 2, 2).is_err());
        assert!(max_pool2d_padded(&x, 0, 2, 0).is_err());
        assert!(max_pool2d_padded(&x.flatten_all()?, 3, 2, 1).is_err());
        let g = global_avg_pool(&Tensor::ones((2, 3, 4, 5), DType::F32, &Device::Cpu)?)?;
        assert_eq!(g.to_vec2::<f32>()?, vec![vec![1.0; 3]; 2]);
        Ok(())
    }
}
