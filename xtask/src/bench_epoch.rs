//! `cargo xtask bench --epoch`: one SimCLR Fashion-MNIST epoch end to end, data pipeline
//! included, through the real [`Trainer`], against a PyTorch + torchvision `DataLoader`
//! pipeline doing the same augmentations (`xtask/bench/pytorch_simclr_epoch.py`).
//! `--epoch-steps N` times the first N steps of the epoch on both sides. Results go to
//! `target/bench/bench_epoch.json`.
use crate::bench::{python_imports, run_reference, threads, wants_pytorch, write_results};
use anyhow::{Context, Result};
use candle_core::Device;
use selfsup::data::{idx, locate, Split};
use selfsup::train::{TrainConfig, Trainer};
use std::path::PathBuf;

/// Images per step on both sides.
const BATCH: usize = 256;

/// DataLoader worker processes of the PyTorch side. On this 2-core machine 2 workers
/// (one per core, each with one torch thread, beside the 2 compute threads) overlap the
/// augmentation with the step, as ours does with its loader thread; 0 would run them
/// one after the other. `python3 xtask/bench/pytorch_simclr_epoch.py --workers W`
/// times other choices.
const TORCH_WORKERS: usize = 2;

/// One side's timing of the first `steps` steps.
#[derive(serde::Serialize)]
struct EpochTime {
    steps: usize,
    seconds: f64,
    epoch_seconds: f64,
    images_per_s: f64,
    final_loss: Option<f64>,
}

impl EpochTime {
    fn new(steps: usize, per_epoch: usize, seconds: f64, final_loss: Option<f64>) -> Self {
        Self {
            steps,
            seconds,
            epoch_seconds: seconds * per_epoch as f64 / steps as f64,
            images_per_s: (steps * BATCH) as f64 / seconds,
            final_loss,
        }
    }
}

/// A folder of its own under the system temp dir, removed when dropped.
struct TempRun(PathBuf);

impl Drop for TempRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(epoch_steps: Option<usize>, compare: &str) -> Result<()> {
    if epoch_steps == Some(0) {
        anyhow::bail!("invalid setting `epoch-steps`: must be at least 1");
    }
    let compare = wants_pytorch(compare)?;
    let torch = compare && python_imports("torch, torchvision");
    if compare && !torch {
        eprintln!("python3 cannot import torch and torchvision: the PyTorch side is skipped");
    }
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "));

    let cfg = TrainConfig {
        dataset: "fashion-mnist".into(),
        encoder: "small-cnn".into(),
        width: 32,
        batch_size: BATCH,
        epochs: 1,
        max_steps: epoch_steps,
        // Only the checkpoint after the last step, which is not timed.
        checkpoint_every: usize::MAX,
        ..TrainConfig::for_method("simclr")
    };
    let dir =
        TempRun(std::env::temp_dir().join(format!("selfsup-bench-epoch-{}", std::process::id())));
    let mut trainer = Trainer::new(cfg, &dir.0, &Device::Cpu)?;
    let per_epoch = trainer.steps_per_epoch();
    let steps = epoch_steps.unwrap_or(per_epoch);
    anyhow::ensure!(
        steps <= per_epoch,
        "invalid setting `epoch-steps`: {steps} is more than the {per_epoch} steps of an epoch"
    );
    println!(
        "SimCLR on Fashion-MNIST, small-cnn w = 32, batch {BATCH}, {steps} of {per_epoch} steps, {} threads{}",
        threads(),
        load.as_deref()
            .map_or(String::new(), |l| format!(", load average {l}"))
    );
    // From the loader's start to the last optimizer step (`TrainOutcome::train_seconds`).
    let outcome = trainer.run()?;
    anyhow::ensure!(
        outcome.steps == steps,
        "the trainer ran {} steps, not {steps}",
        outcome.steps
    );
    let ours = EpochTime::new(
        steps,
        per_epoch,
        outcome.train_seconds,
        outcome.final_loss.map(f64::from),
    );
    let theirs = if torch {
        pytorch_epoch(steps, per_epoch)
            .map_err(|e| eprintln!("PyTorch reference failed: {e:#}"))
            .ok()
    } else {
        None
    };
    let ratio = theirs.as_ref().map(|t| t.seconds / ours.seconds);

    println!("| side | steps | seconds | epoch s (extrapolated) | img/s |");
    println!("|---|---|---|---|---|");
    let row = |side: &str, t: &EpochTime| {
        println!(
            "| {side} | {} | {:.1} | {:.1} | {:.1} |",
            t.steps, t.seconds, t.epoch_seconds, t.images_per_s
        );
    };
    row("selfsup (Trainer)", &ours);
    if let Some(t) = &theirs {
        row(&format!("PyTorch (DataLoader, {TORCH_WORKERS} workers)"), t);
    }
    if let Some(r) = ratio {
        println!("PyTorch time / ours: {r:.2}");
    }
    let json = serde_json::json!({
        "dataset": "fashion-mnist",
        "model": "small-cnn",
        "batch": BATCH,
        "threads": threads(),
        "steps_per_epoch": per_epoch,
        "load_average": load,
        "selfsup": ours,
        "pytorch": theirs,
        "pytorch_workers": TORCH_WORKERS,
        "pytorch_time_over_ours": ratio,
    });
    write_results("bench_epoch.json", &json)
}

/// The PyTorch side over the same IDX file the trainer read.
fn pytorch_epoch(steps: usize, per_epoch: usize) -> Result<EpochTime> {
    let (images, labels) = idx::file_names(Split::Train);
    let dir = locate("fashion-mnist", None, &[images, labels])?;
    let file = idx::resolve(&dir, images)
        .with_context(|| format!("{images} is not in {}", dir.display()))?;
    println!("PyTorch side: {steps} steps...");
    let v = run_reference(
        "pytorch_simclr_epoch.py",
        &[
            "--images".into(),
            file.display().to_string(),
            "--steps".into(),
            steps.to_string(),
            "--batch".into(),
            BATCH.to_string(),
            "--workers".into(),
            TORCH_WORKERS.to_string(),
        ],
    )?;
    let seconds = v["seconds"]
        .as_f64()
        .context("no seconds in the reference's output")?;
    Ok(EpochTime::new(
        steps,
        per_epoch,
        seconds,
        v["final_loss"].as_f64(),
    ))
}
