//! `cargo xtask bench`: SimCLR train-step and augmentation throughput, with the
//! PyTorch reference (`xtask/bench/pytorch_simclr_step.py`) run side by side when
//! `python3 -c 'import torch'` works, then the memory-bank and queue operations
//! ([`crate::bench_bank`]). Results go to `target/bench/*.json`. `--epoch` times a whole
//! training epoch instead ([`crate::bench_epoch`]).
use crate::cli::BenchArgs;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use selfsup::data::{Batch, Image, Rng, SimclrViews, ViewRecipe};
use selfsup::dist::tensor::{average_gradients, BUCKET_ELEMS};
use selfsup::dist::{Communicator, SingleProcess};
use selfsup::kernels::profile;
use selfsup::train::methods::{build_method, DataShape};
use selfsup::train::optim::{build_optimizer, trainable_params};
use selfsup::train::{sync_batch_norm_over, TrainConfig};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

/// Profiler scopes of the three phases of a timed step.
pub(crate) const STEP_FORWARD: &str = "step.forward";
/// See [`STEP_FORWARD`].
pub(crate) const STEP_BACKWARD: &str = "step.backward";
/// See [`STEP_FORWARD`].
pub(crate) const STEP_OPTIMIZER: &str = "step.optimizer";

#[derive(serde::Serialize)]
struct StepResult {
    model: String,
    batch: usize,
    threads: usize,
    seconds_per_step: f64,
    images_per_s: f64,
    pytorch_images_per_s: Option<f64>,
    ratio_to_pytorch: Option<f64>,
}

pub(crate) fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Seconds per SimCLR step (forward, loss, backward, SGD update) on random input.
pub(crate) fn candle_step_seconds(
    encoder: &str,
    channels: usize,
    size: usize,
    batch: usize,
    steps: usize,
) -> Result<f64> {
    group_step_seconds(
        Arc::new(SingleProcess),
        encoder,
        channels,
        size,
        batch,
        steps,
    )
}

/// [`candle_step_seconds`] as one rank of `comm`: projections gathered, batch norm
/// synchronised and gradients averaged over the ranks, as a data-parallel run does.
pub(crate) fn group_step_seconds(
    comm: Arc<dyn Communicator>,
    encoder: &str,
    channels: usize,
    size: usize,
    batch: usize,
    steps: usize,
) -> Result<f64> {
    let device = Device::Cpu;
    let cfg = TrainConfig {
        encoder: encoder.into(),
        batch_size: batch,
        ..Default::default()
    };
    let varmap = VarMap::new();
    let data = DataShape {
        channels,
        size,
        images: batch,
        clip_len: 1,
        ..DataShape::default()
    };
    let mut method = build_method(&cfg, data, &varmap, &device)?;
    let params = trainable_params(&varmap, &[]);
    let vars: Vec<_> = params.iter().map(|p| p.var.clone()).collect();
    let mut opt = build_optimizer(&cfg, params)?;
    if comm.world_size() > 1 {
        method
            .join_group(comm.clone())
            .map_err(anyhow::Error::msg)?;
    }
    let _sync = (comm.world_size() > 1).then(|| sync_batch_norm_over(comm.clone()));
    let view = || Tensor::randn(0f32, 1.0, (batch, channels, size, size), &device);
    let batch = Batch {
        views: vec![view()?, view()?],
        labels: None,
        indices: (0..batch).collect(),
        targets: None,
    };
    let mut step = || -> Result<()> {
        let loss = {
            let _t = profile::scope(STEP_FORWARD);
            method.loss(&batch)?
        };
        let grads = {
            let _t = profile::scope(STEP_BACKWARD);
            let mut grads = loss.backward()?;
            average_gradients(comm.as_ref(), &vars, &mut grads, BUCKET_ELEMS)?;
            grads
        };
        let _t = profile::scope(STEP_OPTIMIZER);
        opt.step(&grads, cfg.lr)?;
        Ok(())
    };
    step()?; // warm-up
    profile::take();
    let t = Instant::now();
    for _ in 0..steps {
        step()?;
    }
    Ok(t.elapsed().as_secs_f64() / steps as f64)
}

/// Whether `python3 -c 'import <modules>'` works (`modules`: e.g. `torch, torchvision`).
pub(crate) fn python_imports(modules: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether `--compare` asks for the PyTorch side (`pytorch`) or not (`none`).
pub(crate) fn wants_pytorch(compare: &str) -> Result<bool> {
    match compare {
        "pytorch" => Ok(true),
        "none" => Ok(false),
        other => anyhow::bail!("invalid setting `compare`: {other:?}; expected pytorch or none"),
    }
}

/// Runs the reference script `xtask/bench/<script>` with `args` and `--threads`
/// [`threads`], and parses the JSON object on the last line it prints.
pub(crate) fn run_reference(script: &str, args: &[String]) -> Result<serde_json::Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("bench")
        .join(script);
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .args(["--threads", &threads().to_string()])
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        anyhow::bail!("{}", err.lines().last().unwrap_or("failed"));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str(line)
        .with_context(|| format!("parsing the output of {}", script.display()))
}

/// Images/s of the PyTorch reference for the same model, batch and thread count.
fn pytorch_images_per_s(model: &str, batch: usize, steps: usize) -> Result<f64> {
    let args = [
        "--model".into(),
        model.into(),
        "--batch".into(),
        batch.to_string(),
        "--steps".into(),
        steps.to_string(),
    ];
    run_reference("pytorch_simclr_step.py", &args)?["images_per_s"]
        .as_f64()
        .context("no images_per_s in the reference's output")
}

/// Images/s of the SimCLR view recipe (two views per image) over 28x28 grayscale images.
fn augmentation_images_per_s() -> Result<f64> {
    use rayon::prelude::*;
    let n = 8192;
    let mut rng = Rng::new(0);
    let images: Vec<Image> = (0..64)
        .map(|_| Image {
            channels: 1,
            height: 28,
            width: 28,
            data: (0..784).map(|_| rng.f32()).collect(),
        })
        .collect();
    let recipe = SimclrViews::for_size(28);
    let t = Instant::now();
    let views: usize = (0..n)
        .into_par_iter()
        .map(|i| {
            recipe
                .views(&images[i % images.len()], &mut Rng::derive(0, &[i as u64]))
                .len()
        })
        .sum();
    anyhow::ensure!(
        views == 2 * n,
        "the recipe made {views} views for {n} images"
    );
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.dist {
        return crate::bench_dist::run(args.steps);
    }
    if args.bank {
        return bank_only(args.quick);
    }
    if args.epoch {
        return crate::bench_epoch::run(args.epoch_steps, &args.compare);
    }
    let compare = wants_pytorch(&args.compare)? && python_imports("torch");
    if args.compare == "pytorch" && !compare {
        eprintln!("python3 cannot import torch: the PyTorch side is skipped");
    }
    let mut models = vec![("small-cnn", 1, 28, 256)];
    if !args.quick {
        models.push(("resnet18-cifar", 3, 32, 128));
    }
    if args.profile {
        for &(model, channels, size, batch) in &models {
            crate::bench_profile::print_profile(model, channels, size, batch, args.steps)?;
        }
    }
    let mut results = Vec::new();
    println!("| SimCLR step | batch | threads | selfsup img/s | PyTorch img/s | ratio |");
    println!("|---|---|---|---|---|---|");
    for (model, channels, size, batch) in models {
        let s = candle_step_seconds(model, channels, size, batch, args.steps)?;
        let ours = batch as f64 / s;
        let theirs = if compare {
            pytorch_images_per_s(model, batch, args.steps)
                .map_err(|e| eprintln!("PyTorch reference for {model} failed: {e}"))
                .ok()
        } else {
            None
        };
        let ratio = theirs.map(|t| ours / t);
        let fmt = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
        println!(
            "| {model} | {batch} | {} | {ours:.1} | {} | {} |",
            threads(),
            fmt(theirs, 1),
            fmt(ratio, 2)
        );
        results.push(StepResult {
            model: model.into(),
            batch,
            threads: threads(),
            seconds_per_step: s,
            images_per_s: ours,
            pytorch_images_per_s: theirs,
            ratio_to_pytorch: ratio,
        });
    }
    let aug = augmentation_images_per_s()?;
    println!(
        "\nSimCLR augmentation (2 views, 28x28): {aug:.0} images/s on {} threads",
        threads()
    );
    let (bandwidth, bank) = bank_section(args.quick)?;
    let json = serde_json::json!({
        "train_step": results,
        "augmentation_images_per_s": aug,
        "threads": threads(),
        "memory_bandwidth_gb_per_s": bandwidth,
        "bank": bank,
    });
    write_results("bench.json", &json)
}

/// The memory bandwidth and the bank and queue operations (only Fashion-MNIST's size
/// when `quick`).
fn bank_section(quick: bool) -> Result<(f64, Vec<crate::bench_bank::BankResult>)> {
    let bandwidth = crate::bench_bank::memory_bandwidth();
    println!(
        "\nmemory bandwidth (parallel copy, read + write, {} threads): {bandwidth:.1} GB/s",
        threads()
    );
    let sizes = &crate::bench_bank::BANK_SIZES[..if quick { 1 } else { 2 }];
    Ok((
        bandwidth,
        crate::bench_bank::bench_bank(sizes, 20, bandwidth)?,
    ))
}

/// `bench --bank`: only [`bank_section`], written to `bench_bank.json`.
fn bank_only(quick: bool) -> Result<()> {
    let (bandwidth, bank) = bank_section(quick)?;
    let json = serde_json::json!({
        "threads": threads(),
        "memory_bandwidth_gb_per_s": bandwidth,
        "bank": bank,
    });
    write_results("bench_bank.json", &json)
}

/// Writes `json` to `target/bench/<name>`.
pub(crate) fn write_results(name: &str, json: &serde_json::Value) -> Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(json)?)?;
    println!("written to {}", path.display());
    Ok(())
}
