//! Exactness tests of the convolution: forward against candle's `conv2d`,
//! both gradients against an independent convolution built from candle
//! primitives (and against candle's own backward where it works).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::{bail, DType, Device, Result, Tensor, Var};

use crate::conv::{conv2d, conv2d_in, conv2d_with, conv_transpose2d, ConvThreading};
use crate::format::MemoryFormat;
use crate::geometry::ConvGeometry;
use crate::im2col::{col2im, im2col};
use crate::test_util::{rand, rel_err};

/// An independent convolution built from candle primitives whose backward
/// passes are correct (pad, narrow, index_select, matmul).
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
/// `output_padding`: it takes the height's for both). Both threadings, and
/// channels last (the input permuted in, the output permuted back).
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
    let candle = x.conv2d(&w, padding, stride, 1, 1)?;
    let taps = conv_by_taps(&x, &w, stride, padding)?;
    let e = rel_err(&taps, &candle)?;
    assert!(e < 1e-4, "reference forward {tag}: {e}");
    let r = rand(candle.dims(), 3)?;
    let loss = |out: &Tensor| (out * &r)?.sum_all()?.backward();
    let mut refs = vec![loss(&taps)?];
    if candle_bwd {
        refs.push(loss(&candle)?);
    }
    let nhwc = MemoryFormat::Nhwc;
    let variants: [(&str, &dyn Fn() -> Result<Tensor>); 4] = [
        ("batch", &|| {
            conv2d_with(&x, &w, stride, padding, ConvThreading::Batch)
        }),
        ("gemm", &|| {
            conv2d_with(&x, &w, stride, padding, ConvThreading::Gemm)
        }),
        ("nhwc", &|| {
            let y = conv2d_in(&nhwc.from_nchw(&x)?, &w, stride, padding, nhwc)?;
            nhwc.to_nchw(&y)
        }),
        ("nhwc, rows not contiguous", &|| {
            // One more column, then narrowed away: the padded-copy path.
            let wide = nhwc.from_nchw(&x.pad_with_zeros(3, 0, 1)?)?;
            let view = wide.narrow(2, 0, x_shape[3])?;
            let y = conv2d_in(&view, &w, stride, padding, nhwc)?;
            nhwc.to_nchw(&y)
        }),
    ];
    for (threading, conv) in variants {
        let ours = conv()?;
        let e = rel_err(&ours, &candle)?;
        assert!(e < 1e-4, "forward {tag} {threading:?}: {e}");
        let g_ours = loss(&ours)?;
        for g_ref in &refs {
            for (name, v) in [("x", &x), ("w", &w)] {
                let (Some(a), Some(b)) = (g_ours.get(v), g_ref.get(v)) else {
                    panic!("missing {name} gradient for {tag}")
                };
                let e = rel_err(a, b)?;
                assert!(e < 1e-4, "grad {name} {tag} {threading:?}: {e}");
            }
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
fn matches_references_over_strides_paddings_and_kernels() -> Result<()> {
    // Every stride (1, 2, 3) x padding (0, 1, 2) x kernel (1, 3, 7), on
    // batch 1 and 3, non-square inputs and channel counts that are not
    // multiples of 8.
    for (k, h, w) in [(1, 5, 8), (3, 9, 6), (7, 11, 8)] {
        for stride in 1..=3 {
            for padding in 0..=2 {
                for (n, c, o) in [(1, 3, 5), (3, 9, 10)] {
                    check([n, c, h, w], [o, c, k, k], stride, padding, false)?;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn chunks_of_several_samples_and_a_partial_last_chunk() -> Result<()> {
    // Few output pixels per sample put several samples in one chunk: 7x7
    // outputs (6 per chunk, 40 = 6 * 6 + 4), 1x1 outputs (256 per chunk,
    // 300 = 256 + 44).
    check([40, 3, 7, 7], [5, 3, 3, 3], 1, 1, true)?;
    check([300, 2, 3, 3], [3, 2, 3, 3], 1, 0, true)?;
    check([13, 5, 4, 5], [6, 5, 3, 3], 2, 1, false)?;
    Ok(())
}

#[test]
fn winograd_matches_candle() -> Result<()> {
    // 3x3 stride-1 kernels with at least 16 input channels run channels
    // last as F(2x2, 3x3): odd and even output sizes (partial edge tiles),
    // every padding, batch 1, channel counts that are not multiples of 8,
    // outputs smaller than one tile, chunks of several samples.
    for padding in [0, 1, 2] {
        check([2, 17, 9, 7], [5, 17, 3, 3], 1, padding, padding == 1)?;
    }
    check([1, 16, 6, 8], [19, 16, 3, 3], 1, 1, true)?;
    check([3, 20, 3, 3], [7, 20, 3, 3], 1, 0, true)?;
    check([3, 20, 1, 2], [7, 20, 3, 3], 1, 1, true)?;
    check([70, 16, 4, 4], [9, 16, 3, 3], 1, 1, true)?;
    check([2, 33, 10, 11], [40, 33, 3, 3], 1, 1, true)
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
    // A (C, N, H, W) tensor viewed as (N, C, H, W), and an (N, C, W, H) one
    // viewed as (N, C, H, W) (columns not contiguous): forward and gradients.
    let views: [(&[usize], (usize, usize)); 2] = [(&[3, 2, 6, 5], (0, 1)), (&[2, 3, 5, 6], (2, 3))];
    for (seed, (shape, (a, b))) in views.into_iter().enumerate() {
        let base = Var::from_tensor(&rand(shape, 4 + seed as u64)?)?;
        let x = base.transpose(a, b)?;
        let w = Var::from_tensor(&rand(&[4, 3, 3, 3], 5)?)?;
        let xc = x.contiguous()?;
        let e = rel_err(&conv2d(&x, &w, 2, 1)?, &xc.conv2d(&w, 1, 2, 1, 1)?)?;
        assert!(e < 1e-4, "{e}");
        let ga = conv2d(&x, &w, 2, 1)?.sum_all()?.backward()?;
        let gb = conv_by_taps(&xc, &w, 2, 1)?.sum_all()?.backward()?;
        for v in [base.as_tensor(), w.as_tensor()] {
            let (Some(a), Some(b)) = (ga.get(v), gb.get(v)) else {
                panic!("missing gradient")
            };
            assert!(rel_err(a, b)? < 1e-4);
        }
    }
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
fn repeated_runs_are_bit_identical() -> Result<()> {
    let x = Var::from_tensor(&rand(&[37, 5, 9, 9], 24)?)?;
    let w = Var::from_tensor(&rand(&[6, 5, 3, 3], 25)?)?;
    let run = || -> Result<(Vec<f32>, Vec<f32>)> {
        let g = conv2d(&x, &w, 1, 1)?.sqr()?.sum_all()?.backward()?;
        let (Some(gx), Some(gw)) = (g.get(&x), g.get(&w)) else {
            bail!("missing gradient")
        };
        Ok((gx.flatten_all()?.to_vec1()?, gw.flatten_all()?.to_vec1()?))
    };
    assert_eq!(run()?, run()?);
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

/// Runs `f` on a fresh thread with `CANDLE_GRAD_DO_NOT_DETACH` set (candle
/// reads it once per thread and otherwise detaches gradients).
fn with_attached_grads(f: fn() -> Result<()>) -> Result<()> {
    std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
    match std::thread::spawn(f).join() {
        Ok(res) => res,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[test]
fn second_derivatives_match_the_reference() -> Result<()> {
    with_attached_grads(|| {
        let x = Var::from_tensor(&rand(&[2, 3, 6, 5], 10)?)?;
        let w = Var::from_tensor(&rand(&[4, 3, 3, 3], 11)?)?;
        let r = Var::from_tensor(&rand(&[2, 4, 3, 3], 12)?)?;
        let (v, vw) = (rand(&[2, 3, 6, 5], 13)?, rand(&[4, 3, 3, 3], 14)?);
        // L = <conv(x, w), r>; then the gradients of <dL/dx, v> and of
        // <dL/dw, vw> for x, w and r.
        let second = |out: Tensor| -> Result<Vec<Tensor>> {
            let g = (out * r.as_tensor())?.sum_all()?.backward()?;
            let (Some(gx), Some(gw)) = (g.get(&x), g.get(&w)) else {
                bail!("no first-order gradient")
            };
            let mut found = Vec::new();
            for (gv, dir) in [(gx, &v), (gw, &vw)] {
                let g2 = (gv * dir)?.sum_all()?.backward()?;
                for var in [&x, &w, &r] {
                    if let Some(t) = g2.get(var) {
                        found.push(t.clone());
                    }
                }
            }
            Ok(found)
        };
        let reference = second(conv_by_taps(&x, &w, 2, 1)?)?;
        let nhwc = MemoryFormat::Nhwc;
        let channels_last = conv2d_in(&nhwc.from_nchw(&x)?, &w, 2, 1, nhwc)?;
        for ours in [conv2d(&x, &w, 2, 1)?, nhwc.to_nchw(&channels_last)?] {
            let ours = second(ours)?;
            // d/dw and d/dr of <dL/dx, v>; d/dx and d/dr of <dL/dw, vw>.
            assert_eq!(ours.len(), 4);
            assert_eq!(reference.len(), 4);
            for (a, b) in ours.iter().zip(&reference) {
                let e = rel_err(a, b)?;
                assert!(e < 1e-4, "{e}");
            }
        }
        Ok(())
    })
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
    assert!(conv2d(&rand(&[2, 5, 5], 20)?, &rand(&[3, 2, 3, 3], 19)?, 1, 1).is_err());
    Ok(())
}

#[test]
fn empty_batch_gives_empty_output() -> Result<()> {
    let x = Var::from_tensor(&Tensor::zeros((0, 2, 5, 5), DType::F32, &Device::Cpu)?)?;
    let w = Var::from_tensor(&rand(&[3, 2, 3, 3], 21)?)?;
    let y = conv2d(&x, &w, 1, 1)?;
    assert_eq!(y.dims(), [0, 3, 5, 5]);
    let g = y.sum_all()?.backward()?;
    let gw = g.get(&w).map(|t| t.abs().and_then(|a| a.sum_all()));
    let gw = gw.transpose()?.map(|s| s.to_scalar::<f32>()).transpose()?;
    assert_eq!(gw, Some(0.0));
    Ok(())
}

/// The transposed convolution against candle's `conv_transpose2d` (forward and, where
/// candle's backward is right, both gradients) and against the adjoint identity
/// `<convᵀ(x, w), v> = <x, conv(v, w)>`, over odd shapes.
#[test]
fn transposed_convolution_matches_candle_and_is_the_adjoint() -> Result<()> {
    for (x_shape, w_shape, stride, padding) in [
        ([2, 3, 4, 4], [3, 5, 4, 4], 2, 1),
        ([1, 6, 5, 3], [6, 2, 4, 4], 2, 1),
        ([3, 4, 7, 7], [4, 3, 3, 3], 1, 1),
        ([2, 5, 3, 6], [5, 7, 3, 3], 2, 0),
        ([2, 2, 2, 2], [2, 4, 4, 4], 2, 1),
    ] {
        let tag = format!("x {x_shape:?} w {w_shape:?} s {stride} p {padding}");
        let x = Var::from_tensor(&rand(&x_shape, 4)?)?;
        let w = Var::from_tensor(&rand(&w_shape, 5)?)?;
        let ours = conv_transpose2d(&x, &w, stride, padding)?;
        let candle = x.conv_transpose2d(&w, padding, 0, stride, 1)?;
        assert_eq!(ours.dims(), candle.dims(), "{tag}");
        let e = rel_err(&ours, &candle)?;
        assert!(e < 1e-4, "forward {tag}: {e}");
        let v = rand(ours.dims(), 6)?;
        let lhs = (&ours * &v)?.sum_all()?.to_scalar::<f32>()?;
        let rhs = (x.as_tensor() * conv2d(&v, &w, stride, padding)?)?
            .sum_all()?
            .to_scalar::<f32>()?;
        assert!(
            (lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0),
            "adjoint {tag}: {lhs} vs {rhs}"
        );
        let loss = |out: &Tensor| (out * &v)?.sum_all()?.backward();
        let (g_ours, g_candle) = (loss(&ours)?, loss(&candle)?);
        for (name, var) in [("x", &x), ("w", &w)] {
            let (Some(a), Some(b)) = (g_ours.get(var), g_candle.get(var)) else {
                panic!("missing {name} gradient for {tag}")
            };
            let e = rel_err(a, b)?;
            assert!(e < 1e-4, "grad {name} {tag}: {e}");
        }
    }
    assert!(conv_transpose2d(&rand(&[1, 2, 3, 3], 1)?, &rand(&[3, 2, 4, 4], 1)?, 2, 1).is_err());
    assert!(conv_transpose2d(&rand(&[1, 2, 1, 1], 1)?, &rand(&[2, 2, 1, 1], 1)?, 1, 1).is_err());
    Ok(())
}

/// A sample's output does not depend on the rest of the batch, bit for bit: the
/// data-parallel equivalence relies on it (two ranks at batch B against one
/// process at 2B).
#[test]
fn a_samples_output_does_not_depend_on_its_batch() -> Result<()> {
    for (c, o, hw, s) in [(1, 4, 28, 1), (4, 8, 28, 2), (8, 16, 14, 2), (16, 32, 7, 2)] {
        let x = rand(&[16, c, hw, hw], 1)?;
        let w = rand(&[o, c, 3, 3], 2)?;
        let whole = conv2d(&x, &w, s, 1)?.narrow(0, 8, 8)?;
        let half = conv2d(&x.narrow(0, 8, 8)?, &w, s, 1)?;
        let diff = (whole - half)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff == 0.0, "{c}->{o} {hw}x{hw} s{s}: {diff}");
    }
    Ok(())
}

/// F(2x2, 3x3) at resnet18-cifar's stride-1 shapes (a smaller batch): the
/// forward and both gradients within 1e-5 of the direct convolution, both
/// at their largest and on average (the `rel_err` bound of the other tests
/// is relative to the largest value only).
#[test]
fn winograd_error_at_resnet_shapes() -> Result<()> {
    let mean_rel = |p: &Tensor, q: &Tensor| -> Result<f32> {
        let d = (p - q)?.abs()?.mean_all()?.to_scalar::<f32>()?;
        Ok(d / q.abs()?.mean_all()?.to_scalar::<f32>()?)
    };
    for (n, c, h) in [(8, 64, 32), (8, 128, 16), (16, 256, 8), (32, 512, 4)] {
        let x = Var::from_tensor(&rand(&[n, c, h, h], 1)?)?;
        let w = Var::from_tensor(&(rand(&[c, c, 3, 3], 2)? * 0.05)?)?;
        let nhwc = MemoryFormat::Nhwc;
        let ours = nhwc.to_nchw(&conv2d_in(&nhwc.from_nchw(&x)?, &w, 1, 1, nhwc)?)?;
        let direct = conv2d(&x, &w, 1, 1)?;
        let r = rand(direct.dims(), 3)?;
        let g_ours = (&ours * &r)?.sum_all()?.backward()?;
        let g_direct = (&direct * &r)?.sum_all()?.backward()?;
        let (Some(dx), Some(dx_ref), Some(dw), Some(dw_ref)) = (
            g_ours.get(&x),
            g_direct.get(&x),
            g_ours.get(&w),
            g_direct.get(&w),
        ) else {
            bail!("missing gradients")
        };
        for (name, a, b) in [
            ("y", &ours, &direct),
            ("dx", dx, dx_ref),
            ("dw", dw, dw_ref),
        ] {
            let (max, mean) = (rel_err(a, b)?, mean_rel(a, b)?);
            assert!(
                max < 1e-5 && mean < 1e-5,
                "{name} c {c} h {h}: {max} {mean}"
            );
        }
    }
    Ok(())
}
