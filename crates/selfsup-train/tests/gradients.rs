//! Every trainable variable of each encoder plus head must receive a finite, non-zero
//! gradient: candle has silent no-gradient paths, and this is how we catch them.
//!
//! Batches come from each method's own view recipe over synthetic images, so every
//! method in [`METHODS`] is covered with the views (and free labels) it trains on.
use candle_core::Device;
use candle_nn::VarMap;
use selfsup_data::{Dataset, Loader, Rng};
use selfsup_train::methods::{build_method, DataShape, METHODS, VIDEO_METHODS};
use selfsup_train::optim::trainable_params;
use selfsup_train::TrainConfig;
use std::sync::Arc;

/// `n` random images of `channels x size x size` with labels, or clips of `clip_len`
/// such frames.
pub(crate) fn synthetic(n: usize, channels: usize, size: usize, clip_len: usize) -> Arc<Dataset> {
    let mut rng = Rng::new(11);
    let pixels = (0..n * channels * clip_len * size * size)
        .map(|_| rng.below(256) as u8)
        .collect();
    let labels = (0..n as u32).map(|i| i % 2).collect();
    let ds = Dataset::new(
        "synthetic",
        channels,
        clip_len * size,
        size,
        pixels,
        Some(labels),
        2,
        vec![0.5; channels],
        vec![0.25; channels],
    )
    .unwrap()
    .with_clip_len(clip_len)
    .unwrap();
    Arc::new(ds)
}

fn check_all_gradients(method: &str, encoder: &str, channels: usize, size: usize) {
    let device = Device::Cpu;
    let mut cfg = TrainConfig {
        method: method.into(),
        encoder: encoder.into(),
        width: 8,
        batch_size: 4,
        ..Default::default()
    };
    cfg.contrastive.negatives = 8;
    let varmap = VarMap::new();
    let clip_len = if VIDEO_METHODS.contains(&method) {
        8
    } else {
        1
    };
    let data = DataShape {
        channels,
        size,
        images: 16,
        clip_len,
        ..DataShape::default()
    };
    let mut model = build_method(&cfg, data, &varmap, &device).unwrap();
    let clips = synthetic(4, channels, size, clip_len);
    let loader = Loader::new(clips, model.views(), 4, 0).unwrap();
    let batch = loader.epoch(0, 0, &device).next().unwrap().unwrap();
    let grads = model.loss(&batch).unwrap().backward().unwrap();
    let params = trainable_params(&varmap, &[]);
    let label = format!("{method} with {encoder}");
    assert!(
        params.iter().any(|p| p.name.starts_with("encoder."))
            && params.iter().any(|p| !p.name.starts_with("encoder.")),
        "{label}: expected encoder and head variables"
    );
    for p in &params {
        let g = grads
            .get(p.var.as_tensor())
            .unwrap_or_else(|| panic!("{label}: no gradient for {}", p.name));
        let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            g.iter().all(|v| v.is_finite()),
            "{label}: non-finite gradient in {}",
            p.name
        );
        assert!(
            g.iter().any(|v| *v != 0.0),
            "{label}: all-zero gradient for {}",
            p.name
        );
    }
    // Banks, queues and momentum encoders must receive no gradient at all.
    for (name, t) in model.state() {
        assert!(
            grads.get(&t).is_none(),
            "{label}: gradient reached method state {name}"
        );
    }
}

#[test]
fn every_method_with_small_cnn_learns_on_grayscale_and_rgb() {
    for method in METHODS {
        check_all_gradients(method, "small-cnn", 1, 28);
        check_all_gradients(method, "small-cnn", 3, 32);
    }
}

#[test]
fn resnet18_cifar_and_head_all_learn() {
    check_all_gradients("simclr", "resnet18-cifar", 3, 16);
}

#[test]
fn resnet18_imagenet_stem_and_head_all_learn() {
    check_all_gradients("simclr", "resnet18", 3, 32);
}

#[test]
fn resnet50_cifar_and_head_all_learn() {
    check_all_gradients("simclr", "resnet50-cifar", 3, 8);
}
