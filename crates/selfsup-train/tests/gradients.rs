//! Every trainable variable of each encoder plus head must receive a finite, non-zero
//! gradient: candle has silent no-gradient paths, and this is how we catch them.
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use selfsup_data::Batch;
use selfsup_encoders::seeded_var_builder;
use selfsup_train::methods::{build_method, DataShape};
use selfsup_train::optim::trainable_params;
use selfsup_train::TrainConfig;

fn check_all_gradients(encoder: &str, channels: usize, size: usize) {
    let device = Device::Cpu;
    let cfg = TrainConfig {
        encoder: encoder.into(),
        width: 8,
        batch_size: 4,
        ..Default::default()
    };
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, 3, DType::F32, &device);
    let mut method = build_method(&cfg, DataShape { channels, size }, vb).unwrap();
    let view = |seed: f64| {
        let n = 4 * channels * size * size;
        let v: Vec<f32> = (0..n)
            .map(|i| ((i as f64 * 0.731 + seed).sin()) as f32)
            .collect();
        Tensor::from_vec(v, (4, channels, size, size), &device).unwrap()
    };
    let batch = Batch {
        views: vec![view(0.0), view(1.3)],
        labels: None,
        indices: vec![0, 1, 2, 3],
    };
    let grads = method.loss(&batch).unwrap().backward().unwrap();
    let params = trainable_params(&varmap, &[]);
    assert!(
        params.iter().any(|p| p.name.starts_with("encoder."))
            && params.iter().any(|p| p.name.starts_with("head."))
    );
    for p in &params {
        let g = grads
            .get(p.var.as_tensor())
            .unwrap_or_else(|| panic!("{encoder}: no gradient for {}", p.name));
        let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            g.iter().all(|v| v.is_finite()),
            "{encoder}: non-finite gradient in {}",
            p.name
        );
        assert!(
            g.iter().any(|v| *v != 0.0),
            "{encoder}: all-zero gradient for {}",
            p.name
        );
    }
}

#[test]
fn small_cnn_and_head_all_learn() {
    check_all_gradients("small-cnn", 1, 28);
}

#[test]
fn resnet18_cifar_and_head_all_learn() {
    check_all_gradients("resnet18-cifar", 3, 16);
}

#[test]
fn resnet18_imagenet_stem_and_head_all_learn() {
    check_all_gradients("resnet18", 3, 32);
}

#[test]
fn resnet50_cifar_and_head_all_learn() {
    check_all_gradients("resnet50-cifar", 3, 8);
}
