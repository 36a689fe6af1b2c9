//! `cargo xtask bench --profile`: where the time of one SimCLR step goes.
//!
//! The step's three phases (forward, backward, optimizer) and every selfsup-kernels
//! op are timed with `selfsup::kernels::profile`. Whatever a phase spends outside
//! our kernels is candle's own ops (matmuls of the heads, elementwise work, the loss,
//! autograd bookkeeping) and is shown as "candle ops".
use crate::bench::{candle_step_seconds, STEP_BACKWARD, STEP_FORWARD, STEP_OPTIMIZER};
use anyhow::Result;
use selfsup::kernels::profile;
use std::time::Duration;

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
    Ok(())
}
