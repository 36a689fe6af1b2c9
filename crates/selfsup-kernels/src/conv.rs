//! 2-D convolution as im2col + one matmul.

use candle_core::{bail, DType, Result, Tensor};

use crate::im2col::{im2col, ConvGeometry};

/// 2-D convolution (cross-correlation, like PyTorch's `conv2d`) with exact
/// autograd, computed as im2col followed by one multi-threaded matmul.
///
/// Same result as candle's `x.conv2d(w, padding, stride, 1, 1)` (no
/// dilation, one group), but its backward pass is a matmul plus col2im
/// instead of candle's direct `conv_transpose2d` loop. Both the kernel and
/// the input gradient are exact; the gradient for `x` is only computed when
/// `x` is tracked (a variable or derived from one), though candle's matmul
/// backward still forms the cheap gradient of the column matrix. Second
/// derivatives work.
///
/// On devices other than the CPU, or when `x` or `w` is not `f32`, this
/// calls candle's `Tensor::conv2d` instead.
///
/// # Shapes
///
/// - `x`: `(N, C, H, W)`, any strides.
/// - `w`: `(O, C, kh, kw)`.
/// - returns: `(N, O, Ho, Wo)`, contiguous, with
///   `Ho = (H + 2 * padding - kh) / stride + 1` and likewise `Wo`.
///
/// # Errors
///
/// Fails when `x` or `w` is not 4-D, their channel counts differ, `stride`
/// is zero, the padded input is smaller than the kernel, or the dtypes
/// differ.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 || w.dtype() != DType::F32 {
        return x.conv2d(w, padding, stride, 1, 1);
    }
    let (n, c, h, wd) = x.dims4()?;
    let (o, cw, kh, kw) = w.dims4()?;
    if cw != c {
        bail!("conv2d: input has {c} channels but the kernel expects {cw}")
    }
    let geom = ConvGeometry::new((n, c, h, wd), (kh, kw), stride, padding)?;
    let (ho, wo) = geom.output_hw();
    let cols = im2col(x, geom)?;
    let out = w.reshape((o, c * kh * kw))?.matmul(&cols)?;
    out.reshape((o, n, ho, wo))?.transpose(0, 1)?.contiguous()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::im2col::col2im;
    use crate::test_util::{rand, rel_err};
    use candle_core::{Device, Var};

    /// An independent convolution built from candle primitives whose
    /// backward passes are correct (pad, narrow, index_select, matmul).
    fn conv_by_taps(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
        let (n, c, h, wd) = x.dims4()?;
        let (o, _, kh, kw) = w.dims4()?;
        let ho = (h + 2 * padding - kh) / stride + 1;
        let wo = (wd + 2 * padding - kw) / stride + 1;
        let xp = x.pad_with_zeros(2, padding, padding)?;
        let xp = xp.pad_with_zeros(3, padding, padding)?;
        let picks = |len: usize| {
            let idx: Vec<u32> = (0..len).map(|i| (i * stride) as u32).collect();
            Tensor::new(idx, &Device::Cpu)
        };
        let (ih, iw) = (picks(ho)?, picks(wo)?);
        let mut out: Option<Tensor> = None;
        for i in 0..kh {
            for j in 0..kw {
                let patch = xp
                    .narrow(2, i, (ho - 1) * stride + 1)?
                    .contiguous()?
                    .index_select(&ih, 2)?;
                let patch = patch
                    .narrow(3, j, (wo - 1) * stride + 1)?
                    .contiguous()?
                    .index_select(&iw, 3)?;
                let patch = patch.transpose(0, 1)?.reshape((c, n * ho * wo))?;
                let tap = w.narrow(2, i, 1)?.narrow(3, j, 1)?.reshape((o, c))?;
                let term = tap.matmul(&patch)?;
                out = Some(match out {
                    Some(acc) => (acc + term)?,
                    None => term,
                });
            }
        }
        let Some(out) = out else {
            bail!("empty kernel")
        };
        out.reshape((o, n, ho, wo))?.transpose(0, 1)
    }

    /// Forward against candle's conv2d; gradients for `x` and `w` against
    /// [`conv_by_taps`] and, when `candle_bwd` is set, also against candle's
    /// conv2d backward (which fails when the two axes need different
    /// `output_padding`: it takes the height's for both).
    fn check(
        x_shape: [usize; 4],
        w_shape: [usize; 4],
        stride: usize,
        padding: usize,
        candle_bwd: bool,
    ) -> Result<()> {
        let x = Var::from_tensor(&rand(&x_shape, 1)?)?;
        let w = Var::from_tensor(&rand(&w_shape, 2)?)?;
        let tag = format!("x {x_shape:?} w {w_shape:?} s {stride} p {padding}");
        let ours = conv2d(&x, &w, stride, padding)?;
        let candle = x.conv2d(&w, padding, stride, 1, 1)?;
        let e = rel_err(&ours, &candle)?;
        assert!(e < 1e-4, "forward {tag}: {e}");
        let taps = conv_by_taps(&x, &w, stride, padding)?;
        let e = rel_err(&taps, &candle)?;
        assert!(e < 1e-4, "reference forward {tag}: {e}");
        let r = rand(candle.dims(), 3)?;
        let loss = |out: &Tensor| (out * &r)?.sum_all()?.backward();
        let g_ours = loss(&ours)?;
        let mut refs = vec![loss(&taps)?];
        if candle_bwd {
            refs.push(loss(&candle)?);
        }
        for g_ref in &refs {
            for (name, v) in [("x", &x), ("w", &w)] {
                let (Some(a), Some(b)) = (g_ours.get(v), g_ref.get(v)) else {
                    panic!("missing {name} gradient for {tag}")
                };
                let e = rel_err(a, b)?;
                assert!(e < 1e-4, "grad {name} {tag}: {e}");
            }
        }
        Ok(())
    }

    #[test]
    fn matches_candle_on_odd_shapes() -> Result<()> {
        check([2, 3, 9, 7], [5, 3, 3, 3], 1, 1, true)?;
        check([2, 3, 9, 7], [5, 3, 3, 3], 1, 0, true)?;
        check([2, 3, 9, 7], [5, 3, 3, 3], 2, 1, true)?;
        check([2, 3, 10, 8], [5, 3, 3, 3], 2, 0, true)?;
        check([2, 3, 10, 7], [5, 3, 3, 3], 2, 0, false)?;
        check([1, 3, 8, 11], [5, 3, 1, 1], 1, 0, true)?;
        check([1, 3, 8, 11], [5, 3, 1, 1], 2, 0, false)?;
        check([1, 3, 8, 11], [5, 3, 1, 1], 2, 1, false)?;
        check([2, 3, 13, 10], [5, 3, 7, 7], 2, 3, false)?;
        check([2, 3, 13, 11], [5, 3, 7, 7], 2, 3, true)?;
        check([3, 1, 5, 6], [4, 1, 3, 3], 1, 1, true)?;
        check([2, 6, 5, 4], [7, 6, 3, 3], 2, 1, false)?;
        check([2, 6, 5, 5], [7, 6, 3, 3], 2, 1, true)?;
        Ok(())
    }

    #[test]
    fn candle_conv_backward_fails_on_mixed_output_padding() -> Result<()> {
        // Documents the candle 0.11 bug that `check(.., false)` works around.
        let x = Var::from_tensor(&rand(&[2, 3, 10, 7], 1)?)?;
        let w = rand(&[5, 3, 3, 3], 2)?;
        assert!(x.conv2d(&w, 0, 2, 1, 1)?.sum_all()?.backward().is_err());
        assert!(conv2d(&x, &w, 2, 0)?.sum_all()?.backward().is_ok());
        Ok(())
    }

    #[test]
    fn matches_candle_on_small_cnn_shapes() -> Result<()> {
        check([4, 1, 28, 28], [8, 1, 3, 3], 1, 1, true)?;
        check([4, 8, 28, 28], [16, 8, 3, 3], 2, 1, true)?;
        check([4, 16, 7, 7], [24, 16, 3, 3], 2, 1, true)?;
        Ok(())
    }

    #[test]
    fn strided_input_view() -> Result<()> {
        // A (C, N, H, W) tensor viewed as (N, C, H, W).
        let base = rand(&[3, 2, 6, 5], 4)?;
        let x = base.transpose(0, 1)?;
        let w = rand(&[4, 3, 3, 3], 5)?;
        let e = rel_err(
            &conv2d(&x, &w, 2, 1)?,
            &x.contiguous()?.conv2d(&w, 1, 2, 1, 1)?,
        )?;
        assert!(e < 1e-4, "{e}");
        Ok(())
    }

    #[test]
    fn untracked_input_gets_no_gradient() -> Result<()> {
        let x = rand(&[2, 3, 6, 6], 6)?;
        let w = Var::from_tensor(&rand(&[4, 3, 3, 3], 7)?)?;
        let grads = conv2d(&x, &w, 1, 1)?.sum_all()?.backward()?;
        assert!(grads.get(&x).is_none());
        let gw = grads.get(&w).map(|g| g.abs().and_then(|a| a.sum_all()));
        let gw = gw.transpose()?.map(|s| s.to_scalar::<f32>()).transpose()?;
        assert!(gw.is_some_and(|s| s.is_finite() && s > 0.0));
        Ok(())
    }

    #[test]
    fn im2col_and_col2im_are_adjoint() -> Result<()> {
        let geom = ConvGeometry::new((2, 3, 7, 6), (3, 3), 2, 1)?;
        let x = rand(&[2, 3, 7, 6], 8)?;
        let (rows, len) = geom.cols_shape();
        let y = rand(&[rows, len], 9)?;
        let lhs = (im2col(&x, geom)? * &y)?.sum_all()?.to_scalar::<f32>()?;
        let rhs = (col2im(&y, geom)? * &x)?.sum_all()?.to_scalar::<f32>()?;
        assert!(
            (lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
        Ok(())
    }

    #[test]
    fn im2col_and_col2im_backward_are_each_other() -> Result<()> {
        let geom = ConvGeometry::new((2, 3, 7, 6), (3, 3), 2, 1)?;
        let (rows, len) = geom.cols_shape();
        let x = Var::from_tensor(&rand(&[2, 3, 7, 6], 20)?)?;
        let y = Var::from_tensor(&rand(&[rows, len], 21)?)?;
        let (cy, cx) = (rand(&[rows, len], 22)?, rand(&[2, 3, 7, 6], 23)?);
        let gx = (im2col(&x, geom)? * &cy)?.sum_all()?.backward()?;
        let gy = (col2im(&y, geom)? * &cx)?.sum_all()?.backward()?;
        let (Some(gx), Some(gy)) = (gx.get(&x), gy.get(&y)) else {
            panic!("missing gradient")
        };
        assert!(rel_err(gx, &col2im(&cy, geom)?)? < 1e-6);
        assert!(rel_err(gy, &im2col(&cx, geom)?)? < 1e-6);
        Ok(())
    }

    #[test]
    fn second_derivative_matches_candle() -> Result<()> {
        // candle detaches gradients unless this is set; it is read once per
        // thread, so run the check on a fresh thread.
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
        let run = || -> Result<()> {
            // d/dw of <dL/dx, v>, where L = <conv(x, w), r>.
            let x = Var::from_tensor(&rand(&[2, 3, 6, 5], 10)?)?;
            let w = Var::from_tensor(&rand(&[4, 3, 3, 3], 11)?)?;
            let r = rand(&[2, 4, 3, 3], 12)?;
            let v = rand(&[2, 3, 6, 5], 13)?;
            let second = |out: Tensor| -> Result<Tensor> {
                let g = (out * &r)?.sum_all()?.backward()?;
                let Some(gx) = g.get(&x) else {
                    bail!("no x gradient")
                };
                let g2 = (gx * &v)?.sum_all()?.backward()?;
                let Some(gw) = g2.get(&w) else {
                    bail!("no second-order w gradient")
                };
                Ok(gw.clone())
            };
            let ours = second(conv2d(&x, &w, 2, 1)?)?;
            let reference = second(conv_by_taps(&x, &w, 2, 1)?)?;
            let e = rel_err(&ours, &reference)?;
            assert!(e < 1e-4, "{e}");
            Ok(())
        };
        match std::thread::spawn(run).join() {
            Ok(res) => res,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    #[test]
    fn falls_back_for_f64() -> Result<()> {
        let x = rand(&[1, 2, 5, 5], 14)?.to_dtype(DType::F64)?;
        let w = rand(&[3, 2, 3, 3], 15)?.to_dtype(DType::F64)?;
        let ours = conv2d(&x, &w, 1, 1)?;
        assert_eq!(ours.dtype(), DType::F64);
        assert_eq!(ours.dims(), [1, 3, 5, 5]);
        Ok(())
    }

    #[test]
    fn rejects_bad_shapes() -> Result<()> {
        let x = rand(&[1, 2, 5, 5], 16)?;
        assert!(conv2d(&x, &rand(&[3, 4, 3, 3], 17)?, 1, 1).is_err());
        assert!(conv2d(&x, &rand(&[3, 2, 7, 7], 18)?, 1, 0).is_err());
        assert!(conv2d(&x, &rand(&[3, 2, 3, 3], 19)?, 0, 1).is_err());
        Ok(())
    }
}
