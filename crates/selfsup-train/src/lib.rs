//! Training for selfsup: the [`Method`] trait with one file per method recipe, the
//! [`Trainer`], optimizers (SGD with momentum, LARS, AdamW), warmup + cosine schedules,
//! atomic checkpoints with bit-exact resume, `metrics.jsonl`, progress bars, encoder
//! export, and evaluation on frozen features (kNN and a linear probe).
//!
//! Features: `cuda` and `metal` forward to candle and the crates below.
pub mod checkpoint;
pub mod config;
pub mod contrastive_config;
pub mod dist_config;
mod error;
pub mod eval;
pub mod export;
pub mod generative_config;
pub mod method;
pub mod methods;
pub mod metrics;
pub mod optim;
pub mod pretext_config;
pub mod progress;
pub mod schedule;
mod trainer;

pub use config::{OptimizerKind, TrainConfig};
pub use error::{Result, TrainError};
pub use eval::{evaluate, EvalReport};
pub use method::{Method, PretextMetric, PretextTally};
pub use trainer::{sync_batch_norm_over, TrainOutcome, Trainer};
