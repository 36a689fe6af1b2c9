//! The [`Trainer`]: runs a [`Method`] over a dataset with checkpoints, metrics and progress.
use crate::checkpoint::{
    latest_checkpoint, load_checkpoint, load_into_varmap, save_checkpoint, varmap_tensors,
    Checkpoint, CheckpointState,
};
use crate::config::TrainConfig;
use crate::method::{Method, PretextMetric, PretextTally};
use crate::methods::{build_method, DataShape};
use crate::metrics::{MetricsWriter, StepMetrics};
use crate::optim::{build_optimizer, clip_grad_norm, trainable_params, Optimizer, Param};
use crate::progress::progress_bar;
use crate::schedule::WarmupCosine;
use crate::{Result, TrainError};
use candle_core::{DType, Device, Var};
use candle_nn::VarMap;
use selfsup_data::{Dataset, Loader};
use selfsup_dist::tensor::{average_gradients, broadcast_vars, mean_scalar, BUCKET_ELEMS};
use selfsup_dist::{Communicator, SingleProcess};
use selfsup_encoders::Encoder;
use selfsup_kernels::{sync_batch_norm, StatsReducer, SyncGuard};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Fewest samples the pretext task is scored on; smaller test splits are passed over
/// several times with new views.
pub const MIN_PRETEXT_SAMPLES: usize = 1000;

/// What a finished (or resumed-and-finished) run did.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOutcome {
    /// Optimizer steps completed in total.
    pub steps: usize,
    /// Steps per epoch.
    pub steps_per_epoch: usize,
    /// Loss of the last step run in this process, if any ran.
    pub final_loss: Option<f32>,
    /// Wall-clock training seconds, summed over resumed segments.
    pub train_seconds: f64,
}

/// Owns one pretraining run: data, model variables, method, optimizer and progress.
pub struct Trainer {
    cfg: TrainConfig,
    run_dir: PathBuf,
    device: Device,
    train_set: Arc<Dataset>,
    varmap: VarMap,
    method: Box<dyn Method>,
    params: Vec<Param>,
    optimizer: Box<dyn Optimizer>,
    step: usize,
    train_seconds: f64,
    comm: Arc<dyn Communicator>,
}

/// Synchronises training-mode batch norm on this thread over the ranks of `comm`
/// while the guard lives (`selfsup_kernels::sync_batch_norm`).
pub fn sync_batch_norm_over(comm: Arc<dyn Communicator>) -> SyncGuard {
    sync_batch_norm(Arc::new(RankSums(comm)))
}

/// Batch-norm statistics summed over the ranks of a run.
struct RankSums(Arc<dyn Communicator>);

impl StatsReducer for RankSums {
    fn world_size(&self) -> usize {
        self.0.world_size()
    }

    fn all_reduce_sum(&self, buf: &mut [f64]) -> candle_core::Result<()> {
        self.0
            .all_reduce_sum_f64(buf)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

impl Trainer {
    /// Validates `cfg`, loads the training split and builds the model with seeded weights.
    ///
    /// # Errors
    /// A one-line error naming the bad setting or data file.
    pub fn new(cfg: TrainConfig, run_dir: &Path, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let train_set = selfsup_data::load_with(
            &cfg.dataset,
            selfsup_data::Split::Train,
            cfg.data_dir.as_deref(),
            &cfg.video,
        )?;
        if train_set.len() < cfg.batch_size {
            return Err(TrainError::config(
                "batch-size",
                format!(
                    "{} is larger than the {} training images",
                    cfg.batch_size,
                    train_set.len()
                ),
            ));
        }
        let varmap = VarMap::new();
        let method = build_method(&cfg, DataShape::of(&train_set), &varmap, device)?;
        let params = trainable_params(&varmap, &[]);
        let optimizer = build_optimizer(&cfg, params.clone())?;
        std::fs::create_dir_all(run_dir).map_err(|e| TrainError::io(run_dir, e))?;
        Ok(Self {
            cfg,
            run_dir: run_dir.to_path_buf(),
            device: device.clone(),
            train_set: Arc::new(train_set),
            varmap,
            method,
            params,
            optimizer,
            step: 0,
            train_seconds: 0.0,
            comm: Arc::new(SingleProcess),
        })
    }

    /// Makes this process one rank of a data-parallel run over `comm`, whose size must
    /// be the config's `distributed.world-size`: the model takes rank 0's weights, each
    /// rank trains on its slice of every global batch, gradients are averaged over
    /// ranks before every step, and only rank 0 writes checkpoints, metrics and
    /// progress. Call it before [`Trainer::resume`].
    ///
    /// # Errors
    /// If the sizes disagree, the method cannot run data-parallel, or a collective fails.
    pub fn with_communicator(mut self, comm: Arc<dyn Communicator>) -> Result<Self> {
        let world = comm.world_size();
        if world != self.cfg.distributed.world_size {
            return Err(TrainError::config(
                "world-size",
                format!(
                    "the run is set up for {} ranks but {world} were started",
                    self.cfg.distributed.world_size
                ),
            ));
        }
        if world > 1 {
            self.method
                .join_group(comm.clone())
                .map_err(|msg| TrainError::config("dist", msg))?;
            broadcast_vars(comm.as_ref(), &self.all_vars(), 0)?;
        }
        self.comm = comm;
        Ok(self)
    }

    /// Every model variable (running statistics included), sorted by name.
    fn all_vars(&self) -> Vec<Var> {
        let data = self.varmap.data().lock().unwrap_or_else(|p| p.into_inner());
        let mut vars: Vec<_> = data.iter().collect();
        vars.sort_by(|a, b| a.0.cmp(b.0));
        vars.into_iter().map(|(_, v)| v.clone()).collect()
    }

    /// Stops the run if the replicas' parameters differ: every rank hashes the bits of
    /// all its trainable variables and the ranks compare the hashes. (Batch-norm running
    /// statistics are left out: without `sync_bn` each rank's follow its own samples,
    /// and rank 0's are the ones saved.)
    fn check_replicas(&self) -> Result<()> {
        if self.comm.world_size() == 1 {
            return Ok(());
        }
        let vars: Vec<Var> = self.params.iter().map(|p| p.var.clone()).collect();
        let hash = weights_hash(&vars)?;
        // Four 16-bit pieces, each exact in an f32.
        let pieces: Vec<f32> = (0..4)
            .map(|i| ((hash >> (16 * i)) & 0xffff) as f32)
            .collect();
        let all = self.comm.all_gather(&pieces)?;
        match all.chunks(4).position(|theirs| theirs != pieces.as_slice()) {
            None => Ok(()),
            Some(rank) => Err(TrainError::Dist(selfsup_dist::DistError::Usage(format!(
                "replicas diverged by step {}: rank {rank}'s weights differ from rank {}'s",
                self.step,
                self.comm.rank()
            )))),
        }
    }

    /// Continues from the run's latest checkpoint, if there is one; returns its step.
    ///
    /// # Errors
    /// If the checkpoint is unreadable, does not fit the model, or was made with other settings.
    pub fn resume(&mut self) -> Result<Option<usize>> {
        let Some(dir) = latest_checkpoint(&self.run_dir)? else {
            return Ok(None);
        };
        let ckpt = load_checkpoint(&dir, &self.device)?;
        if let Some(setting) = first_difference(&ckpt.state.config, &self.cfg) {
            return Err(TrainError::Checkpoint {
                path: dir,
                msg: format!(
                    "was made with a different `{setting}`; resume with the run's own settings"
                ),
            });
        }
        load_into_varmap(&self.varmap, &ckpt.model, &dir.join("model.safetensors"))?;
        let bad = |msg: String, file: &str| TrainError::Checkpoint {
            path: dir.join(file),
            msg,
        };
        self.optimizer
            .load_state(&ckpt.optimizer)
            .map_err(|e| bad(e.to_string(), "optimizer.safetensors"))?;
        self.method
            .load_state(&ckpt.method)
            .map_err(|e| bad(e.to_string(), "method.safetensors"))?;
        self.step = ckpt.state.step;
        self.train_seconds = ckpt.state.train_seconds;
        Ok(Some(self.step))
    }

    /// The encoder being trained.
    pub fn encoder(&self) -> &dyn Encoder {
        self.method.encoder()
    }

    /// The method's own state (memory banks, queues, key encoders, side networks), as
    /// saved in checkpoints.
    pub fn method_state(&self) -> Vec<(String, candle_core::Tensor)> {
        self.method.state()
    }

    /// All model variables (encoder under `encoder.`, heads under their own prefixes).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The training split.
    pub fn train_set(&self) -> &Dataset {
        &self.train_set
    }

    /// Steps completed so far.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Wall-clock training seconds so far, summed over resumed segments.
    pub fn train_seconds(&self) -> f64 {
        self.train_seconds
    }

    /// Optimizer steps per epoch (incomplete last global batches are dropped).
    pub fn steps_per_epoch(&self) -> usize {
        self.train_set.len() / (self.cfg.batch_size * self.comm.world_size())
    }

    /// Evaluates the encoder on frozen features of the training and test splits (the
    /// probes are skipped for unlabelled data), and the method's pretext task on the
    /// test split.
    ///
    /// # Errors
    /// If the test split cannot be loaded.
    pub fn evaluate(&self) -> Result<crate::EvalReport> {
        let cfg = &self.cfg;
        let test = selfsup_data::load_with(
            &cfg.dataset,
            selfsup_data::Split::Test,
            cfg.data_dir.as_deref(),
            &cfg.video,
        )?;
        let mut report = if self.train_set.labels.is_some() {
            crate::evaluate(
                self.encoder(),
                &self.train_set,
                &test,
                &self.device,
                cfg.seed,
            )?
        } else {
            crate::EvalReport::default()
        };
        if let Some(metric) = self.method.pretext_metric() {
            let (value, baseline) = self.pretext_scores(Arc::new(test))?;
            match metric {
                PretextMetric::Top1 => report.pretext_top1 = value,
                PretextMetric::Mse => report.pretext_mse = value,
            }
            report.pretext_baseline = baseline;
        }
        Ok(report)
    }

    /// The method's pretext measure ([`Method::pretext_metric`]; `None` if it has none)
    /// on `data`, with the method's own views drawn from a seed other than training's.
    /// Small datasets (video clips) are passed over until [`MIN_PRETEXT_SAMPLES`] samples
    /// were scored, each pass drawing new views.
    ///
    /// # Errors
    /// On tensor errors, or if `data` does not fit the method.
    pub fn pretext_score(&self, data: Arc<Dataset>) -> Result<Option<f64>> {
        Ok(self.pretext_scores(data)?.0)
    }

    /// [`Trainer::pretext_score`], and the method's reference predictor
    /// ([`Method::pretext_baseline`]) on the same samples (`None` if it has none).
    ///
    /// # Errors
    /// As [`Trainer::pretext_score`].
    pub fn pretext_scores(&self, data: Arc<Dataset>) -> Result<(Option<f64>, Option<f64>)> {
        let Some(metric) = self.method.pretext_metric() else {
            return Ok((None, None));
        };
        let batch = self.cfg.batch_size.min(data.len());
        let loader = Loader::new(
            data,
            self.method.views(),
            batch,
            self.cfg.seed.wrapping_add(1),
        )?;
        let per_pass = loader.batches_per_epoch();
        let passes = MIN_PRETEXT_SAMPLES.div_ceil(per_pass * batch).max(1);
        let bar = progress_bar((passes * per_pass) as u64, "pretext (test)");
        let (mut tally, mut baseline) = (PretextTally::default(), None::<PretextTally>);
        for pass in 0..passes {
            for batch in loader.epoch(pass, 0, &self.device) {
                let batch = batch?;
                tally.add(self.method.pretext_eval(&batch)?);
                if let Some(b) = self.method.pretext_baseline(&batch)? {
                    baseline.get_or_insert_with(PretextTally::default).add(b);
                }
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
        let baseline = baseline.and_then(|b| b.value(metric));
        Ok((tally.value(metric), baseline))
    }

    fn checkpoint(&self) -> Result<PathBuf> {
        self.method.write_artifacts(&self.run_dir, self.step)?;
        save_checkpoint(
            &self.run_dir,
            &Checkpoint {
                state: CheckpointState {
                    step: self.step,
                    config: self.cfg.clone(),
                    train_seconds: self.train_seconds,
                },
                model: varmap_tensors(&self.varmap),
                optimizer: self.optimizer.state().into_iter().collect(),
                method: self.method.state().into_iter().collect(),
            },
        )
    }

    /// Trains until `epochs` or `max_steps`, whichever comes first, writing
    /// `metrics.jsonl` and a checkpoint every `checkpoint_every` steps and at the end.
    ///
    /// # Errors
    /// On a non-finite loss (the last good checkpoint stays), or I/O and tensor errors.
    pub fn run(&mut self) -> Result<TrainOutcome> {
        self.run_until(usize::MAX)
    }

    /// Stops the run on a non-finite loss of the coming step, naming the last good
    /// checkpoint (which is kept).
    fn check_finite(&self, loss: f32) -> Result<()> {
        if loss.is_finite() {
            return Ok(());
        }
        let hint = latest_checkpoint(&self.run_dir)?.map(|p| p.display().to_string());
        Err(TrainError::NonFinite {
            step: self.step + 1,
            loss,
            hint,
        })
    }

    /// Like [`Trainer::run`], but returns after step `stop` as if the process had been
    /// interrupted there (no extra checkpoint is written). Used to test resumption.
    ///
    /// # Errors
    /// As [`Trainer::run`].
    pub fn run_until(&mut self, stop: usize) -> Result<TrainOutcome> {
        let cfg = self.cfg.clone();
        let comm = self.comm.clone();
        let (leader, world) = (comm.is_leader(), comm.world_size());
        let loader = Loader::new(
            self.train_set.clone(),
            self.method.views(),
            cfg.batch_size,
            cfg.seed,
        )?
        .sharded(comm.rank(), world)?;
        let _sync_bn =
            (cfg.distributed.sync_bn && world > 1).then(|| sync_batch_norm_over(comm.clone()));
        let vars: Vec<Var> = self.params.iter().map(|p| p.var.clone()).collect();
        let per_epoch = loader.batches_per_epoch();
        let total = (cfg.epochs * per_epoch).min(cfg.max_steps.unwrap_or(usize::MAX));
        let schedule = WarmupCosine {
            base_lr: cfg.lr,
            warmup_steps: (cfg.warmup_epochs * per_epoch as f64).round() as usize,
            total_steps: total,
            final_fraction: 0.0,
        };
        let mut metrics = match leader {
            true => Some(MetricsWriter::open(
                &self.run_dir.join("metrics.jsonl"),
                self.step,
            )?),
            false => None,
        };
        let bar = match leader {
            true => progress_bar(
                total as u64,
                &format!("{} on {}", self.method.name(), cfg.dataset),
            ),
            false => indicatif::ProgressBar::hidden(),
        };
        bar.set_position(self.step as u64);
        let mut final_loss = None;
        let mut last = Instant::now();
        while self.step < total.min(stop) {
            let epoch = self.step / per_epoch;
            for batch in loader.epoch(epoch, self.step % per_epoch, &self.device) {
                let batch = batch?;
                let lr = schedule.lr(self.step);
                let loss = self.method.loss(&batch)?;
                let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
                // Every rank sees a non-finite loss on any rank, so all stop together.
                let value = mean_scalar(comm.as_ref(), value)?;
                self.check_finite(value)?;
                let mut grads = loss.backward()?;
                average_gradients(comm.as_ref(), &vars, &mut grads, BUCKET_ELEMS)?;
                if let Some(max_norm) = cfg.grad_clip {
                    clip_grad_norm(&self.params, &mut grads, max_norm)?;
                }
                self.optimizer.step(&grads, lr)?;
                self.method.after_step(&batch)?;
                let side_loss = self.method.side_step(&batch, lr)?;
                if let Some(side) = side_loss {
                    self.check_finite(side)?;
                }
                self.step += 1;
                final_loss = Some(value);
                let seconds = last.elapsed().as_secs_f64();
                last = Instant::now();
                self.train_seconds += seconds;
                let images_per_s = (batch.indices.len() * world) as f64 / seconds.max(1e-9);
                if let Some(metrics) = metrics.as_mut() {
                    metrics.write(&StepMetrics {
                        step: self.step,
                        epoch,
                        loss: value,
                        side_loss,
                        lr,
                        images_per_s,
                    })?;
                }
                bar.set_position(self.step as u64);
                bar.set_message(format!(
                    "epoch {} loss {value:.4} lr {lr:.4} {images_per_s:.0} img/s",
                    epoch + 1
                ));
                let at_checkpoint = self.step % cfg.checkpoint_every == 0 || self.step == total;
                let every = cfg.distributed.check_replicas_every;
                if at_checkpoint || (every > 0 && self.step % every == 0) {
                    self.check_replicas()?;
                }
                if leader && at_checkpoint {
                    self.checkpoint()?;
                }
                if self.step >= total || self.step >= stop {
                    break;
                }
            }
            if leader && bar.is_hidden() && self.step < total.min(stop) {
                eprintln!(
                    "{}: step {}/{total}, loss {:.4}",
                    self.method.name(),
                    self.step,
                    final_loss.unwrap_or(f32::NAN)
                );
            }
        }
        bar.finish_and_clear();
        if leader && final_loss.is_none() && latest_checkpoint(&self.run_dir)?.is_none() {
            self.checkpoint()?;
        }
        Ok(TrainOutcome {
            steps: self.step,
            steps_per_epoch: per_epoch,
            final_loss,
            train_seconds: self.train_seconds,
        })
    }
}

/// FNV-1a over the bits of every value of `vars`, in order.
fn weights_hash(vars: &[Var]) -> Result<u64> {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for var in vars {
        for v in var
            .as_tensor()
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?
        {
            hash = (hash ^ u64::from(v.to_bits())).wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(hash)
}

/// The first setting (other than where data or checkpoints go) that differs between two configs.
fn first_difference(saved: &TrainConfig, now: &TrainConfig) -> Option<String> {
    let (a, b) = (
        serde_json::to_value(saved).ok()?,
        serde_json::to_value(now).ok()?,
    );
    let (a, b) = (a.as_object()?, b.as_object()?);
    a.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "data_dir" | "checkpoint_every"))
        .find(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.replace('_', "-"))
}
