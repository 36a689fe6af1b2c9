//! Times forward and forward+backward of the small-cnn's convolutions at
//! B=512 with candle's `conv2d`, the older im2col + candle-matmul path, and
//! `selfsup_kernels::conv2d` (batch-parallel, the default, and with gemm's
//! own threading), and reports GFLOP/s against the machine's measured sgemm
//! rate (a 1024x1024x1024 product through the same `gemm` crate).
//!
//! Run with `cargo run --release -p selfsup-kernels --example conv_speed`.
//! Timings are the best of a few repetitions and are noisy on a shared CPU.

use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};
use selfsup_kernels::{conv2d_with, im2col, profile, sgemm, ConvGeometry, ConvThreading};

/// Deterministic values in [-1, 1) from a 64-bit LCG.
fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn rand(shape: &[usize], seed: u64) -> Result<Tensor> {
    let v = rand_vec(shape.iter().product(), seed);
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// Best wall time in ms of `reps` runs of `f`.
fn best_ms(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(best)
}

type ConvFn = fn(&Tensor, &Tensor, usize, usize) -> Result<Tensor>;

fn candle_conv(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    x.conv2d(w, padding, stride, 1, 1)
}

/// The previous selfsup-kernels path: im2col op, candle matmul, then a
/// transposing copy into `(N, O, Ho, Wo)`.
fn old_conv(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let (o, _, kh, kw) = w.dims4()?;
    let geom = ConvGeometry::new((n, c, h, wd), (kh, kw), stride, padding)?;
    let (ho, wo) = geom.output_hw();
    let cols = im2col(x, geom)?;
    let out = w.reshape((o, c * kh * kw))?.matmul(&cols)?;
    out.reshape((o, n, ho, wo))?.transpose(0, 1)?.contiguous()
}

fn new_batch(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    conv2d_with(x, w, stride, padding, ConvThreading::Batch)
}

fn new_gemm(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    conv2d_with(x, w, stride, padding, ConvThreading::Gemm)
}

/// `gflop / ms` as GFLOP/s, or n/a when the time is not positive.
fn rate(gflop: f64, ms: f64) -> String {
    if ms > 0.0 {
        format!("{:6.1} GFLOP/s", gflop / (ms * 1e-3))
    } else {
        "   n/a GFLOP/s".to_string()
    }
}

/// GFLOP/s of a 1024^3 sgemm with `threads` threads (0: all).
fn sgemm_gflops(threads: usize) -> Result<f64> {
    let n = 1024;
    let (a, b) = (rand_vec(n * n, 1), rand_vec(n * n, 2));
    let mut c = vec![0f32; n * n];
    let ms = best_ms(5, || sgemm(&a, &b, &mut c, (n, n, n), threads))?;
    Ok(2.0 * (n * n * n) as f64 / (ms * 1e6))
}

fn main() -> Result<()> {
    let b = 512;
    // (in channels, out channels, input size, stride, input needs a gradient)
    let layers = [
        (1, 32, 28, 1, false),
        (32, 64, 28, 2, true),
        (64, 128, 14, 2, true),
        (128, 256, 7, 2, true),
    ];
    let impls: [(&str, ConvFn); 4] = [
        ("candle", candle_conv),
        ("old im2col+matmul", old_conv),
        ("new (batch-par)", new_batch),
        ("new (gemm-par)", new_gemm),
    ];
    let threads = rayon::current_num_threads();
    let (peak, one) = (sgemm_gflops(0)?, sgemm_gflops(1)?);
    println!("sgemm 1024^3: {peak:.1} GFLOP/s on {threads} threads, {one:.1} on 1 thread");
    println!("B={b}, k3 p1, best of 3 (ms); GFLOP/s of fwd+bwd exclude the loss's own time");
    let mut totals = [(0.0, 0.0); 4];
    for (li, &(c, o, hw, s, x_grad)) in layers.iter().enumerate() {
        let x0 = rand(&[b, c, hw, hw], li as u64)?;
        let xv = Var::from_tensor(&x0)?;
        let x = if x_grad { xv.as_tensor().clone() } else { x0 };
        let w = Var::from_tensor(&(rand(&[o, c, 3, 3], 100 + li as u64)? * 0.1)?)?;
        let ho = (hw + 2 - 3) / s + 1;
        // The loss itself (out.sum() and its backward) is in every fwd+bwd
        // timing; measure it alone so it can be subtracted.
        let y = Var::from_tensor(&rand(&[b, o, ho, ho], 300 + li as u64)?)?;
        let loss = best_ms(5, || y.sum_all()?.backward().map(|_| ()))?;
        let gflop = 2.0 * (b * o * c * 9 * ho * ho) as f64 / 1e9;
        let gflop_both = gflop * if x_grad { 3.0 } else { 2.0 };
        println!(
            "{c:>3}->{o:<3} s{s} {hw:>2}x{hw:<2} x-grad {x_grad:<5} fwd {gflop:.2} GFLOP, loss alone {loss:.1} ms"
        );
        for (k, (name, conv)) in impls.iter().enumerate() {
            // Warm up (first-touch page faults, thread start).
            conv(&x, &w, s, 1)?;
            let fwd = best_ms(3, || conv(&x, &w, s, 1).map(|_| ()))?;
            let both = best_ms(3, || {
                let out = conv(&x, &w, s, 1)?;
                out.sum_all()?.backward().map(|_| ())
            })?;
            totals[k].0 += fwd;
            totals[k].1 += both;
            println!(
                "    {name:<18} fwd {fwd:7.1} ms {}   fwd+bwd {both:7.1} ms {}",
                rate(gflop, fwd),
                rate(gflop_both, both - loss)
            );
        }
    }
    for (k, (name, _)) in impls.iter().enumerate() {
        println!(
            "total {name:<18} fwd {:8.1} ms  fwd+bwd {:8.1} ms",
            totals[k].0, totals[k].1
        );
    }
    // Where the default path spends its time: one fwd+bwd per layer.
    println!("profile of the default path, per layer (pieces add up all threads' time):");
    for (li, &(c, o, hw, s, x_grad)) in layers.iter().enumerate() {
        let x0 = rand(&[b, c, hw, hw], li as u64)?;
        let xv = Var::from_tensor(&x0)?;
        let x = if x_grad { xv.as_tensor().clone() } else { x0 };
        let w = Var::from_tensor(&(rand(&[o, c, 3, 3], 100 + li as u64)? * 0.1)?)?;
        new_batch(&x, &w, s, 1)?.sum_all()?.backward()?;
        profile::enable(true);
        new_batch(&x, &w, s, 1)?.sum_all()?.backward()?;
        profile::enable(false);
        let line: Vec<String> = profile::take()
            .iter()
            .map(|(name, time, _)| format!("{name} {:.0}", time.as_secs_f64() * 1e3))
            .collect();
        println!("  {c:>3}->{o:<3}: {}", line.join(", "));
    }
    Ok(())
}
