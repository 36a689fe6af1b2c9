//! PNG grids of what the generative methods produce (reconstructions, samples),
//! written into the run directory at every checkpoint.
use super::Normalization;
use candle_core::{DType, Device, Tensor};
use selfsup_data::Image;
use std::path::Path;

/// Images shown per row.
pub(crate) const SHOWN: usize = 8;

/// Up to [`SHOWN`] images of a batch, copied to the host (for the next grid).
pub(crate) fn keep(t: &Tensor) -> candle_core::Result<Tensor> {
    t.narrow(0, 0, t.dim(0)?.min(SHOWN))?
        .to_device(&Device::Cpu)?
        .copy()
}

/// The images of a normalised `(N, C, H, W)` tensor, mapped back to pixels.
fn pixels(t: &Tensor, norm: &Normalization) -> candle_core::Result<Vec<Image>> {
    let (n, c, h, w) = t.dims4()?;
    let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(data
        .chunks_exact(c * h * w)
        .take(n)
        .map(|px| Image {
            channels: c,
            height: h,
            width: w,
            data: px
                .chunks_exact(h * w)
                .enumerate()
                .flat_map(|(k, plane)| {
                    let (m, s) = (norm.mean[k.min(2)], norm.std[k.min(2)]);
                    plane.iter().map(move |v| v * s + m)
                })
                .collect(),
        })
        .collect())
}

/// Writes one row per tensor (each normalised `(N, C, H, W)`) as a PNG at `path`.
///
/// # Errors
/// On tensor errors, or when the file cannot be written.
pub(crate) fn write_rows(path: &Path, rows: &[Tensor], norm: &Normalization) -> crate::Result<()> {
    let rows = rows
        .iter()
        .map(|t| pixels(t, norm))
        .collect::<candle_core::Result<Vec<_>>>()?;
    selfsup_data::image_grid::write_png_grid(path, &rows)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn pixels_undo_the_normalisation_per_channel() {
        let norm = Normalization::new(&[0.5, 0.25], &[0.5, 0.25]);
        let t = Tensor::new(&[[[[1f32, -1.0]], [[0.0, 3.0]]]], &Device::Cpu).unwrap();
        let img = &pixels(&t, &norm).unwrap()[0];
        assert_eq!(img.data, vec![1.0, 0.0, 0.25, 1.0]);
    }
}
