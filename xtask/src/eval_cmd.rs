//! `cargo xtask eval`.
use crate::cli::{device, EvalArgs};
use crate::report::EvalFile;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarMap;
use selfsup::data::{Dataset, Split};
use selfsup::encoders::{seeded_var_builder, EncoderKind};
use selfsup::train::{evaluate, EvalReport, TrainConfig, Trainer};
use std::path::PathBuf;

/// Evaluates a freshly initialised encoder with the run's seed: the baseline every method must beat.
pub fn random_init_report(
    cfg: &TrainConfig,
    train: &Dataset,
    device: &Device,
) -> Result<EvalReport> {
    let kind: EncoderKind = cfg
        .encoder
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid setting `encoder`: {e}"))?;
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, cfg.seed, DType::F32, device);
    let encoder = kind
        .with_width(cfg.width)
        .build(train.channels, vb.pp("encoder"))?;
    let test = selfsup::data::load(&cfg.dataset, Split::Test, cfg.data_dir.as_deref())?;
    Ok(evaluate(encoder.as_ref(), train, &test, device, cfg.seed)?)
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
        let report = trainer.evaluate()?;
        let (per_epoch, seconds) = (trainer.steps_per_epoch(), trainer.train_seconds());
        (
            EvalFile::new(&cfg, step, per_epoch, seconds, &report),
            args.out.clone().unwrap_or(run_dir.clone()),
        )
    } else if args.random_init {
        let cfg = TrainConfig {
            method: "random-init".into(),
            dataset: args.dataset.clone(),
            data_dir: args.data_dir.clone(),
            encoder: args.encoder.clone(),
            width: args.width,
            seed: args.seed,
            ..Default::default()
        };
        let train = selfsup::data::load(&cfg.dataset, Split::Train, cfg.data_dir.as_deref())?;
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
        "{} {} on {}: linear probe {:.2}%, kNN {:.2}% (written to {})",
        eval.method,
        eval.encoder,
        eval.dataset,
        eval.linear_probe_top1,
        eval.knn_top1,
        out.join("eval.json").display()
    );
    Ok(())
}
