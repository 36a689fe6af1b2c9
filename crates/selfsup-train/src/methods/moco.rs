//! MoCo v2 (He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation
//! Learning"; Chen et al. 2020, "Improved Baselines with Momentum Contrastive
//! Learning"): queries are matched to keys from a slowly moving momentum encoder,
//! against a queue of earlier keys as negatives.
use super::bank::{check_negatives, counter_tensor, state_counter, state_tensor};
use super::simclr::simclr_views;
use super::{encoder_kind, DataShape};
use crate::config::TrainConfig;
use crate::method::{Method, ENCODER_PREFIX};
use crate::Result;
use candle_core::{Device, Tensor};
use candle_nn::{ModuleT, VarBuilder, VarMap};
use selfsup_contrastive::{cosine_momentum, info_nce, MomentumEncoder, ProjectionHead, Queue};
use selfsup_data::{Batch, Rng, SimclrViews, ViewRecipe};
use selfsup_dist::tensor::all_gather_rows;
use selfsup_dist::{Communicator, SingleProcess};
use selfsup_encoders::{seeded_var_builder, Encoder};
use selfsup_kernels::unsync_batch_norm;
use std::collections::HashMap;
use std::sync::Arc;

/// RNG stream of the key batch's shuffle (and of the queue's initial keys).
const SHUFFLE_STREAM: u64 = 0x5348_5546;
/// Prefix of the key encoder's variables in the checkpoint's method state.
const KEY_PREFIX: &str = "key.";
const QUEUE_KEYS: &str = "queue.keys";
const QUEUE_PTR: &str = "queue.ptr";
const STEPS: &str = "moco.steps";

/// An encoder and projection head: the query model, or the key model that follows it.
struct Branch {
    encoder: Box<dyn Encoder>,
    head: ProjectionHead,
}

impl Branch {
    fn new(cfg: &TrainConfig, data: DataShape, vb: &VarBuilder) -> Result<Self> {
        let encoder = encoder_kind(cfg)?.build(data.channels, vb.pp(ENCODER_PREFIX))?;
        let dim = encoder.feature_dim();
        let head = ProjectionHead::new(dim, dim, cfg.projection_dim, vb.pp("head"))?;
        Ok(Self { encoder, head })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.head.forward_t(&self.encoder.forward_t(x, true)?, true)
    }
}

/// MoCo v2: query = head(encoder(view 0)), key = key_head(key_encoder(view 1)),
/// InfoNCE of each query against its key and the K queued keys (τ = 0.2).
///
/// - The key model (encoder and MLP head) is an EMA of the query model with momentum
///   0.99 (optionally cosine-scheduled to 1), kept in a `VarMap` of its own that the
///   optimizer never sees; its outputs are detached.
/// - After each step the batch's keys are enqueued, replacing the oldest.
/// - Shuffling BN: MoCo shuffles the key batch across GPUs so that batch norm cannot
///   leak which key belongs to which query. On one device the key batch is shuffled
///   and split into `contrastive.key_bn_groups` groups that batch norm normalises
///   separately, then unshuffled; the query batch is normalised as a whole.
/// - Data-parallel: every rank gathers the key views of the global batch and computes
///   all its keys (the key forward, without gradients, is repeated on every rank), so
///   that the shuffle and its groups are one process's; each query meets its own key,
///   and every rank enqueues all keys, keeping the queues identical.
pub struct Moco {
    query: Branch,
    key: Branch,
    ema: MomentumEncoder,
    queue: Queue,
    views: Arc<SimclrViews>,
    temperature: f64,
    key_momentum: f64,
    cosine: bool,
    groups: usize,
    seed: u64,
    steps: u64,
    /// Passes and step limit, for the cosine schedule's length.
    epochs: usize,
    max_steps: Option<usize>,
    /// Images in the training split, and per (global) batch.
    images: usize,
    batch: usize,
    /// This step's keys (the global batch's), enqueued in [`Method::after_step`].
    pending: Option<Tensor>,
    group: Arc<dyn Communicator>,
}

impl Moco {
    /// Builds the query model in `varmap` (encoder under `encoder.`, head under `head.`),
    /// a key model with the same names in its own `VarMap`, starting as a copy, and a
    /// queue of `contrastive.negatives` random keys.
    ///
    /// # Errors
    /// For an unknown encoder or a queue longer than the dataset allows.
    pub fn new(
        cfg: &TrainConfig,
        data: DataShape,
        varmap: &VarMap,
        device: &Device,
    ) -> Result<Self> {
        check_negatives(cfg, data.images)?;
        let vb = seeded_var_builder(varmap, cfg.seed, candle_core::DType::F32, device);
        let query = Branch::new(cfg, data, &vb)?;
        let key_vars = VarMap::new();
        let key_vb = seeded_var_builder(&key_vars, cfg.seed, candle_core::DType::F32, device);
        let key = Branch::new(cfg, data, &key_vb)?;
        let ema = MomentumEncoder::new(varmap, &key_vars)?;
        let c = &cfg.contrastive;
        let queue = Queue::new(
            c.negatives,
            cfg.projection_dim,
            cfg.seed ^ SHUFFLE_STREAM,
            device,
        )?;
        Ok(Self {
            query,
            key,
            ema,
            queue,
            views: Arc::new(simclr_views(cfg, data.size, 2)),
            temperature: cfg.temperature,
            key_momentum: c.key_momentum,
            cosine: c.key_momentum_cosine,
            groups: c.key_bn_groups,
            seed: cfg.seed,
            steps: 0,
            epochs: cfg.epochs,
            max_steps: cfg.max_steps,
            images: data.images,
            batch: cfg.batch_size.max(1),
            pending: None,
            group: Arc::new(SingleProcess),
        })
    }

    /// Detached keys of `view`, computed over a shuffled batch in BN groups and
    /// returned in batch order.
    fn keys(&self, view: &Tensor) -> candle_core::Result<Tensor> {
        let n = view.dim(0)?;
        // Groups of at least 2, so that batch norm has a variance to normalise by.
        let groups = self.groups.min(n / 2).max(1);
        let mut rng = Rng::derive(self.seed, &[SHUFFLE_STREAM, self.steps]);
        let order = rng.permutation(n);
        let mut inverse = vec![0u32; n];
        for (position, &i) in order.iter().enumerate() {
            inverse[i] = position as u32;
        }
        let order: Vec<u32> = order.into_iter().map(|i| i as u32).collect();
        let shuffled = view.index_select(&Tensor::from_vec(order, n, view.device())?, 0)?;
        let mut keys = Vec::with_capacity(groups);
        let mut start = 0;
        for g in 0..groups {
            let len = n / groups + usize::from(g < n % groups);
            keys.push(self.key.forward(&shuffled.narrow(0, start, len)?)?.detach());
            start += len;
        }
        let inverse = Tensor::from_vec(inverse, n, view.device())?;
        Tensor::cat(&keys, 0)?.index_select(&inverse, 0)
    }

    fn momentum(&self) -> f64 {
        match self.cosine {
            true => {
                let per_epoch = self.images / (self.batch * self.group.world_size());
                let total = (self.epochs * per_epoch).min(self.max_steps.unwrap_or(usize::MAX));
                cosine_momentum(self.key_momentum, self.steps as usize, total)
            }
            false => self.key_momentum,
        }
    }
}

impl Method for Moco {
    fn name(&self) -> &'static str {
        "moco"
    }

    fn join_group(&mut self, comm: Arc<dyn Communicator>) -> std::result::Result<(), String> {
        self.group = comm;
        Ok(())
    }

    fn views(&self) -> Arc<dyn ViewRecipe> {
        self.views.clone()
    }

    fn loss(&mut self, batch: &Batch) -> candle_core::Result<Tensor> {
        let [v0, v1] = batch.views.as_slice() else {
            candle_core::bail!("MoCo expects 2 views per image, got {}", batch.views.len())
        };
        let q = self.query.forward(v0)?;
        let keys = match self.group.world_size() {
            1 => self.keys(v1)?,
            _ => {
                let all = all_gather_rows(self.group.as_ref(), &v1.detach())?;
                // This forward already sees every rank's samples.
                let _own = unsync_batch_norm();
                self.keys(&all)?
            }
        };
        let n = v1.dim(0)?;
        let k = keys.narrow(0, self.group.rank() * n, n)?;
        let loss = info_nce(&q, &k, self.queue.keys(), self.temperature)?;
        self.pending = Some(keys);
        Ok(loss)
    }

    fn after_step(&mut self, _batch: &Batch) -> candle_core::Result<()> {
        let Some(keys) = self.pending.take() else {
            candle_core::bail!("MoCo: after_step without a loss for this batch")
        };
        self.queue.enqueue(&keys)?;
        self.ema.update(self.momentum())?;
        self.steps += 1;
        Ok(())
    }

    fn encoder(&self) -> &dyn Encoder {
        self.query.encoder.as_ref()
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let device = self.queue.keys().device();
        let mut out: Vec<(String, Tensor)> = self
            .ema
            .tensors()
            .into_iter()
            .map(|(name, t)| (format!("{KEY_PREFIX}{name}"), t))
            .collect();
        out.push((QUEUE_KEYS.into(), self.queue.keys().clone()));
        for (name, value) in [(QUEUE_PTR, self.queue.ptr() as u64), (STEPS, self.steps)] {
            if let Ok(t) = counter_tensor(value, device) {
                out.push((name.into(), t));
            }
        }
        out
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> candle_core::Result<()> {
        let key_vars: HashMap<String, Tensor> = state
            .iter()
            .filter_map(|(name, t)| Some((name.strip_prefix(KEY_PREFIX)?.to_string(), t.clone())))
            .collect();
        self.ema.load(&key_vars)?;
        let keys = state_tensor(state, QUEUE_KEYS)?;
        if keys.dims() != self.queue.keys().dims() {
            candle_core::bail!(
                "queue is {:?} in the checkpoint but {:?} for this run",
                keys.dims(),
                self.queue.keys().dims()
            )
        }
        self.queue = Queue::from_parts(keys.clone(), state_counter(state, QUEUE_PTR)? as usize)?;
        self.steps = state_counter(state, STEPS)?;
        Ok(())
    }
}
