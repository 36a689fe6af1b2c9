//! The autoencoders and GANs: each GAN player's update moves only its own network,
//! every variable of both gets a gradient, training stays finite, divergence stops
//! the run cleanly, and resuming repeats the uninterrupted run.
use crate::gradients::synthetic;
use crate::learning::{short, short_run_lowers_the_loss};
use crate::runs::{have_fashion_mnist, resume_is_bit_exact, tiny};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use selfsup_data::{Batch, Loader};
use selfsup_train::methods::{build_method, DataShape, Normalization};
use selfsup_train::optim::{build_optimizer, is_running_stat, trainable_params};
use selfsup_train::Method;
use selfsup_train::{TrainConfig, TrainError, Trainer};
use std::collections::HashMap;

/// Copies of every tensor, by name.
fn snapshot(named: impl IntoIterator<Item = (String, Tensor)>) -> HashMap<String, Tensor> {
    named
        .into_iter()
        .map(|(k, t)| (k, t.copy().unwrap()))
        .collect()
}

fn main_vars(varmap: &VarMap) -> Vec<(String, Tensor)> {
    let data = varmap.data().lock().unwrap();
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

fn changed(a: &Tensor, b: &Tensor) -> bool {
    let d = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    d.sum_all().unwrap().to_scalar::<f64>().unwrap() > 0.0
}

/// A tiny GAN of `method` (BiGAN's cycle term at `cycle_weight`), its variables, its
/// config and one batch of synthetic images.
fn gan_and_batch(method: &str, cycle_weight: f64) -> (Box<dyn Method>, VarMap, TrainConfig, Batch) {
    let device = Device::Cpu;
    let mut cfg = TrainConfig {
        width: 4,
        batch_size: 4,
        ..TrainConfig::for_method(method)
    };
    cfg.generative.cycle_weight = cycle_weight;
    let varmap = VarMap::new();
    let data = DataShape {
        images: 4,
        normalization: Normalization::new(&[0.5], &[0.25]),
        ..DataShape::default()
    };
    let model = build_method(&cfg, data, &varmap, &device).unwrap();
    let loader = Loader::new(synthetic(4, 1, 28, 1), model.views(), 4, 0).unwrap();
    let batch = loader.epoch(0, 0, &device).next().unwrap().unwrap();
    (model, varmap, cfg, batch)
}

/// The run's step changes the run's variables and not the side network; the side
/// step changes every variable of the side network (Adam moves exactly the
/// variables with a non-zero gradient) and none of the run's, running statistics
/// included.
fn players_stay_apart(method: &str, cycle_weight: f64) {
    let (mut model, varmap, cfg, batch) = gan_and_batch(method, cycle_weight);
    let mut opt = build_optimizer(&cfg, trainable_params(&varmap, &[])).unwrap();

    let main_before = snapshot(main_vars(&varmap));
    let loss = model.loss(&batch).unwrap();
    // The loss's forward pass may update the generator's running statistics.
    let side_before = snapshot(model.state());
    let grads = loss.backward().unwrap();
    for (name, t) in model.state() {
        assert!(
            grads.get(&t).is_none(),
            "{method}: the run's loss reached {name}"
        );
    }
    opt.step(&grads, 1e-3).unwrap();
    for (name, t) in model.state() {
        assert!(
            !changed(&t, &side_before[&name]),
            "{method}: the run's step moved {name}"
        );
    }
    let main_after_step = snapshot(main_vars(&varmap));
    let moved = main_after_step
        .iter()
        .filter(|(k, _)| !is_running_stat(k))
        .all(|(k, t)| changed(t, &main_before[k]));
    assert!(
        moved,
        "{method}: the run's step left a variable of its own unchanged"
    );

    let side_loss = model.side_step(&batch, 1e-3).unwrap().unwrap();
    assert!(side_loss.is_finite(), "{method}: side loss {side_loss}");
    for (name, t) in main_vars(&varmap) {
        assert!(
            !changed(&t, &main_after_step[&name]),
            "{method}: the side step moved the run's {name}"
        );
    }
    for (name, t) in model.state() {
        let own = name.contains(".var.") && !is_running_stat(&name);
        if own {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(
                v.iter().all(|x| x.is_finite()),
                "{method}: {name} not finite"
            );
            assert!(
                changed(&t, &side_before[&name]),
                "{method}: no gradient reached {name}"
            );
        }
    }
}

#[test]
fn dcgan_players_stay_apart() {
    players_stay_apart("dcgan", 0.0);
}

#[test]
fn bigan_players_stay_apart() {
    players_stay_apart("bigan", 0.0);
    players_stay_apart("bigan", 1.0);
}

/// BiGAN's first loss on one batch from one init, at a cycle-consistency weight.
fn first_bigan_loss(cycle_weight: f64) -> f64 {
    let (mut model, _, _, batch) = gan_and_batch("bigan", cycle_weight);
    let loss = model.loss(&batch).unwrap();
    f64::from(loss.to_scalar::<f32>().unwrap())
}

/// The cycle term (ALICE) adds `weight` times one positive reconstruction error.
#[test]
fn bigan_cycle_term_scales_with_its_weight() {
    let plain = first_bigan_loss(0.0);
    let once = first_bigan_loss(1.0) - plain;
    let twice = first_bigan_loss(2.0) - plain;
    assert!(once > 1e-3, "cycle term {once}");
    assert!((twice - 2.0 * once).abs() < 1e-4 * twice, "{once} {twice}");
}

#[test]
fn gan_runs_resume_bit_exact() {
    if !have_fashion_mnist() {
        return;
    }
    for method in ["dcgan", "bigan"] {
        resume_is_bit_exact(&TrainConfig {
            method: method.into(),
            ..tiny()
        });
    }
}

#[test]
fn diverging_gan_stops_with_a_clear_error_and_keeps_the_checkpoint() {
    if !have_fashion_mnist() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        method: "dcgan".into(),
        lr: 1e30,
        max_steps: Some(20),
        checkpoint_every: 1,
        ..tiny()
    };
    let mut t = Trainer::new(cfg, dir.path(), &Device::Cpu).unwrap();
    match t.run() {
        Err(e @ TrainError::NonFinite { step, .. }) => {
            let latest = selfsup_train::checkpoint::latest_checkpoint(dir.path())
                .unwrap()
                .unwrap();
            let kept = selfsup_train::checkpoint::load_checkpoint(&latest, &Device::Cpu).unwrap();
            assert_eq!(kept.state.step, step - 1);
            let msg = e.to_string();
            assert!(msg.contains(&latest.display().to_string()), "{msg}");
        }
        other => panic!(
            "expected a non-finite loss, got {:?}",
            other.map(|o| o.steps)
        ),
    }
}

/// Both players' losses stay finite over a short default-configuration run, and the
/// side loss is logged with every step.
fn gan_stays_finite(method: &str) {
    if !have_fashion_mnist() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(short(method), dir.path(), &Device::Cpu).unwrap();
    trainer.run().unwrap();
    let metrics = selfsup_train::metrics::read_metrics(&dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.len(), 40);
    for m in metrics {
        let side = m.side_loss.unwrap();
        assert!(m.loss.is_finite() && side.is_finite(), "{method}: {m:?}");
    }
}

#[test]
fn dcgan_short_run_stays_finite() {
    gan_stays_finite("dcgan");
}

#[test]
fn bigan_short_run_stays_finite() {
    gan_stays_finite("bigan");
}

#[test]
fn autoencoder_short_run_lowers_the_loss() {
    short_run_lowers_the_loss(short("autoencoder"), 0.1);
}

#[test]
fn denoising_autoencoder_short_run_lowers_the_loss() {
    short_run_lowers_the_loss(short("denoising-autoencoder"), 0.1);
}
