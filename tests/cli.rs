//! End-to-end tests of the `xtask` binary: bad input gives one clean line and a non-zero exit.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;
use common::{assert_clean_error, xtask};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

fn gz(path: &Path, bytes: &[u8]) {
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    e.write_all(bytes).unwrap();
    e.finish().unwrap();
}

fn idx_images(magic: u32, n: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [magic, n, 28, 28] {
        v.extend(x.to_be_bytes());
    }
    v.extend(std::iter::repeat_n(7u8, (n * 28 * 28) as usize));
    v
}

fn idx_labels(n: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [2049u32, n] {
        v.extend(x.to_be_bytes());
    }
    v.extend((0..n).map(|i| (i % 10) as u8));
    v
}

/// A fake MNIST folder; `images` and `labels` are the raw IDX bytes of the train split.
fn mnist_dir(images: &[u8], labels: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    gz(&dir.path().join("train-images-idx3-ubyte.gz"), images);
    gz(&dir.path().join("train-labels-idx1-ubyte.gz"), labels);
    dir
}

/// A fake MNIST folder with both splits of `n` images whose pixels vary with the image and label.
fn varied_mnist_dir(n: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (images, labels) in [
        ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    ] {
        let mut img = idx_images(2051, n);
        for (i, p) in img[16..].iter_mut().enumerate() {
            let (image, pixel) = (i / 784, i % 784);
            *p = ((pixel * (image % 10 + 1) + image * 7) % 256) as u8;
        }
        gz(&dir.path().join(images), &img);
        gz(&dir.path().join(labels), &idx_labels(n));
    }
    dir
}

fn pretrain_on(dir: &Path) -> Output {
    let out = dir.join("run");
    xtask(&[
        "pretrain",
        "--dataset",
        "mnist",
        "--data-dir",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-steps",
        "1",
        "--batch-size",
        "4",
        "--no-eval",
    ])
}

#[test]
fn truncated_gz_is_named() {
    let dir = mnist_dir(&idx_images(2051, 8), &idx_labels(8));
    let path = dir.path().join("train-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(&pretrain_on(dir.path()), &["train-images-idx3-ubyte.gz"]);
}

#[test]
fn wrong_magic_is_named() {
    let dir = mnist_dir(&idx_images(1234, 8), &idx_labels(8));
    assert_clean_error(
        &pretrain_on(dir.path()),
        &["train-images-idx3-ubyte.gz", "magic"],
    );
}

#[test]
fn label_count_mismatch_is_named() {
    let dir = mnist_dir(&idx_images(2051, 8), &idx_labels(7));
    assert_clean_error(
        &pretrain_on(dir.path()),
        &["train-labels-idx1-ubyte.gz", "8", "7"],
    );
}

#[test]
fn missing_data_folder_lists_what_was_tried() {
    let missing = tempfile::tempdir().unwrap().path().join("nowhere");
    let out = xtask(&[
        "pretrain",
        "--dataset",
        "mnist",
        "--data-dir",
        missing.to_str().unwrap(),
        "--no-eval",
    ]);
    assert_clean_error(
        &out,
        &["nowhere", "/usr/share/datasets/mnist", "xtask download"],
    );
}

#[test]
fn batch_of_one_for_simclr_is_refused() {
    let dir = mnist_dir(&idx_images(2051, 8), &idx_labels(8));
    let out = dir.path().join("run");
    let out = xtask(&[
        "pretrain",
        "--dataset",
        "mnist",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--batch-size",
        "1",
    ]);
    assert_clean_error(&out, &["batch-size", "at least 2"]);
}

#[test]
fn negative_learning_rate_is_refused() {
    assert_clean_error(&xtask(&["pretrain", "--lr", "-0.1"]), &["`lr`", "-0.1"]);
}

#[test]
fn bad_data_parallel_settings_are_named() {
    assert_clean_error(
        &xtask(&["pretrain", "--dist", "gloo"]),
        &["--dist gloo", "none or mpi"],
    );
    assert_clean_error(
        &xtask(&["pretrain", "--dist", "mpi", "--dist-timeout", "0"]),
        &["--dist-timeout", "positive"],
    );
}

#[test]
fn zero_epoch_steps_are_refused() {
    assert_clean_error(
        &xtask(&["bench", "--epoch", "--epoch-steps", "0"]),
        &["`epoch-steps`", "at least 1"],
    );
}

#[test]
fn unknown_method_and_encoder_are_named() {
    assert_clean_error(
        &xtask(&["pretrain", "--method", "byol2"]),
        &["method", "byol2", "simclr"],
    );
    assert_clean_error(
        &xtask(&["pretrain", "--encoder", "vgg"]),
        &["encoder", "vgg", "resnet18"],
    );
}

#[test]
fn tiny_run_writes_a_complete_run_folder_and_refuses_to_overwrite_it() {
    let dir = varied_mnist_dir(16);
    let run = dir.path().join("run");
    let args = [
        "pretrain",
        "--dataset",
        "mnist",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--max-steps",
        "2",
        "--batch-size",
        "8",
        "--width",
        "4",
        "--no-eval",
    ];
    let out = xtask(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "config.toml",
        "metrics.jsonl",
        "encoder.safetensors",
        "checkpoints/latest",
    ] {
        assert!(run.join(f).exists(), "missing {f}");
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    assert!(metrics.contains("\"images_per_s\""));
    assert_clean_error(&xtask(&args), &["--resume"]);
}

#[test]
fn sigkilled_run_resumes_to_identical_weights() {
    let dir = varied_mnist_dir(512);
    let data = dir.path().to_str().unwrap().to_string();
    let run = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let args = |out: &str| -> Vec<String> {
        [
            "pretrain",
            "--dataset",
            "mnist",
            "--data-dir",
            &data,
            "--out",
            out,
            "--max-steps",
            "24",
            "--batch-size",
            "32",
            "--width",
            "4",
            "--checkpoint-every",
            "4",
            "--no-eval",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let full = xtask(
        &args(&run("full"))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        full.status.success(),
        "{}",
        String::from_utf8_lossy(&full.stderr)
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args(&run("killed")))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let latest = dir.path().join("killed/checkpoints/latest");
    let start = std::time::Instant::now();
    while !latest.exists() && start.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    let at = std::fs::read_to_string(&latest).unwrap();
    assert!(
        !status.success() && at.trim() != "step-00000024",
        "the run finished before it was killed ({at})"
    );

    // `--resume` alone takes the run's own settings from its config.toml.
    let killed = run("killed");
    let resumed = xtask(&["pretrain", "--out", &killed, "--resume", "--no-eval"]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let a = std::fs::read(dir.path().join("full/encoder.safetensors")).unwrap();
    let b = std::fs::read(dir.path().join("killed/encoder.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from the uninterrupted run");
}
