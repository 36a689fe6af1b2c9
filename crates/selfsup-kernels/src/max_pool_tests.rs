//! Exactness tests of the max-pool: forward and input gradient against a
//! brute-force loop and against the composed fallback, over odd shapes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::{DType, Device, Result, Tensor, Var};

use crate::max_pool::{max_pool2d, max_pool2d_composed, pad_lowest};
use crate::test_util::{rand, rel_err};

/// `(kernel, stride, padding)` of the ResNet stem and of other common pools.
const POOLS: [(usize, usize, usize); 6] = [
    (3, 2, 1),
    (2, 2, 0),
    (3, 1, 1),
    (3, 3, 0),
    (5, 2, 2),
    (1, 1, 0),
];

/// Batch 1, channels 3 and 5, non-square planes, sides not divisible by
/// the stride.
const SHAPES: [[usize; 4]; 4] = [[1, 3, 7, 10], [2, 5, 9, 5], [1, 3, 8, 8], [2, 5, 11, 13]];

/// A random permutation of distinct values in [-1, 1): no ties anywhere.
fn distinct(shape: &[usize], seed: u64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let keys: Vec<f32> = rand(&[n], seed)?.to_vec1()?;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]).then(a.cmp(&b)));
    let mut v = vec![0f32; n];
    for (rank, &i) in order.iter().enumerate() {
        v[i] = rank as f32 / n as f32 * 2.0 - 1.0;
    }
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// Brute-force PyTorch max-pool: the output and, for each output cell, the
/// flat index of its winner in `x` (the first maximum in row-major order).
fn brute_force(x: &Tensor, (k, s, p): (usize, usize, usize)) -> Result<(Tensor, Vec<usize>)> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let v: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let (mut out, mut arg) = (Vec::new(), Vec::new());
    for plane in 0..n * c {
        for i in 0..oh {
            for j in 0..ow {
                let mut best: Option<(f32, usize)> = None;
                for di in 0..k {
                    for dj in 0..k {
                        let (y, x) = (
                            (i * s + di) as i64 - p as i64,
                            (j * s + dj) as i64 - p as i64,
                        );
                        if y < 0 || x < 0 || y >= h as i64 || x >= w as i64 {
                            continue;
                        }
                        let at = plane * h * w + y as usize * w + x as usize;
                        if best.is_none_or(|(b, _)| v[at] > b) {
                            best = Some((v[at], at));
                        }
                    }
                }
                let (b, at) = best.expect("every window holds a real cell");
                out.push(b);
                arg.push(at);
            }
        }
    }
    Ok((Tensor::from_vec(out, (n, c, oh, ow), &Device::Cpu)?, arg))
}

/// The gradient of `sum(pool(x) * r)`: each `r` added at its winner.
fn routed(x: &Tensor, arg: &[usize], r: &Tensor) -> Result<Tensor> {
    let mut g = vec![0f32; x.elem_count()];
    for (&at, rv) in arg.iter().zip(r.flatten_all()?.to_vec1::<f32>()?) {
        g[at] += rv;
    }
    Tensor::from_vec(g, x.dims(), &Device::Cpu)
}

/// The input gradient of `sum(pool(x) * r)`.
fn grad_of(pool: impl Fn(&Tensor) -> Result<Tensor>, x: &Var, r: &Tensor) -> Result<Tensor> {
    let grads = (pool(x.as_tensor())? * r)?.sum_all()?.backward()?;
    Ok(grads.get(x).expect("x gradient").clone())
}

#[test]
fn forward_and_gradient_match_brute_force_and_composed() -> Result<()> {
    for (si, shape) in SHAPES.iter().enumerate() {
        for (pi, &(k, s, p)) in POOLS.iter().enumerate() {
            let what = format!("{shape:?} kernel {k} stride {s} padding {p}");
            let x = Var::from_tensor(&distinct(shape, (si * 10 + pi) as u64)?)?;
            let y = max_pool2d(&x, k, s, p)?;
            let (want, arg) = brute_force(&x, (k, s, p))?;
            assert_eq!(y.dims(), want.dims(), "{what}");
            assert!(rel_err(&y, &want)? <= 1e-4, "{what}");
            let composed = max_pool2d_composed(&x, k, s, p)?;
            assert!(rel_err(&y, &composed)? <= 1e-4, "{what}");

            let r = rand(y.dims(), 100 + pi as u64)?;
            let g = grad_of(|t| max_pool2d(t, k, s, p), &x, &r)?;
            assert!(rel_err(&g, &routed(&x, &arg, &r)?)? <= 1e-4, "{what}");
            let g_composed = grad_of(|t| max_pool2d_composed(t, k, s, p), &x, &r)?;
            assert!(rel_err(&g, &g_composed)? <= 1e-4, "{what}");
        }
    }
    Ok(())
}

#[test]
fn ties_send_the_whole_gradient_to_the_first_maximum() -> Result<()> {
    // Three levels only, so most windows tie; plus a constant plane.
    let levels = (rand(&[2, 3, 9, 8], 7)? * 1.5)?.round()?;
    let constant = Tensor::ones((1, 1, 6, 5), DType::F32, &Device::Cpu)?;
    for x in [levels, constant] {
        for &(k, s, p) in &POOLS {
            let x = Var::from_tensor(&x)?;
            let (want, arg) = brute_force(&x, (k, s, p))?;
            assert_eq!(
                max_pool2d(&x, k, s, p)?.flatten_all()?.to_vec1::<f32>()?,
                want.flatten_all()?.to_vec1::<f32>()?
            );
            let r = rand(want.dims(), 8)?;
            let g = grad_of(|t| max_pool2d(t, k, s, p), &x, &r)?;
            assert!(rel_err(&g, &routed(&x, &arg, &r)?)? <= 1e-6);
        }
    }
    Ok(())
}

#[test]
fn composed_matches_candle_max_pool_on_a_prepadded_input() -> Result<()> {
    for (h, w) in [(8, 8), (7, 9), (5, 6)] {
        let x = distinct(&[2, 3, h, w], (h * 10 + w) as u64)?;
        let padded = pad_lowest(&pad_lowest(&x, 2, 1, 1)?, 3, 1, 1)?;
        let theirs = padded.max_pool2d_with_stride(3, 2)?;
        assert_eq!(rel_err(&max_pool2d_composed(&x, 3, 2, 1)?, &theirs)?, 0.0);
        assert_eq!(rel_err(&max_pool2d(&x, 3, 2, 1)?, &theirs)?, 0.0);
    }
    Ok(())
}

#[test]
fn a_tracked_input_gets_its_gradient_through_a_larger_graph() -> Result<()> {
    // conv -> pool -> sum of squares, against the same graph with the
    // composed pool; the weights get theirs too.
    let x = Var::from_tensor(&rand(&[2, 3, 11, 9], 11)?)?;
    let wt = Var::from_tensor(&rand(&[5, 3, 3, 3], 12)?)?;
    let loss = |pool: &dyn Fn(&Tensor) -> Result<Tensor>| -> Result<(Tensor, Tensor)> {
        let y = pool(&crate::conv2d(&x, &wt, 1, 1)?)?;
        let grads = y.sqr()?.sum_all()?.backward()?;
        let g = |v: &Var| grads.get(v).expect("gradient").clone();
        Ok((g(&x), g(&wt)))
    };
    let (gx, gw) = loss(&|t| max_pool2d(t, 3, 2, 1))?;
    let (gx_ref, gw_ref) = loss(&|t| max_pool2d_composed(t, 3, 2, 1))?;
    assert!(rel_err(&gx, &gx_ref)? <= 1e-4);
    assert!(rel_err(&gw, &gw_ref)? <= 1e-4);
    assert!(gx.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);

    // Directly: d sum(pool(3x)^2) / dx = 6 * pool(3x) at each winner.
    let x = Var::from_tensor(&distinct(&[1, 5, 9, 5], 13)?)?;
    let y = max_pool2d(&(x.as_tensor() * 3.0)?, 3, 2, 1)?;
    let g = y.sqr()?.sum_all()?.backward()?;
    let (_, arg) = brute_force(&x, (3, 2, 1))?;
    let want = routed(&x, &arg, &(&y * 6.0)?)?;
    assert!(rel_err(g.get(&x).expect("x gradient"), &want)? <= 1e-4);
    Ok(())
}

#[test]
fn a_strided_input_pools_like_its_contiguous_copy() -> Result<()> {
    let base = Var::from_tensor(&distinct(&[3, 2, 9, 10], 21)?)?;
    let x = base.transpose(0, 1)?.narrow(3, 1, 8)?;
    assert!(!x.is_contiguous());
    let y = max_pool2d(&x, 3, 2, 1)?;
    let (want, arg) = brute_force(&x.contiguous()?, (3, 2, 1))?;
    assert_eq!(rel_err(&y, &want)?, 0.0);
    let r = rand(y.dims(), 22)?;
    let g = (y * &r)?.sum_all()?.backward()?;
    let expected = routed(&x, &arg, &r)?
        .pad_with_zeros(3, 1, 1)?
        .transpose(0, 1)?;
    assert_eq!(
        rel_err(g.get(&base).expect("base gradient"), &expected)?,
        0.0
    );
    Ok(())
}

#[test]
fn a_nan_wins_its_windows_as_in_pytorch() -> Result<()> {
    let mut v: Vec<f32> = distinct(&[1, 1, 5, 5], 31)?.flatten_all()?.to_vec1()?;
    v[2 * 5 + 2] = f32::NAN; // the centre: only in the middle window
    let x = Var::from_tensor(&Tensor::from_vec(v, (1, 1, 5, 5), &Device::Cpu)?)?;
    let y = max_pool2d(&x, 3, 2, 1)?;
    let ys: Vec<f32> = y.flatten_all()?.to_vec1()?;
    assert_eq!(
        ys.iter().map(|v| v.is_nan()).collect::<Vec<_>>(),
        [false, false, false, false, true, false, false, false, false]
    );
    let g = y.sum_all()?.backward()?;
    let g: Vec<f32> = g.get(&x).expect("x gradient").flatten_all()?.to_vec1()?;
    assert_eq!(g[2 * 5 + 2], 1.0);
    Ok(())
}

#[test]
fn other_dtypes_fall_back_to_the_composed_pool() -> Result<()> {
    let x = distinct(&[2, 3, 7, 6], 41)?;
    let x64 = Var::from_tensor(&x.to_dtype(DType::F64)?)?;
    let y64 = max_pool2d(&x64, 3, 2, 1)?;
    assert_eq!(y64.dtype(), DType::F64);
    assert_eq!(
        rel_err(&y64.to_dtype(DType::F32)?, &max_pool2d(&x, 3, 2, 1)?)?,
        0.0
    );
    let g = y64.sum_all()?.backward()?;
    let (_, arg) = brute_force(&x, (3, 2, 1))?;
    let want = routed(
        &x,
        &arg,
        &Tensor::ones(y64.dims(), DType::F32, &Device::Cpu)?,
    )?;
    let g = g.get(&x64).expect("x gradient").to_dtype(DType::F32)?;
    assert_eq!(rel_err(&g, &want)?, 0.0);
    Ok(())
}

#[test]
fn bad_arguments_give_errors_that_name_the_problem() -> Result<()> {
    let x = Tensor::zeros((1, 2, 5, 4), DType::F32, &Device::Cpu)?;
    let err = |x: &Tensor, k, s, p| match max_pool2d(x, k, s, p) {
        Ok(_) => panic!("kernel {k} stride {s} padding {p} on {:?} passed", x.dims()),
        Err(e) => e.to_string(),
    };
    assert!(err(&x, 3, 0, 1).contains("stride (0) must be positive"));
    assert!(err(&x, 0, 2, 0).contains("kernel (0)"));
    assert!(err(&x, 3, 2, 2).contains("padding (2) must be at most half the kernel (3)"));
    assert!(err(&x, 6, 1, 0).contains("input of size 5 along dim 2 is smaller than the kernel (6)"));
    assert!(err(&x, 5, 1, 0).contains("input of size 4 along dim 3 is smaller than the kernel (5)"));
    assert!(err(&x.flatten_all()?, 3, 2, 1).contains("rank"));
    // The fallback checks the same way.
    let x64 = x.to_dtype(DType::F64)?;
    assert!(err(&x64, 3, 2, 2).contains("padding (2)"));
    // The padded input may be exactly as large as the kernel.
    assert_eq!(max_pool2d(&x, 7, 1, 3)?.dims(), &[1, 2, 5, 4]);
    assert_eq!(
        max_pool2d(&x.narrow(3, 0, 1)?, 3, 2, 1)?.dims(),
        &[1, 2, 3, 1]
    );
    Ok(())
}
