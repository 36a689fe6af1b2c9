//! Short real runs on Fashion-MNIST: each method's loss must go down.
use candle_core::Device;
use selfsup_train::{TrainConfig, Trainer};

/// Trains `cfg` (small width and batch, about 40 steps, no checkpoints in between)
/// and asserts that the mean loss of the last 8 steps is below that of the first 8
/// by at least `min_drop` (relative).
pub(crate) fn short_run_lowers_the_loss(cfg: TrainConfig, min_drop: f64) {
    if !crate::runs::have_fashion_mnist() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = cfg.method.clone();
    let mut trainer = Trainer::new(cfg, dir.path(), &Device::Cpu).unwrap();
    trainer.run().unwrap();
    let text = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert!(
        losses.len() >= 16,
        "{name}: only {} steps ran",
        losses.len()
    );
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&losses[..8]), mean(&losses[losses.len() - 8..]));
    assert!(
        last < first * (1.0 - min_drop),
        "{name}: loss went from {first:.4} to {last:.4}, less than a {:.0}% drop",
        100.0 * min_drop
    );
}

/// The settings these runs share: width 8, batch 32, 40 steps, the method's temperature.
pub(crate) fn short(method: &str) -> TrainConfig {
    TrainConfig {
        method: method.into(),
        width: 8,
        batch_size: 32,
        max_steps: Some(40),
        checkpoint_every: 1000,
        ..TrainConfig::for_method(method)
    }
}

#[test]
fn simclr_short_run_lowers_the_loss() {
    short_run_lowers_the_loss(short("simclr"), 0.02);
}

/// Rotation starts slowly at width 8 and batch 32: 40 steps take the loss from ln 4 down
/// by about 5%.
#[test]
fn rotation_short_run_lowers_the_loss() {
    short_run_lowers_the_loss(short("rotation"), 0.02);
}

#[test]
fn relative_patch_short_run_lowers_the_loss() {
    short_run_lowers_the_loss(short("relative-patch"), 0.05);
}

#[test]
fn inpainting_short_run_lowers_the_loss() {
    short_run_lowers_the_loss(short("inpainting"), 0.2);
}

/// A small Moving Fashion-MNIST: 128 videos of 8 frames of 48x48, 80 steps (frame order
/// stays near chance for the first few dozen), with the method's own optimizer (AdamW).
fn short_video(method: &str) -> TrainConfig {
    let mut cfg = TrainConfig {
        dataset: "moving-fmnist".into(),
        width: 8,
        batch_size: 32,
        max_steps: Some(80),
        checkpoint_every: 1000,
        ..TrainConfig::for_method(method)
    };
    cfg.video.moving_videos = 128;
    cfg.video.size = 48;
    cfg.video.clip_len = 8;
    cfg
}

#[test]
fn shuffle_learn_short_run_lowers_the_loss() {
    short_run_lowers_the_loss(short_video("shuffle-learn"), 0.05);
}

#[test]
fn odd_one_out_short_run_lowers_the_loss() {
    short_run_lowers_the_loss(short_video("odd-one-out"), 0.05);
}

/// Next-frame prediction starts at the copy-the-last-frame baseline (its correction
/// starts near zero), so a falling loss says little: after the short run it must beat
/// copying the last frame on the held-out videos, scored on the same samples.
#[test]
fn next_frame_short_run_beats_copying_the_last_frame() {
    if !crate::runs::have_fashion_mnist() {
        return;
    }
    let cfg = short_video("next-frame");
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(cfg.clone(), dir.path(), &Device::Cpu).unwrap();
    trainer.run().unwrap();
    let split = selfsup_data::Split::Test;
    let test = selfsup_data::load_with(&cfg.dataset, split, None, &cfg.video).unwrap();
    let (mse, copy) = trainer.pretext_scores(std::sync::Arc::new(test)).unwrap();
    let (mse, copy) = (mse.unwrap(), copy.unwrap());
    assert!(
        mse < 0.95 * copy,
        "held-out MSE {mse:.4}, copying the last frame {copy:.4}"
    );
}
