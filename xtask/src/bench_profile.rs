//! `cargo xtask bench --profile`: where the time of one SimCLR step goes.
//!
//! The step's three phases (forward, backward, optimizer) and every selfsup-kernels
//! op are timed with `selfsup::kernels::profile`. Whatever a phase spends outside
//! our kernels is candle's own ops (matmuls of the heads, elementwise work, the loss,
//! autograd bookkeeping) and is shown as "candle ops".
use crate::bench::{candle_step_seconds, threads, STEP_BACKWARD, STEP_FORWARD, STEP_OPTIMIZER};
use anyhow::Result;
use selfsup::kernels::{profile, sgemm};
use std::time::{Duration, Instant};

/// Kernel ops that run in the forward phase; every other op-level scope runs in backward.
const FORWARD_OPS: &[&str] = &[
    "conv.fwd",
    "bn.stats",
    "bn.fwd",
    "relu.fwd",
    "maxpool.fwd",
    "im2col",
];

/// Runs `steps` timed SimCLR steps of `model` with the profiler on and prints the breakdown.
///
/// # Errors
/// If a step fails.
pub fn print_profile(
    model: &str,
    channels: usize,
    size: usize,
    batch: usize,
    steps: usize,
) -> Result<()> {
    profile::enable(true);
    let seconds = candle_step_seconds(model, channels, size, batch, steps);
    profile::enable(false);
    let seconds = seconds?;
    let flops = profile::take_flops();
    let totals = profile::take();
    let names: Vec<&str> = totals.iter().map(|(n, _, _)| n.as_str()).collect();
    // A piece runs inside another recorded scope whose name is its prefix.
    let is_piece = |name: &str| {
        names
            .iter()
            .any(|other| name.len() > other.len() && name.starts_with(&format!("{other}.")))
    };
    let per_step = |d: Duration| d.as_secs_f64() * 1e3 / steps.max(1) as f64;
    let phase = |name: &str| {
        totals
            .iter()
            .find(|(n, _, _)| n == name)
            .map_or(0.0, |(_, d, _)| per_step(*d))
    };
    let step_ms = seconds * 1e3;
    println!(
        "\nprofile: SimCLR step of {model}, batch {batch}, {steps} steps, {step_ms:.1} ms per step"
    );
    println!("| op | ms per step | % of step | calls per step |");
    println!("|---|---|---|---|");
    let (mut fwd_ops, mut bwd_ops) = (0.0, 0.0);
    let row = |name: &str, ms: f64, calls: Option<f64>| {
        let calls = calls.map_or("-".to_string(), |c| format!("{c:.0}"));
        println!(
            "| {name} | {ms:.1} | {:.1}% | {calls} |",
            100.0 * ms / step_ms
        );
    };
    for (name, time, calls) in &totals {
        if name.starts_with("step.") || is_piece(name) {
            continue;
        }
        let ms = per_step(*time);
        if FORWARD_OPS.contains(&name.as_str()) {
            fwd_ops += ms;
        } else {
            bwd_ops += ms;
        }
        row(name, ms, Some(*calls as f64 / steps.max(1) as f64));
    }
    let (fwd, bwd, opt) = (
        phase(STEP_FORWARD),
        phase(STEP_BACKWARD),
        phase(STEP_OPTIMIZER),
    );
    row("candle ops in forward", (fwd - fwd_ops).max(0.0), None);
    row("candle ops in backward", (bwd - bwd_ops).max(0.0), None);
    row("optimizer update", opt, Some(1.0));
    println!(
        "phases: forward {fwd:.1} ms, backward {bwd:.1} ms ({:.1}x forward), optimizer {opt:.1} ms",
        bwd / fwd.max(1e-9)
    );
    println!("pieces (summed over worker threads):");
    for (name, time, _) in totals.iter().filter(|(n, _, _)| is_piece(n)) {
        println!("  {name:<22} {:>8.1} ms per step", per_step(*time));
    }
    let conv_ops = ["conv.fwd", "conv.bwd", "conv.bwd.x", "conv.bwd.w"];
    let conv_ms: f64 = conv_ops.iter().map(|&op| phase(op)).sum();
    let conv_gflop: f64 =
        conv_ops.iter().filter_map(|&op| flops.get(op)).sum::<f64>() / 1e9 / steps.max(1) as f64;
    let conv_rate = conv_gflop / (conv_ms / 1e3).max(1e-12);
    let (n, sgemm_rate) = (SGEMM_SIDE, sgemm_gflops(SGEMM_SIDE)?);
    println!(
        "conv layers: {conv_gflop:.2} GFLOP per step in {conv_ms:.1} ms = {conv_rate:.1} GFLOP/s, \
         {:.0}% of sgemm's {sgemm_rate:.1} GFLOP/s ({n}x{n}x{n}, {} threads){}",
        100.0 * conv_rate / sgemm_rate,
        threads(),
        // F(2x2, 3x3) layers do 2.25x fewer multiply-adds than the count.
        if names.iter().any(|n| n.contains("winograd")) {
            "; direct-convolution flops, so an effective rate: the 3x3 stride-1 layers run as \
             Winograd F(2x2, 3x3)"
        } else {
            ""
        }
    );
    Ok(())
}

/// Side of the square matrices of the sgemm measurement.
const SGEMM_SIDE: usize = 1024;

/// The machine's sgemm rate: the best of five `n`³ products on all threads, with the
/// gemm that the convolutions and candle's CPU matmul use.
fn sgemm_gflops(n: usize) -> Result<f64> {
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let mut c = vec![0f32; n * n];
    sgemm(&a, &a, &mut c, (n, n, n), 0)?; // warm-up
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        sgemm(&a, &a, &mut c, (n, n, n), 0)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n * n * n) as f64 / best / 1e9)
}
