//! Pooling for the encoders.
//!
//! candle's `max_pool2d` backward is only correct when kernel == stride, and it
//! has no padding, so the overlapping 3x3/s2/p1 max-pool of the ResNet stem
//! uses [`selfsup_kernels::max_pool2d`]: a plane-parallel CPU op with an exact
//! backward, composed from differentiable candle ops on other devices.

use candle_core::{Result, Tensor};

/// Max-pooling over the last two dims with a square `kernel`, `stride` and
/// `padding` (padded cells never win), differentiable end to end: PyTorch's
/// `MaxPool2d` with `ceil_mode=False`. This is [`selfsup_kernels::max_pool2d`];
/// see there for how ties and devices are handled.
///
/// # Shapes
/// `(N, C, H, W)` to `(N, C, H', W')` with
/// `H' = (H + 2 * padding - kernel) / stride + 1`, rounded down (and likewise
/// for `W'`).
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
    selfsup_kernels::max_pool2d(x, kernel, stride, padding)
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
    use candle_core::{bail, DType, Device, Var};
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
