//! Short real runs on Fashion-MNIST: reproducibility, bit-exact resume, non-finite loss.
use candle_core::Device;
use selfsup_train::export::export_encoder;
use selfsup_train::{TrainConfig, TrainError, Trainer};
use std::path::Path;

pub(crate) fn have_fashion_mnist() -> bool {
    let found =
        selfsup_data::locate("fashion-mnist", None, &["train-images-idx3-ubyte.gz"]).is_ok();
    if !found {
        eprintln!("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): skipping");
    }
    found
}

pub(crate) fn tiny() -> TrainConfig {
    TrainConfig {
        width: 4,
        batch_size: 16,
        max_steps: Some(6),
        checkpoint_every: 3,
        seed: 11,
        ..Default::default()
    }
}

fn train(cfg: &TrainConfig, dir: &Path, stop: usize) -> Trainer {
    let mut t = Trainer::new(cfg.clone(), dir, &Device::Cpu).unwrap();
    t.resume().unwrap();
    t.run_until(stop).unwrap();
    t
}

fn exported(t: &Trainer, dir: &Path) -> Vec<u8> {
    let path = dir.join("encoder.safetensors");
    export_encoder(t.varmap(), t.step(), &path).unwrap();
    std::fs::read(path).unwrap()
}

/// The method state (banks, queues, key encoders) of a run's latest checkpoint, as bytes.
fn method_state(dir: &Path) -> Vec<u8> {
    let latest = selfsup_train::checkpoint::latest_checkpoint(dir)
        .unwrap()
        .unwrap();
    std::fs::read(latest.join("method.safetensors")).unwrap()
}

/// Two runs with one seed agree bit for bit, and so does a run interrupted after
/// step 4 (checkpoint at 3) and resumed, in weights and in method state.
pub(crate) fn resume_is_bit_exact(cfg: &TrainConfig) -> Vec<u8> {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let method = &cfg.method;
    let full_a = train(cfg, a.path(), usize::MAX);
    let full_b = train(cfg, b.path(), usize::MAX);
    assert_eq!(full_a.step(), 6);
    let bytes = exported(&full_a, a.path());
    assert_eq!(
        bytes,
        exported(&full_b, b.path()),
        "{method}: two runs with one seed differ"
    );

    let interrupted = train(cfg, c.path(), 4);
    assert_eq!(interrupted.step(), 4);
    drop(interrupted);
    let resumed = train(cfg, c.path(), usize::MAX);
    assert_eq!(resumed.step(), 6);
    assert_eq!(
        bytes,
        exported(&resumed, c.path()),
        "{method}: resumed run differs from the uninterrupted one"
    );
    assert_eq!(
        method_state(a.path()),
        method_state(c.path()),
        "{method}: resumed method state differs"
    );

    let metrics = selfsup_train::metrics::read_metrics(&c.path().join("metrics.jsonl")).unwrap();
    let steps: Vec<usize> = metrics.iter().map(|m| m.step).collect();
    assert_eq!(
        steps,
        vec![1, 2, 3, 4, 5, 6],
        "{method}: metrics keep one line per step across the resume"
    );
    bytes
}

#[test]
fn same_seed_gives_identical_weights_and_resume_is_bit_exact() {
    if !have_fashion_mnist() {
        return;
    }
    let cfg = tiny();
    let bytes = resume_is_bit_exact(&cfg);
    let other = TrainConfig { seed: 12, ..cfg };
    let d = tempfile::tempdir().unwrap();
    assert_ne!(
        bytes,
        exported(&train(&other, d.path(), usize::MAX), d.path())
    );
}

/// The memory bank, the queue, the momentum encoder and their step counters survive
/// an interruption: the resumed run continues bit for bit.
#[test]
fn bank_queue_and_momentum_encoder_resume_bit_exact() {
    if !have_fashion_mnist() {
        return;
    }
    for method in ["npid", "pirl", "moco"] {
        let mut cfg = TrainConfig {
            method: method.into(),
            ..tiny()
        };
        cfg.contrastive.negatives = 64;
        cfg.contrastive.key_momentum_cosine = true;
        resume_is_bit_exact(&cfg);
    }
}

#[test]
fn resume_with_other_settings_is_refused() {
    if !have_fashion_mnist() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    train(&tiny(), dir.path(), 3);
    let changed = TrainConfig { lr: 0.1, ..tiny() };
    let mut t = Trainer::new(changed, dir.path(), &Device::Cpu).unwrap();
    let err = t.resume().unwrap_err().to_string();
    assert!(err.contains("`lr`"), "{err}");
}

#[test]
fn diverging_loss_stops_with_a_clear_error_and_keeps_the_checkpoint() {
    if !have_fashion_mnist() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        lr: 1e30,
        max_steps: Some(20),
        checkpoint_every: 1,
        ..tiny()
    };
    let mut t = Trainer::new(cfg, dir.path(), &Device::Cpu).unwrap();
    match t.run() {
        Err(TrainError::NonFinite { step, .. }) => {
            assert!(step >= 2, "the first step's loss is finite");
            let latest = selfsup_train::checkpoint::latest_checkpoint(dir.path())
                .unwrap()
                .unwrap();
            let kept = selfsup_train::checkpoint::load_checkpoint(&latest, &Device::Cpu).unwrap();
            assert_eq!(kept.state.step, step - 1);
        }
        other => panic!(
            "expected a non-finite loss error, got {:?}",
            other.map(|o| o.steps)
        ),
    }
}

#[test]
fn simclr_rejects_a_batch_of_one() {
    if !have_fashion_mnist() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        batch_size: 1,
        ..tiny()
    };
    let err = Trainer::new(cfg, dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("batch-size") && err.contains("at least 2"),
        "{err}"
    );
}
