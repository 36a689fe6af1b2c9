//! Command-line arguments.
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// selfsup: self-supervised learning on candle.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pretrain an encoder, evaluate it on frozen features and export it.
    Pretrain(Box<PretrainArgs>),
    /// Evaluate a run (or a random-init encoder) with kNN and a linear probe.
    Eval(EvalArgs),
    /// Download a dataset from its official source, verifying SHA-256.
    Download(DownloadArgs),
    /// Measure training-step and augmentation throughput, side by side with PyTorch.
    Bench(BenchArgs),
    /// Extract a video's frames into a folder of PNGs (UCF101 style) for `--dataset video:DIR`.
    PrepareVideo(PrepareVideoArgs),
}

#[derive(Args, Debug)]
pub struct PrepareVideoArgs {
    /// A video file ffmpeg can read.
    pub input: PathBuf,
    /// Folder the frames go to (created; must not already hold frames).
    #[arg(long)]
    pub out: PathBuf,
    /// Frame size WIDTHxHEIGHT, e.g. 64x48 (default: the video's own).
    #[arg(long)]
    pub size: Option<String>,
}

/// Settings of a run. Each flag overrides `--config`, which overrides the defaults.
#[derive(Args, Debug, Default)]
pub struct PretrainArgs {
    /// Method: simclr, moco, npid, pirl, cpc, rotation, relative-patch, jigsaw, inpainting,
    /// shuffle-learn, odd-one-out, next-frame, autoencoder, denoising-autoencoder, dcgan
    /// or bigan.
    #[arg(long)]
    pub method: Option<String>,
    /// Dataset: fashion-mnist, mnist, cifar10, cifar100, folder:PATH, video:PATH (a video
    /// file, a folder of frames, or a folder of either) or moving-fmnist.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Folder holding the dataset, tried before $SELFSUP_DATA, ./data and /usr/share/datasets.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Encoder: small-cnn, resnet18-cifar, resnet18, resnet50-cifar, resnet50.
    #[arg(long)]
    pub encoder: Option<String>,
    /// Base width of the small-cnn.
    #[arg(long)]
    pub width: Option<usize>,
    /// Passes over the training split.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop after this many steps (the schedule is fitted to them).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Images per batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Optimizer: sgd, lars or adamw.
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Peak learning rate.
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Weight decay (never on BN parameters or biases).
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,
    /// Linear warmup, in epochs.
    #[arg(long)]
    pub warmup_epochs: Option<f64>,
    /// Clip the global gradient norm.
    #[arg(long)]
    pub grad_clip: Option<f64>,
    /// Softmax temperature of contrastive losses.
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f64>,
    /// Seed of every random choice.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Checkpoint every this many steps.
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Patch-location and jigsaw grid cells per side (`pretext.grid`).
    #[arg(long)]
    pub grid: Option<usize>,
    /// Side the encoder sees patches and tiles at; 0 keeps their size (`pretext.patch_size`).
    #[arg(long)]
    pub patch_size: Option<usize>,
    /// Jigsaw permutation-set size (`pretext.permutations`).
    #[arg(long)]
    pub permutations: Option<usize>,
    /// Inpainting mask: center or blocks (`pretext.mask`).
    #[arg(long)]
    pub mask: Option<String>,
    /// Inpainting adversarial-loss weight, 0 for none (`pretext.adversarial_weight`).
    #[arg(long, allow_negative_numbers = true)]
    pub adversarial_weight: Option<f64>,
    /// Negatives per step: memory-bank samples or MoCo's queue length (`contrastive.negatives`).
    #[arg(long)]
    pub negatives: Option<usize>,
    /// Memory-bank loss of npid and pirl: nce or infonce (`contrastive.bank_loss`).
    #[arg(long)]
    pub bank_loss: Option<String>,
    /// What a memory-bank slot stands for before its first write: own-feature or random
    /// (`contrastive.bank_unwritten`).
    #[arg(long)]
    pub bank_unwritten: Option<String>,
    /// Smallest crop area shared by a frame-order sample's frames, 1 for none (`pretext.frame_crop`).
    #[arg(long)]
    pub frame_crop: Option<f64>,
    /// Each frame of a frame-order sample draws its own crop (`pretext.frame_crop_per_frame`).
    #[arg(long)]
    pub frame_crop_per_frame: bool,
    /// Side of video frames, in pixels (`video.size`).
    #[arg(long)]
    pub frame_size: Option<usize>,
    /// Frames per video clip (`video.clip_len`).
    #[arg(long)]
    pub clip_len: Option<usize>,
    /// Rows (or frames) ahead that CPC predicts (`predictive.steps`).
    #[arg(long)]
    pub prediction_steps: Option<usize>,
    /// Frames next-frame prediction sees before the one it predicts (`predictive.context_frames`).
    #[arg(long)]
    pub context_frames: Option<usize>,
    /// Length of the GANs' latent code (`generative.latent_dim`).
    #[arg(long)]
    pub latent_dim: Option<usize>,
    /// Denoising autoencoder's Gaussian noise deviation, in pixel units (`generative.noise_std`).
    #[arg(long)]
    pub noise_std: Option<f64>,
    /// Fraction of pixels the denoising autoencoder blanks (`generative.mask_fraction`).
    #[arg(long)]
    pub mask_fraction: Option<f64>,
    /// BiGAN's cycle-consistency weight on |G(E(x)) − x|² (`generative.cycle_weight`; ALICE).
    #[arg(long)]
    pub cycle_weight: Option<f64>,
    /// cpu, cuda or metal (needs the matching cargo feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Run folder (default: runs/<method>-<dataset>-<encoder>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// TOML file of settings (keys as in the run folder's config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint, with the settings in its
    /// config.toml (unless --config is given).
    #[arg(long)]
    pub resume: bool,
    /// Skip the evaluation at the end.
    #[arg(long)]
    pub no_eval: bool,
    /// Data parallelism: none, or mpi for ranks started by mpirun or srun (needs a
    /// binary built with `--features mpi`). --batch-size is per rank.
    #[arg(long, default_value = "none")]
    pub dist: String,
    /// Batch-norm statistics over every rank's samples (`distributed.sync_bn`).
    #[arg(long)]
    pub sync_bn: bool,
    /// Compare the ranks' weights every this many steps, besides at checkpoints
    /// (`distributed.check_replicas_every`).
    #[arg(long)]
    pub check_replicas_every: Option<usize>,
    /// Seconds a rank waits in a collective for the others before it gives up.
    #[arg(long, default_value_t = 300.0)]
    pub dist_timeout: f64,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run folder written by `pretrain`.
    #[arg(long, conflicts_with = "random_init")]
    pub checkpoint: Option<PathBuf>,
    /// Evaluate a randomly initialised encoder (the baseline) instead.
    #[arg(long)]
    pub random_init: bool,
    /// With --checkpoint: score the run's pretext task on another dataset instead (both
    /// of its time spans), e.g. a video the run never saw.
    #[arg(long, requires = "checkpoint")]
    pub on: Option<String>,
    /// Encoder for --random-init.
    #[arg(long, default_value = "small-cnn")]
    pub encoder: String,
    /// With --random-init: evaluate the untrained encoder the way this method's runs are
    /// evaluated (CPC pools patch latents); the default evaluates the plain encoder.
    #[arg(long, requires = "random_init")]
    pub method: Option<String>,
    /// Base width of the small-cnn for --random-init.
    #[arg(long, default_value_t = 32)]
    pub width: usize,
    /// Dataset for --random-init.
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    /// Folder holding the dataset.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seed of the random init and the probe.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Where eval.json goes (default: the checkpoint's run folder, or runs/random-init-<encoder>-<dataset>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DownloadArgs {
    /// fashion-mnist, mnist, cifar10 or cifar100.
    pub dataset: String,
    /// Root folder (default ./data); the dataset lands in <root>/<dataset>.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Timed steps per model.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Side-by-side reference: `pytorch` (run when torch is importable) or `none`.
    #[arg(long, default_value = "pytorch")]
    pub compare: String,
    /// Only the small-cnn step (skip resnet18-cifar).
    #[arg(long)]
    pub quick: bool,
    /// Also print a per-op time breakdown of one SimCLR step per model (forward and backward).
    #[arg(long)]
    pub profile: bool,
    /// Only the memory-bank and queue operations (and the memory bandwidth).
    #[arg(long)]
    pub bank: bool,
    /// Only data parallelism: all-reduce bandwidth of a ResNet-18 gradient and the
    /// step-time overhead of 2 ranks (launches itself under mpirun; needs `--features mpi`).
    #[arg(long)]
    pub dist: bool,
    /// Only the end-to-end epoch: one SimCLR Fashion-MNIST epoch through the trainer, data
    /// pipeline included, against a PyTorch + torchvision DataLoader pipeline doing the
    /// same augmentations (`xtask/bench/pytorch_simclr_epoch.py`).
    #[arg(long)]
    pub epoch: bool,
    /// With --epoch: time only the first N steps of the epoch on both sides (default: the
    /// whole epoch, 234 steps at batch 256).
    #[arg(long, value_name = "N", requires = "epoch")]
    pub epoch_steps: Option<usize>,
}

/// Parses `--device`.
pub fn device(name: &str) -> anyhow::Result<candle_core::Device> {
    Ok(match name {
        "cpu" => candle_core::Device::Cpu,
        "cuda" => candle_core::Device::new_cuda(0)
            .map_err(|e| anyhow::anyhow!("--device cuda: {e} (build with --features cuda)"))?,
        "metal" => candle_core::Device::new_metal(0)
            .map_err(|e| anyhow::anyhow!("--device metal: {e} (build with --features metal)"))?,
        other => anyhow::bail!("invalid setting `device`: {other:?}; expected cpu, cuda or metal"),
    })
}
