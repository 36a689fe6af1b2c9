//! A second source: candle-datasets' Hugging Face Hub loaders (feature `hub`).
//!
//! These fetch parquet copies of the datasets from the Hub (network needed the
//! first time, then the local hf-hub cache) and convert them into a
//! [`Dataset`] with the same layout and normalisation constants as the IDX
//! and CIFAR readers.

use candle_core::{DType, Tensor};

use crate::dataset::{normalization, Dataset, Split};
use crate::error::{DataError, Result};

/// Loads `fashion-mnist`, `mnist` or `cifar10` through
/// `candle_datasets::vision::{fashion_mnist, mnist, cifar}::load`.
///
/// candle-datasets 0.11 stacks the CIFAR-10 parquet images as
/// `(N, C, W, H)` (its `permute(0, 3, 2, 1)` transposes each image); this
/// function transposes them back to `(N, C, H, W)`.
///
/// # Errors
/// [`DataError::Config`] for another name; [`DataError::Download`] if the
/// Hub or parquet loading fails; [`DataError::Candle`] if the tensors have an
/// unexpected shape.
pub fn load_hub(name: &str, split: Split) -> Result<Dataset> {
    let (source, loaded) = match name {
        "fashion-mnist" => (
            "hf-hub:zalando-datasets/fashion_mnist",
            candle_datasets::vision::fashion_mnist::load(),
        ),
        "mnist" => (
            "hf-hub:ylecun/mnist",
            candle_datasets::vision::mnist::load(),
        ),
        "cifar10" => ("hf-hub:cifar10", candle_datasets::vision::cifar::load()),
        _ => {
            return Err(DataError::config(
                "dataset",
                format!("no hub loader for `{name}`; known: fashion-mnist, mnist, cifar10"),
            ))
        }
    };
    let ds = loaded.map_err(|e| DataError::Download {
        url: source.to_string(),
        msg: crate::error::one_line(&e.to_string()),
    })?;
    let (images, labels) = match split {
        Split::Train => (ds.train_images, ds.train_labels),
        Split::Test => (ds.test_images, ds.test_labels),
    };
    let (channels, side) = if name == "cifar10" { (3, 32) } else { (1, 28) };
    let n = images.dim(0)?;
    let mut images = images.reshape((n, channels, side, side))?;
    if name == "cifar10" {
        images = images.transpose(2, 3)?.contiguous()?;
    }
    let pixels = to_u8(&images)?;
    let labels: Vec<u32> = labels
        .to_dtype(DType::U32)?
        .flatten_all()?
        .to_vec1::<u32>()?;
    let (mean, std) =
        normalization(name).unwrap_or_else(|| (vec![0.5; channels], vec![0.5; channels]));
    Dataset::new(
        name,
        channels,
        side,
        side,
        pixels,
        Some(labels),
        ds.labels,
        mean,
        std,
    )
}

/// `[0, 1]` floats back to bytes.
fn to_u8(images: &Tensor) -> Result<Vec<u8>> {
    Ok((images.to_dtype(DType::F32)? * 255.0)?
        .round()?
        .clamp(0f32, 255f32)?
        .to_dtype(DType::U8)?
        .flatten_all()?
        .to_vec1::<u8>()?)
}
