use crate::progress::progress_bar;
use crate::Result;
use candle_core::{Device, Tensor};
use selfsup_data::Dataset;
use selfsup_encoders::Encoder;

/// Frozen features of a whole split, on the host.
#[derive(Clone, Debug)]
pub struct Features {
    /// Row-major (N, dim).
    pub data: Vec<f32>,
    /// Feature dimension.
    pub dim: usize,
}

impl Features {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// As an (N, dim) tensor on `device`.
    ///
    /// # Errors
    /// On tensor errors.
    pub fn tensor(&self, device: &Device) -> candle_core::Result<Tensor> {
        Tensor::from_slice(&self.data, (self.len(), self.dim), device)
    }
}

/// Runs the encoder in eval mode over every image of `dataset`, without augmentation.
///
/// # Shapes
/// Returns (len, feature_dim).
///
/// # Errors
/// On tensor errors.
pub fn extract_features(
    encoder: &dyn Encoder,
    dataset: &Dataset,
    device: &Device,
    label: &str,
) -> Result<Features> {
    const BATCH: usize = 500;
    let n = dataset.len();
    let bar = progress_bar(n as u64, label);
    let mut data = Vec::with_capacity(n * encoder.feature_dim());
    let indices: Vec<usize> = (0..n).collect();
    for chunk in indices.chunks(BATCH) {
        let x = dataset.batch_tensor(chunk, device)?;
        let f = encoder.forward_t(&x, false)?.detach();
        data.extend(f.flatten_all()?.to_vec1::<f32>()?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(Features {
        data,
        dim: encoder.feature_dim(),
    })
}
