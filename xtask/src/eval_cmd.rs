//! `cargo xtask eval`.
use crate::cli::{device, EvalArgs};
use crate::report::{percent, EvalFile};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarMap;
use selfsup::data::{load_with, Dataset, Split};
use selfsup::encoders::{seeded_var_builder, Encoder, EncoderKind};
use selfsup::train::checkpoint::write_atomic;
use selfsup::train::methods::{build_method, DataShape, METHODS};
use selfsup::train::{evaluate, EvalReport, TrainConfig, Trainer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Evaluates a freshly initialised encoder with the run's seed: the baseline every method
/// must beat. When `cfg.method` names a method, its untrained evaluation encoder is used
/// (the same weights, seen the way that method's runs are evaluated: CPC pools patches).
pub fn random_init_report(
    cfg: &TrainConfig,
    train: &Dataset,
    device: &Device,
) -> Result<EvalReport> {
    if train.labels.is_none() {
        return Ok(EvalReport::default());
    }
    let varmap = VarMap::new();
    let (method, plain);
    let encoder: &dyn Encoder = if METHODS.contains(&cfg.method.as_str()) {
        method = build_method(cfg, DataShape::of(train), &varmap, device)?;
        method.encoder()
    } else {
        let kind: EncoderKind = cfg
            .encoder
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid setting `encoder`: {e}"))?;
        let vb = seeded_var_builder(&varmap, cfg.seed, DType::F32, device);
        plain = kind
            .with_width(cfg.width)
            .build(train.channels, vb.pp("encoder"))?;
        plain.as_ref()
    };
    let test = load_with(
        &cfg.dataset,
        Split::Test,
        cfg.data_dir.as_deref(),
        &cfg.video,
    )?;
    Ok(evaluate(encoder, train, &test, device, cfg.seed)?)
}

/// The run's pretext task on both time spans of another dataset (`--on`), such as a
/// video the run never saw; written to `eval-on-<dataset>.json` in the run folder.
fn pretext_on(trainer: &Trainer, cfg: &TrainConfig, on: &str, run_dir: &Path) -> Result<()> {
    let mut scores = serde_json::Map::new();
    scores.insert("dataset".into(), on.into());
    for (split, key) in [(Split::Train, "train_span"), (Split::Test, "test_span")] {
        let data = load_with(on, split, cfg.data_dir.as_deref(), &cfg.video)?;
        let clips = data.len();
        let Some(top1) = trainer.pretext_score(Arc::new(data))? else {
            bail!("method {} has no pretext measure to transfer", cfg.method)
        };
        println!(
            "{} pretext top-1 on {on} ({key}, {clips} clips): {top1:.2}%",
            cfg.method
        );
        scores.insert(format!("pretext_top1_{key}"), top1.into());
    }
    let name = on.rsplit(['/', ':']).next().unwrap_or(on);
    let path = run_dir.join(format!("eval-on-{name}.json"));
    write_atomic(&path, serde_json::to_string_pretty(&scores)?.as_bytes())?;
    println!("written to {}", path.display());
    Ok(())
}

pub fn run(args: EvalArgs) -> Result<()> {
    let device = device(&args.device)?;
    let (eval, out) = if let Some(run_dir) = &args.checkpoint {
        let config_path = run_dir.join("config.toml");
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("--checkpoint {}: not a run folder", run_dir.display()))?;
        let cfg: TrainConfig = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {}",
                config_path.display(),
                e.to_string().replace('\n', " ")
            )
        })?;
        let mut trainer = Trainer::new(cfg.clone(), run_dir, &device)?;
        let Some(step) = trainer.resume()? else {
            bail!("{}: has no checkpoint to evaluate", run_dir.display())
        };
        if let Some(on) = &args.on {
            return pretext_on(&trainer, &cfg, on, run_dir);
        }
        let report = trainer.evaluate()?;
        let (per_epoch, seconds) = (trainer.steps_per_epoch(), trainer.train_seconds());
        (
            EvalFile::new(&cfg, step, per_epoch, seconds, &report),
            args.out.clone().unwrap_or(run_dir.clone()),
        )
    } else if args.random_init {
        let cfg = TrainConfig {
            method: args.method.clone().unwrap_or_else(|| "random-init".into()),
            dataset: args.dataset.clone(),
            data_dir: args.data_dir.clone(),
            encoder: args.encoder.clone(),
            width: args.width,
            seed: args.seed,
            ..Default::default()
        };
        let train = load_with(
            &cfg.dataset,
            Split::Train,
            cfg.data_dir.as_deref(),
            &cfg.video,
        )?;
        let report = random_init_report(&cfg, &train, &device)?;
        let default_out = PathBuf::from("runs").join(format!(
            "random-init-{}-{}",
            args.encoder,
            args.dataset.replace(['/', ':'], "_")
        ));
        (
            EvalFile::new(&cfg, 0, 1, 0.0, &report),
            args.out.clone().unwrap_or(default_out),
        )
    } else {
        bail!("eval needs --checkpoint RUN_DIR or --random-init");
    };
    eval.write(&out)?;
    println!(
        "{} {} on {}: linear probe {}, kNN {} (written to {})",
        eval.method,
        eval.encoder,
        eval.dataset,
        percent(eval.linear_probe_top1),
        percent(eval.knn_top1),
        out.join("eval.json").display()
    );
    Ok(())
}
