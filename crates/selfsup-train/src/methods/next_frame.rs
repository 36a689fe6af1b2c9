//! Next-frame prediction, predictive coding on video (Srivastava, Mansimov,
//! Salakhutdinov 2015, "Unsupervised Learning of Video Representations using LSTMs";
//! Mathieu, Couprie, LeCun 2016, "Deep Multi-Scale Video Prediction Beyond Mean Square
//! Error"): an encoder-decoder predicts frame t + 1 from frames t − k + 1..t, with an
//! L2 loss.
use super::samples::{keep, write_rows};
use super::{encoder_kind, map_len, require_clips, DataShape, Normalization};
use crate::config::TrainConfig;
use crate::method::{Method, PretextMetric, PretextTally, ENCODER_PREFIX};
use crate::{Result, TrainError};
use candle_core::{Device, Tensor};
use candle_nn::{Init, Linear, Module, ModuleT, VarBuilder};
use selfsup_data::pretext::NextFrameViews;
use selfsup_data::{Batch, ViewRecipe};
use selfsup_encoders::{torch_linear, Encoder};
use selfsup_generative::{Decoder, DECODER_STAGES};
use std::path::Path;
use std::sync::Arc;

/// The artefact grid, overwritten at every checkpoint: last context frame, prediction
/// and real next frame.
pub const PREDICTIONS_FILE: &str = "next-frame.png";

/// Next-frame prediction on the clips of a video dataset ([`NextFrameViews`]: `k =
/// predictive.context-frames` consecutive frames and the one after them, cropped and
/// flipped alike).
///
/// 1. The shared encoder reads each context frame on its own (it stays a per-frame
///    image encoder, evaluated and exported like any other), giving `k` feature maps
///    of `D x h x w`.
/// 2. At every cell of the map, a fully connected layer (`fuse.`, no activation) mixes
///    the `k·D` values of the `k` frames into `w` (the run's width) values, so that it
///    can form the temporal differences that carry the motion; the `h·w·w` values are
///    flattened. Flattening the `k` maps themselves would give the decoder's first layer
///    `k·D·h·w` inputs: 400M weights for small-cnn w = 32 on 64x64 frames.
/// 3. A [`Decoder`] (`decoder.`) turns them into a correction Δ, added to a linear
///    extrapolation of the context in pixel space: the prediction is
///    `x_t + Σ_i b_i (x_i − x_t) + Δ` over the older context frames `x_i`, with one
///    learned weight `b_i` per frame (`extrapolate.weight`, starting at 0), the linear
///    predictor of classical predictive coding (Srinivasan, Laughlin, Dubs 1982,
///    "Predictive coding: a fresh view of inhibition in the retina"). The network
///    only has to learn what the copy and the extrapolation miss: on 64x64 vtest.avi,
///    `x_t + 0.2 (x_t − x_{t−1})` alone errs 9% less than copying, pixel-exact
///    corrections that the decoder cannot draw from an 8x8 map. The decoder's last
///    layer starts small ([`quiet_last_layer`]), so that the model starts at the
///    copy-the-last-frame baseline.
///
/// The loss is the mean squared error of the prediction over every normalised pixel.
/// The held-out measure ([`PretextMetric::Mse`]) is the same, and
/// [`Method::pretext_baseline`] scores copying the last context frame on the same
/// samples.
pub struct NextFrame {
    encoder: Box<dyn Encoder>,
    fuse: Linear,
    decoder: Decoder,
    /// `b_i` of the `k − 1` older context frames, over [`EXTRAPOLATION_GAIN`]; none for `k = 1`.
    extrapolate: Option<Tensor>,
    views: Arc<NextFrameViews>,
    context: usize,
    normalization: Normalization,
    device: Device,
    /// Host copies of the views of the first samples of the last training batch.
    shown: Option<Vec<Tensor>>,
}

impl NextFrame {
    /// Builds the encoder under `encoder.`, the per-cell fusion under `fuse.` and the
    /// decoder under `decoder.`, for the clips of `data` and `cfg.predictive.context_frames`.
    ///
    /// # Errors
    /// If `data` are not video clips, clips are too short for the context and the next
    /// frame (a `predictive.context-frames` error), or for an unknown encoder.
    pub fn new(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Self> {
        require_clips("next-frame", data)?;
        let context = cfg.predictive.context_frames;
        if data.clip_len <= context {
            return Err(TrainError::config(
                "predictive.context-frames",
                format!(
                    "{context} context frames and the next one need clips of at least {} \
                     frames, got {} (video.clip_len)",
                    context + 1,
                    data.clip_len
                ),
            ));
        }
        let views = NextFrameViews {
            clip_len: data.clip_len,
            frame_height: data.size,
            context_frames: context,
            crop_scale: (cfg.pretext.frame_crop, 1.0),
        };
        views.validate()?;
        let encoder = encoder_kind(cfg)?.build(data.channels, vb.pp(ENCODER_PREFIX))?;
        let dim = encoder.feature_dim();
        let cells = map_len(encoder.as_ref(), data, vb.device())? / dim;
        let fuse = torch_linear(context * dim, cfg.width, vb.pp("fuse"))?;
        quiet_last_layer(cfg.width, data.channels, &vb.pp("decoder"))?;
        let decoder = Decoder::new(
            cells * cfg.width,
            data.channels,
            data.size,
            cfg.width,
            vb.pp("decoder"),
        )?;
        let extrapolate = (context > 1)
            .then(|| vb.get_with_hints(context - 1, "extrapolate.weight", Init::Const(0.0)))
            .transpose()?;
        Ok(Self {
            encoder,
            fuse,
            decoder,
            extrapolate,
            views: Arc::new(views),
            context,
            normalization: data.normalization,
            device: vb.device().clone(),
            shown: None,
        })
    }

    /// The context frames and the frame to predict of a batch.
    fn split<'a>(&self, batch: &'a Batch) -> candle_core::Result<(&'a [Tensor], &'a Tensor)> {
        match batch.views.split_last() {
            Some((target, context)) if context.len() == self.context => Ok((context, target)),
            _ => candle_core::bail!(
                "next-frame expects {} context frames and the next one, got {} views",
                self.context,
                batch.views.len()
            ),
        }
    }

    /// The predicted next frame of each sample.
    ///
    /// # Shapes
    /// `k` context frames of `(N, C, H, W)`, oldest first, to `(N, C, H, W)`.
    fn predict(&self, context: &[Tensor], train: bool) -> candle_core::Result<Tensor> {
        let Some(last) = context.last() else {
            candle_core::bail!("next-frame needs at least one context frame")
        };
        let (k, n) = (context.len(), last.dim(0)?);
        let maps = self.encoder.forward_map(&Tensor::cat(context, 0)?, train)?;
        let (_, d, h, w) = maps.dims4()?;
        // (k·N, D, h, w) → (N, h·w, k·D): per cell, the frames' features side by side.
        let cells = maps
            .reshape((k, n, d, h * w))?
            .permute((1, 3, 0, 2))?
            .contiguous()?
            .reshape((n, h * w, k * d))?;
        let fused = self.fuse.forward(&cells)?.flatten_from(1)?;
        self.extrapolation(context)? + self.decoder.forward_t(&fused, train)?
    }

    /// `x_t + Σ_i b_i (x_i − x_t)` over the older context frames `x_i`.
    ///
    /// # Shapes
    /// `k` context frames of `(N, C, H, W)`, oldest first, to `(N, C, H, W)`.
    fn extrapolation(&self, context: &[Tensor]) -> candle_core::Result<Tensor> {
        let Some((last, older)) = context.split_last() else {
            candle_core::bail!("next-frame needs at least one context frame")
        };
        let Some(b) = self.extrapolate.as_ref().filter(|_| !older.is_empty()) else {
            return Ok(last.clone());
        };
        let weights = (b * EXTRAPOLATION_GAIN)?.reshape(((), 1, 1, 1, 1))?;
        let diffs = Tensor::stack(older, 0)?.broadcast_sub(last)?;
        last + diffs.broadcast_mul(&weights)?.sum(0)?
    }
}

/// The extrapolation weights are stored divided by this, so that AdamW, whose steps are
/// about the learning rate in size, moves them by tenths within a hundred steps (a
/// learning-rate multiplier of 10 for these few scalars).
const EXTRAPOLATION_GAIN: f64 = 10.0;

/// Scale of the decoder's last up-convolution at init, relative to PyTorch's default.
const LAST_LAYER_SCALE: f64 = 0.01;

/// Creates the [`Decoder`]'s last up-convolution (`up3`, `(w, C, 4, 4)`, and its bias)
/// before the decoder asks for it, which then gets these variables: weights at
/// [`LAST_LAYER_SCALE`] of PyTorch's init and a zero bias. The correction then starts
/// near zero and the model at the copy-the-last-frame baseline (as zero-initialised
/// residual branches start at the identity, Goyal et al. 2017), instead of that baseline
/// plus random noise many times its error; every variable still gets a gradient.
fn quiet_last_layer(width: usize, channels: usize, vb: &VarBuilder) -> Result<()> {
    let bound = LAST_LAYER_SCALE / ((width * 16) as f64).sqrt();
    let last = format!("up{DECODER_STAGES}");
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    vb.get_with_hints((width, channels, 4, 4), &format!("{last}.weight"), init)?;
    vb.get_with_hints(channels, &format!("{last}.bias"), Init::Const(0.0))?;
    Ok(())
}

impl Method for NextFrame {
    fn name(&self) -> &'static str {
        "next-frame"
    }

    fn views(&self) -> Arc<dyn ViewRecipe> {
        self.views.clone()
    }

    fn loss(&mut self, batch: &Batch) -> candle_core::Result<Tensor> {
        let (context, target) = self.split(batch)?;
        let loss = (self.predict(context, true)? - target)?.sqr()?.mean_all()?;
        self.shown = Some(
            batch
                .views
                .iter()
                .map(keep)
                .collect::<candle_core::Result<_>>()?,
        );
        Ok(loss)
    }

    fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    fn pretext_metric(&self) -> Option<PretextMetric> {
        Some(PretextMetric::Mse)
    }

    /// Squared error of the predicted next frame over every element (normalised pixels).
    fn pretext_eval(&self, batch: &Batch) -> candle_core::Result<PretextTally> {
        let (context, target) = self.split(batch)?;
        PretextTally::squared_error(&self.predict(context, false)?, target)
    }

    /// Squared error of copying the last context frame, over the same elements.
    fn pretext_baseline(&self, batch: &Batch) -> candle_core::Result<Option<PretextTally>> {
        let (context, target) = self.split(batch)?;
        let Some(last) = context.last() else {
            candle_core::bail!("next-frame needs at least one context frame")
        };
        PretextTally::squared_error(last, target).map(Some)
    }

    /// Overwrites [`PREDICTIONS_FILE`]: for up to 8 samples of the last training batch,
    /// rows of the last context frame, the next frame predicted by the current model in
    /// evaluation mode, and the real next frame, in pixels (the normalisation undone).
    fn write_artifacts(&self, run_dir: &Path, _step: usize) -> Result<()> {
        let Some(views) = &self.shown else {
            return Ok(());
        };
        let views = views
            .iter()
            .map(|v| v.to_device(&self.device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let Some((target, context)) = views.split_last() else {
            return Ok(());
        };
        let pred = self.predict(context, false)?.to_device(&Device::Cpu)?;
        let last = context[context.len() - 1].to_device(&Device::Cpu)?;
        let rows = [last, pred, target.to_device(&Device::Cpu)?];
        write_rows(&run_dir.join(PREDICTIONS_FILE), &rows, &self.normalization)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use candle_core::DType;
    use candle_nn::VarMap;
    use selfsup_encoders::seeded_var_builder;

    fn shape(channels: usize, size: usize, clip_len: usize) -> DataShape {
        DataShape {
            channels,
            size,
            images: 1,
            clip_len,
            ..DataShape::default()
        }
    }

    fn build(data: DataShape, context_frames: usize) -> Result<NextFrame> {
        let mut cfg = TrainConfig {
            method: "next-frame".into(),
            width: 4,
            batch_size: 2,
            ..Default::default()
        };
        cfg.predictive.context_frames = context_frames;
        let vb = seeded_var_builder(&VarMap::new(), 0, DType::F32, &Device::Cpu);
        NextFrame::new(&cfg, data, vb)
    }

    /// A batch of `n` samples of `views` random frames.
    fn batch(n: usize, views: usize, channels: usize, size: usize) -> Batch {
        let mut rng = selfsup_data::Rng::new(4);
        let views = (0..views)
            .map(|_| {
                let v: Vec<f32> = (0..n * channels * size * size)
                    .map(|_| rng.below(1000) as f32 / 500.0 - 1.0)
                    .collect();
                Tensor::from_vec(v, (n, channels, size, size), &Device::Cpu).unwrap()
            })
            .collect();
        Batch {
            views,
            labels: None,
            indices: (0..n).collect(),
            targets: None,
        }
    }

    #[test]
    fn the_prediction_has_the_frame_shape() {
        for (channels, size, context) in [(1, 28, 3), (3, 32, 2), (1, 64, 1)] {
            let m = build(shape(channels, size, 8), context).unwrap();
            assert_eq!(m.views().num_views(), context + 1);
            let b = batch(3, context + 1, channels, size);
            let pred = m.predict(&b.views[..context], false).unwrap();
            assert_eq!(pred.dims(), &[3, channels, size, size]);
        }
    }

    #[test]
    fn an_untrained_model_predicts_about_the_last_frame() {
        let m = build(shape(1, 28, 8), 3).unwrap();
        let b = batch(4, 4, 1, 28);
        let pred = m.predict(&b.views[..3], false).unwrap();
        let d = (pred - &b.views[2])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        let d = d.to_scalar::<f32>().unwrap();
        // Frames span [-1, 1]; the correction starts a hundred times smaller.
        assert!(d > 0.0 && d < 0.02, "largest correction {d}");
    }

    #[test]
    fn extrapolation_weighs_the_older_frames_differences() {
        let mut m = build(shape(1, 8, 8), 3).unwrap();
        let b = batch(2, 3, 1, 8);
        let same = m.extrapolation(&b.views).unwrap();
        let d = (same - &b.views[2])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "starts as the copy");
        // Stored over the gain of 10: b = (-1, 0.5).
        m.extrapolate = Some(Tensor::new(&[-0.1f32, 0.05], &Device::Cpu).unwrap());
        let got = m.extrapolation(&b.views).unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (x0, x1, x2, got) = (v(&b.views[0]), v(&b.views[1]), v(&b.views[2]), v(&got));
        for i in 0..got.len() {
            let want = x2[i] - (x0[i] - x2[i]) + 0.5 * (x1[i] - x2[i]);
            assert!((got[i] - want).abs() < 1e-5, "{i}: {} vs {want}", got[i]);
        }
        assert!(build(shape(1, 8, 8), 1).unwrap().extrapolate.is_none());
    }

    #[test]
    fn pretext_eval_and_baseline_score_the_same_elements() {
        let m = build(shape(3, 32, 8), 3).unwrap();
        let b = batch(2, 4, 3, 32);
        let tally = m.pretext_eval(&b).unwrap();
        let base = m.pretext_baseline(&b).unwrap().unwrap();
        assert_eq!(
            (tally.count, base.count),
            (2 * 3 * 32 * 32, 2 * 3 * 32 * 32)
        );
        let sum_sq = |a: &Tensor, t: &Tensor| {
            let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let t = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            a.iter()
                .zip(&t)
                .map(|(x, y)| f64::from(x - y).powi(2))
                .sum::<f64>()
        };
        let want_base = sum_sq(&b.views[2], &b.views[3]);
        assert!((base.sum - want_base).abs() < 1e-4 * want_base);
        let pred = m.predict(&b.views[..3], false).unwrap();
        let want = sum_sq(&pred, &b.views[3]);
        assert!(
            (tally.sum - want).abs() < 1e-4 * want,
            "{} vs {want}",
            tally.sum
        );
        assert!(m.pretext_eval(&batch(2, 3, 3, 32)).is_err());
    }

    #[test]
    fn artefact_grid_has_three_rows_of_the_last_batch() {
        let mut m = build(shape(1, 16, 8), 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        m.write_artifacts(dir.path(), 0).unwrap();
        assert!(
            !dir.path().join(PREDICTIONS_FILE).exists(),
            "nothing seen yet"
        );
        let b = batch(10, 4, 1, 16);
        m.loss(&b).unwrap();
        m.write_artifacts(dir.path(), 1).unwrap();
        // The PNG header's IHDR chunk holds the width and height (big-endian).
        let png = std::fs::read(dir.path().join(PREDICTIONS_FILE)).unwrap();
        let dim = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
        let gap = selfsup_data::image_grid::GRID_GAP as u32;
        assert_eq!(
            (dim(16), dim(20)),
            (gap + 8 * (16 + gap), gap + 3 * (16 + gap))
        );
    }

    #[test]
    fn bad_data_name_the_setting() {
        let e = build(shape(1, 28, 4), 4).err().unwrap().to_string();
        assert!(e.contains("predictive.context-frames"), "{e}");
        let e = build(shape(1, 28, 1), 3).err().unwrap().to_string();
        assert!(e.contains("dataset"), "{e}");
        build(shape(1, 28, 4), 3).unwrap();
    }
}
