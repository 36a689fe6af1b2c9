//! Frame embeddings and feature fusion of the video pretext tasks, which classify
//! frame order.
use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use selfsup_encoders::torch_linear;

/// A fully connected layer and ReLU over a frame's whole feature map (`fc.weight`,
/// `fc.bias`), shared by all frames. Misra et al. and Fernando et al. compare frames
/// through AlexNet's fully connected features, which know where things are in the
/// frame; the encoder's globally pooled features do not, and frame order is mostly a
/// matter of where things are.
#[derive(Clone, Debug)]
pub struct FrameEmbedding {
    fc: Linear,
}

impl FrameEmbedding {
    /// An embedding of `map_len = D·h·w` map values into `dim` features.
    ///
    /// # Errors
    /// If `vb` cannot provide the variables.
    pub fn new(map_len: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc: torch_linear(map_len, dim, vb.pp("fc"))?,
        })
    }
}

impl Module for FrameEmbedding {
    /// # Shapes
    /// `(N, D, h, w)` to `(N, dim)`.
    fn forward(&self, map: &Tensor) -> Result<Tensor> {
        self.fc.forward(&map.flatten_from(1)?)?.relu()
    }
}

/// Frame features stacked view-major, `(V·N, D)`, regrouped per sample with its `V`
/// frames' features concatenated in view order: Shuffle & Learn's fusion of its
/// siamese towers (Misra et al. 2016), also that of jigsaw tiles.
///
/// # Shapes
/// `(V·N, D)` to `(N, V·D)`.
pub fn concat_views(features: &Tensor, views: usize) -> Result<Tensor> {
    let (rows, dim) = features.dims2()?;
    if views == 0 || rows % views != 0 {
        candle_core::bail!("{rows} feature rows are not a whole number of {views} views")
    }
    let n = rows / views;
    features
        .reshape((views, n, dim))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((n, views * dim))
}

/// Odd-one-out's "stack of differences" fusion (Fernando et al. 2017, §3.2, their best):
/// for each of `questions` sub-clips of `frames` frames, the differences of successive
/// frames' features, all concatenated per sample. Views are sub-clip-major.
///
/// # Shapes
/// `(Q·F·N, D)` to `(N, Q·(F−1)·D)`.
pub fn stack_of_differences(features: &Tensor, questions: usize, frames: usize) -> Result<Tensor> {
    let (rows, dim) = features.dims2()?;
    if frames < 2 || questions == 0 || rows % (questions * frames) != 0 {
        candle_core::bail!(
            "{rows} feature rows are not a whole number of {questions} sub-clips of {frames} (≥ 2) frames"
        )
    }
    let n = rows / (questions * frames);
    let f = features.reshape((questions, frames, n * dim))?;
    let diff = (f.narrow(1, 1, frames - 1)? - f.narrow(1, 0, frames - 1)?)?;
    concat_views(
        &diff.reshape((questions * (frames - 1) * n, dim))?,
        questions * (frames - 1),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn concat_views_puts_each_samples_views_side_by_side() {
        // 2 views of 3 samples, D = 2: row (v, n) = [10v + n, -(10v + n)].
        let rows: Vec<f32> = (0..2)
            .flat_map(|v| (0..3).flat_map(move |n| [(10 * v + n) as f32, -((10 * v + n) as f32)]))
            .collect();
        let x = Tensor::from_vec(rows, (6, 2), &Device::Cpu).unwrap();
        let y = concat_views(&x, 2).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y[1], vec![1.0, -1.0, 11.0, -11.0]);
        assert!(concat_views(&x, 4).is_err());
    }

    #[test]
    fn stack_of_differences_subtracts_successive_frames_within_each_sub_clip() {
        // 2 sub-clips of 3 frames, 2 samples, D = 1: row (q, f, n) = q·100 + f² + 1000·n.
        let (q, f, n) = (2, 3, 2);
        let rows: Vec<f32> = (0..q)
            .flat_map(|qq| {
                (0..f).flat_map(move |ff| {
                    (0..n).map(move |nn| (qq * 100 + ff * ff + 1000 * nn) as f32)
                })
            })
            .collect();
        let x = Tensor::from_vec(rows, (q * f * n, 1), &Device::Cpu).unwrap();
        let y = stack_of_differences(&x, q, f)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // Differences 1 − 0 and 4 − 1 per sub-clip; the offsets cancel.
        assert_eq!(y, vec![vec![1.0, 3.0, 1.0, 3.0]; 2]);
        assert!(stack_of_differences(&x, 2, 1).is_err());
    }
}
