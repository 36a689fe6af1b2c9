//! `cargo xtask pretrain`.
use crate::cli::{device, PretrainArgs};
use crate::report::{print_summary, EvalFile};
use anyhow::{bail, Context, Result};
use selfsup::dist::{Communicator, SingleProcess};
use selfsup::train::{checkpoint, export::export_encoder, TrainConfig, Trainer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The method's defaults ([`TrainConfig::for_method`]), then `--config`, then the flags
/// given.
pub fn resolve_config(args: &PretrainArgs) -> Result<TrainConfig> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--config {}", path.display()))?;
            toml::from_str::<toml::Table>(&text).map_err(|e| one_line(path, e))?
        }
        None => toml::Table::new(),
    };
    let method = match (&args.method, file.get("method").and_then(|m| m.as_str())) {
        (Some(m), _) => m.clone(),
        (None, Some(m)) => m.to_string(),
        (None, None) => TrainConfig::default().method,
    };
    let mut table = toml::Table::try_from(TrainConfig::for_method(&method))?;
    overlay(&mut table, file);
    let mut cfg: TrainConfig = match &args.config {
        Some(path) => table.try_into().map_err(|e| one_line(path, e))?,
        None => table.try_into()?,
    };
    macro_rules! set {
        ($($field:ident),*) => { $(if let Some(v) = &args.$field { cfg.$field = v.clone().into(); })* };
    }
    set!(
        method,
        dataset,
        encoder,
        width,
        epochs,
        batch_size,
        lr,
        weight_decay,
        warmup_epochs,
        temperature,
        seed,
        checkpoint_every
    );
    if args.data_dir.is_some() {
        cfg.data_dir = args.data_dir.clone();
    }
    if args.max_steps.is_some() {
        cfg.max_steps = args.max_steps;
    }
    if args.grad_clip.is_some() {
        cfg.grad_clip = args.grad_clip;
    }
    if args.sync_bn {
        cfg.distributed.sync_bn = true;
    }
    if let Some(every) = args.check_replicas_every {
        cfg.distributed.check_replicas_every = every;
    }
    if let Some(opt) = &args.optimizer {
        cfg.optimizer = opt.parse()?;
    }
    let p = &mut cfg.pretext;
    p.grid = args.grid.unwrap_or(p.grid);
    p.patch_size = args.patch_size.unwrap_or(p.patch_size);
    p.permutations = args.permutations.unwrap_or(p.permutations);
    p.adversarial_weight = args.adversarial_weight.unwrap_or(p.adversarial_weight);
    p.frame_crop = args.frame_crop.unwrap_or(p.frame_crop);
    p.frame_crop_per_frame |= args.frame_crop_per_frame;
    if let Some(mask) = &args.mask {
        p.mask = mask.parse()?;
    }
    let c = &mut cfg.contrastive;
    c.negatives = args.negatives.unwrap_or(c.negatives);
    if let Some(loss) = &args.bank_loss {
        c.bank_loss = loss.parse()?;
    }
    if let Some(unwritten) = &args.bank_unwritten {
        c.bank_unwritten = unwritten.parse()?;
    }
    let v = &mut cfg.video;
    v.size = args.frame_size.unwrap_or(v.size);
    v.clip_len = args.clip_len.unwrap_or(v.clip_len);
    let q = &mut cfg.predictive;
    q.steps = args.prediction_steps.unwrap_or(q.steps);
    q.context_frames = args.context_frames.unwrap_or(q.context_frames);
    let g = &mut cfg.generative;
    g.latent_dim = args.latent_dim.unwrap_or(g.latent_dim);
    g.noise_std = args.noise_std.unwrap_or(g.noise_std);
    g.mask_fraction = args.mask_fraction.unwrap_or(g.mask_fraction);
    g.cycle_weight = args.cycle_weight.unwrap_or(g.cycle_weight);
    Ok(cfg)
}

/// A TOML error on one line, naming the file.
fn one_line(path: &Path, e: toml::de::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "--config {}: {}",
        path.display(),
        e.to_string().replace('\n', " ")
    )
}

/// Writes every key of `top` over `base`, table by table.
fn overlay(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(top_inner)) => {
                overlay(inner, top_inner)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn run_dir(args: &PretrainArgs, cfg: &TrainConfig) -> PathBuf {
    args.out.clone().unwrap_or_else(|| {
        let dataset = cfg.dataset.replace(['/', ':'], "_");
        PathBuf::from("runs").join(format!("{}-{}-{}", cfg.method, dataset, cfg.encoder))
    })
}

fn write_config(dir: &Path, cfg: &TrainConfig) -> Result<()> {
    let text = toml::to_string(cfg)?;
    checkpoint::write_atomic(&dir.join("config.toml"), text.as_bytes())?;
    Ok(())
}

/// The group this process trains in: itself alone, or the ranks of an MPI launch.
fn communicator(args: &PretrainArgs) -> Result<Arc<dyn Communicator>> {
    if !(args.dist_timeout.is_finite() && args.dist_timeout > 0.0) {
        bail!(
            "--dist-timeout {}: must be a positive number of seconds",
            args.dist_timeout
        )
    }
    let timeout = Duration::from_secs_f64(args.dist_timeout);
    match args.dist.as_str() {
        "none" => Ok(Arc::new(SingleProcess)),
        "mpi" => mpi(timeout),
        other => bail!("--dist {other}: expected none or mpi"),
    }
}

#[cfg(feature = "mpi")]
fn mpi(timeout: Duration) -> Result<Arc<dyn Communicator>> {
    Ok(Arc::new(selfsup::dist::Mpi::init(timeout)?))
}

#[cfg(not(feature = "mpi"))]
fn mpi(_timeout: Duration) -> Result<Arc<dyn Communicator>> {
    bail!("--dist mpi: this binary was built without MPI; build it with `--features mpi`")
}

/// Pretrains as one rank of `--dist`'s group. A rank that fails stops every other
/// rank with it, so that none waits forever in a collective.
pub fn run(args: PretrainArgs) -> Result<()> {
    let comm = communicator(&args)?;
    match run_as(args, comm.clone()) {
        Err(e) if comm.world_size() > 1 => {
            eprintln!(
                "error: rank {}: {}",
                comm.rank(),
                format!("{e:#}").replace('\n', " ")
            );
            comm.abort(1)
        }
        result => result,
    }
}

fn run_as(mut args: PretrainArgs, comm: Arc<dyn Communicator>) -> Result<()> {
    let leader = comm.is_leader();
    if args.resume && args.config.is_none() {
        // Resume with the run's own settings; flags given still override them (and a
        // changed setting is then refused by the checkpoint).
        let saved = args.out.as_ref().map(|dir| dir.join("config.toml"));
        args.config = saved.filter(|path| path.exists());
    }
    let mut cfg = resolve_config(&args)?;
    cfg.distributed.world_size = comm.world_size();
    cfg.validate()?;
    let dir = run_dir(&args, &cfg);
    let has_checkpoint = checkpoint::latest_checkpoint(&dir)?.is_some();
    if has_checkpoint && !args.resume {
        bail!(
            "{} already holds a run; pass --resume to continue it, or choose another --out",
            dir.display()
        );
    }
    let device = device(&args.device)?;
    let mut trainer = Trainer::new(cfg.clone(), &dir, &device)?.with_communicator(comm)?;
    if args.resume {
        let resumed = trainer.resume()?;
        match resumed {
            Some(step) if leader => eprintln!("resuming {} from step {step}", dir.display()),
            None if leader => {
                eprintln!("no checkpoint in {}; starting from scratch", dir.display())
            }
            _ => {}
        }
    }
    if !leader {
        // Rank 0 writes the run's files and evaluates; the others only train.
        trainer.run()?;
        return Ok(());
    }
    write_config(&dir, &cfg)?;
    eprintln!(
        "pretraining {} on {} with {} into {}{}",
        cfg.method,
        cfg.dataset,
        cfg.encoder,
        dir.display(),
        match cfg.distributed.world_size {
            1 => String::new(),
            n => format!(" on {n} ranks"),
        }
    );
    let outcome = trainer.run()?;
    export_encoder(
        trainer.varmap(),
        outcome.steps,
        &dir.join("encoder.safetensors"),
    )?;
    eprintln!(
        "trained {} steps ({:.2} epochs) in {:.0} s; encoder in {}",
        outcome.steps,
        outcome.steps as f64 / outcome.steps_per_epoch as f64,
        outcome.train_seconds,
        dir.join("encoder.safetensors").display()
    );
    if args.no_eval {
        return Ok(());
    }
    let report = trainer.evaluate()?;
    let eval = EvalFile::new(
        &cfg,
        outcome.steps,
        outcome.steps_per_epoch,
        outcome.train_seconds,
        &report,
    );
    eval.write(&dir)?;
    let baseline = crate::eval_cmd::random_init_report(&cfg, trainer.train_set(), &device)?;
    print_summary(&eval, &baseline);
    Ok(())
}
