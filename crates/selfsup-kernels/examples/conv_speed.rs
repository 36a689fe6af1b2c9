//! Times forward and forward+backward of the small-cnn's convolutions at
//! B=512 with candle's `conv2d` and with `selfsup_kernels::conv2d`.
//!
//! Run with `cargo run --release -p selfsup-kernels --example conv_speed`.
//! Timings are the best of a few repetitions and are noisy on a shared CPU.

use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};

/// Deterministic values in [-1, 1) from a 64-bit LCG.
fn rand(shape: &[usize], seed: u64) -> Result<Tensor> {
    let mut s = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
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

fn main() -> Result<()> {
    let b = 512;
    // (in channels, out channels, input size, stride, input needs a gradient)
    let layers = [
        (1, 32, 28, 1, false),
        (32, 64, 28, 2, true),
        (64, 128, 14, 2, true),
        (128, 256, 7, 2, true),
    ];
    let impls: [(&str, ConvFn); 2] = [
        ("candle", candle_conv),
        ("selfsup-kernels", selfsup_kernels::conv2d),
    ];
    println!(
        "B={b}, k3 p1, best of 3 (ms); CPU threads: {}",
        rayon::current_num_threads()
    );
    let mut totals = [(0.0, 0.0); 2];
    for (li, &(c, o, hw, s, x_grad)) in layers.iter().enumerate() {
        let x0 = rand(&[b, c, hw, hw], li as u64)?;
        let xv = Var::from_tensor(&x0)?;
        let x = if x_grad { xv.as_tensor().clone() } else { x0 };
        let w = Var::from_tensor(&(rand(&[o, c, 3, 3], 100 + li as u64)? * 0.1)?)?;
        let ho = (hw + 2 - 3) / s + 1;
        let r = rand(&[b, o, ho, ho], 200 + li as u64)?;
        // The loss itself ((out * r).sum() and its backward) is in both
        // fwd+bwd timings; measure it alone so it can be subtracted.
        let y = Var::from_tensor(&rand(&[b, o, ho, ho], 300 + li as u64)?)?;
        let loss = best_ms(3, || {
            (y.as_tensor() * &r)?.sum_all()?.backward().map(|_| ())
        })?;
        println!("{c:>3}->{o:<3} s{s} {hw:>2}x{hw:<2} loss alone (in both fwd+bwd) {loss:8.1}");
        for (k, (name, conv)) in impls.iter().enumerate() {
            let fwd = best_ms(3, || conv(&x, &w, s, 1).map(|_| ()))?;
            let both = best_ms(3, || {
                let out = conv(&x, &w, s, 1)?;
                (out * &r)?.sum_all()?.backward().map(|_| ())
            })?;
            totals[k].0 += fwd;
            totals[k].1 += both;
            println!(
                "{c:>3}->{o:<3} s{s} {hw:>2}x{hw:<2} x-grad {x_grad:<5} {name:<16} fwd {fwd:8.1}  fwd+bwd {both:8.1}"
            );
        }
    }
    for (k, (name, _)) in impls.iter().enumerate() {
        println!(
            "total {name:<16} fwd {:8.1}  fwd+bwd {:8.1}",
            totals[k].0, totals[k].1
        );
    }
    Ok(())
}
