//! Contrastive Predictive Coding (van den Oord et al. 2018, "Representation Learning
//! with Contrastive Predictive Coding"; Hénaff et al. 2020, "Data-Efficient Image
//! Recognition with Contrastive Predictive Coding"): every patch of a grid is encoded
//! on its own, a masked-convolution context network reads the rows above, and one
//! linear predictor per step k names the latent k rows below among the other latents
//! of the batch (InfoNCE). On video clips the rows are the frames.
use super::{encoder_kind, DataShape};
use crate::config::TrainConfig;
use crate::method::{Method, PretextMetric, PretextTally, ENCODER_PREFIX};
use crate::{Result, TrainError};
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use selfsup_contrastive::{
    candidate_group, cpc_loss, cpc_top1, CpcHead, CpcHeadConfig, PatchEncoder, PatchGrid,
};
use selfsup_data::augment::hflip_in_place;
use selfsup_data::{Batch, Image, Rng, ViewRecipe};
use selfsup_encoders::Encoder;
use std::sync::Arc;

/// Most images whose latents a prediction is scored against: each prediction's
/// candidates are all `group · rows · cols` latents of its group of images.
pub const MAX_GROUP: usize = 8;

/// Widest context network; narrower encoders use their own width.
pub const MAX_CONTEXT_DIM: usize = 64;

/// Masked-convolution layers of the context network.
pub const CONTEXT_LAYERS: usize = 2;

/// CPC: [`PatchEncoder`] → latent grid `(N, rows, cols, D)` → [`CpcHead`] (context
/// network under `context.`, predictors `W_k` for k = 1..=`predictive.steps`) →
/// [`cpc_loss`] over groups of [`MAX_GROUP`] images. Images give a `grid x grid` grid
/// of half-overlapping patches (`predictive.grid`; 8-pixel patches at stride 4 for 28
/// and 32 pixels with the default 6), all patches of the batch encoded as one batch;
/// clips give one latent per frame, in one column.
///
/// Scores are cosine similarities over `temperature`: the paper's unnormalised
/// `z·W_k c` diverged within five steps under SGD at lr 0.06. Candidates are limited
/// to groups of images because scoring every prediction against every latent of the
/// batch would cost more than the encoder (`9216²` scores at batch 256).
pub struct Cpc {
    encoder: PatchEncoder,
    head: CpcHead,
    views: Arc<CpcViews>,
    clip_len: usize,
    temperature: f64,
}

impl Cpc {
    /// Builds the encoder under `encoder.` and the head under `context.`.
    ///
    /// # Errors
    /// For an unknown encoder, images too small for `predictive.grid`, or
    /// `predictive.steps` not below the rows (grid rows or clip frames).
    pub fn new(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Self> {
        let p = &cfg.predictive;
        let video = data.clip_len > 1;
        let (grid, rows, columns) = if video {
            (PatchGrid::whole(data.size), data.clip_len, 1)
        } else {
            let grid = PatchGrid::half_overlapping(data.size, p.grid)
                .map_err(|e| TrainError::config("predictive.grid", e.to_string()))?;
            (grid, p.grid, 3)
        };
        if p.steps == 0 || p.steps >= rows {
            let what = if video {
                "frames per clip"
            } else {
                "predictive.grid"
            };
            return Err(TrainError::config(
                "predictive.steps",
                format!("must lie in 1..{rows} ({what}), got {}", p.steps),
            ));
        }
        let inner = encoder_kind(cfg)?.build(data.channels, vb.pp(ENCODER_PREFIX))?;
        let probe = Tensor::zeros(
            (1, data.channels, grid.patch, grid.patch),
            DType::F32,
            vb.device(),
        )?;
        if let Err(e) = inner.forward_t(&probe, false) {
            return Err(TrainError::config(
                "predictive.grid",
                format!(
                    "{}-pixel patches are too small for encoder {}: {e}",
                    grid.patch, cfg.encoder
                ),
            ));
        }
        let latent_dim = inner.feature_dim();
        let head = CpcHead::new(
            CpcHeadConfig {
                latent_dim,
                context_dim: latent_dim.min(MAX_CONTEXT_DIM),
                layers: CONTEXT_LAYERS,
                columns,
                steps: p.steps,
            },
            vb.pp("context"),
        )?;
        Ok(Self {
            encoder: PatchEncoder::new(inner, grid),
            head,
            views: Arc::new(CpcViews { hflip_p: 0.5 }),
            clip_len: data.clip_len.max(1),
            temperature: cfg.temperature,
        })
    }

    /// The latent grid of a batch: patches of images, or frames of clips as rows.
    ///
    /// # Shapes
    /// `(N, C, H, W)` to `(N, grid, grid, D)`; clips `(N, C, T·H, W)` to `(N, T, 1, D)`.
    fn latents(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if self.clip_len == 1 {
            return self.encoder.latents(x, train);
        }
        let (n, c, th, w) = x.dims4()?;
        let t = self.clip_len;
        if th % t != 0 {
            candle_core::bail!("cpc: clips of height {th} do not hold {t} frames")
        }
        let frames = x
            .reshape((n, c, t, th / t, w))?
            .permute((0, 2, 1, 3, 4))?
            .reshape((n * t, c, th / t, w))?;
        let z = self.encoder.inner().forward_t(&frames, train)?;
        z.reshape((n, t, 1, ()))
    }

    /// The batch's one view and its latents, predictions and candidate group size.
    fn predict(
        &self,
        batch: &Batch,
        train: bool,
    ) -> candle_core::Result<(Tensor, Vec<Tensor>, usize)> {
        let [x] = batch.views.as_slice() else {
            candle_core::bail!("cpc expects 1 view per image, got {}", batch.views.len())
        };
        let z = self.latents(x, train)?;
        let predictions = self.head.predictions(&z)?;
        let group = candidate_group(z.dim(0)?, MAX_GROUP);
        Ok((z, predictions, group))
    }
}

impl Method for Cpc {
    fn name(&self) -> &'static str {
        "cpc"
    }

    fn views(&self) -> Arc<dyn ViewRecipe> {
        self.views.clone()
    }

    fn loss(&mut self, batch: &Batch) -> candle_core::Result<Tensor> {
        let (z, predictions, group) = self.predict(batch, true)?;
        cpc_loss(&z, &predictions, group, Some(self.temperature))
    }

    fn encoder(&self) -> &dyn Encoder {
        &self.encoder
    }

    fn pretext_metric(&self) -> Option<PretextMetric> {
        Some(PretextMetric::Top1)
    }

    /// Top-1 of every prediction (all steps) among its candidates.
    fn pretext_eval(&self, batch: &Batch) -> candle_core::Result<PretextTally> {
        let (z, predictions, group) = self.predict(batch, false)?;
        let (correct, count) = cpc_top1(&z, &predictions, group, Some(self.temperature))?;
        Ok(PretextTally {
            sum: correct as f64,
            count,
        })
    }
}

/// CPC's views: the image (or the whole clip) itself, mirrored with probability
/// `hflip_p`; the task's difficulty comes from the prediction, not the augmentation.
#[derive(Clone, Copy, Debug)]
pub struct CpcViews {
    /// Probability of a horizontal flip.
    pub hflip_p: f64,
}

impl ViewRecipe for CpcViews {
    fn num_views(&self) -> usize {
        1
    }

    fn views(&self, img: &Image, rng: &mut Rng) -> Vec<Image> {
        let mut v = img.clone();
        if rng.bernoulli(self.hflip_p) {
            hflip_in_place(&mut v);
        }
        vec![v]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::methods::build_method;
    use crate::optim::trainable_params;
    use candle_core::{Device, IndexOp};
    use candle_nn::VarMap;

    fn cfg() -> TrainConfig {
        TrainConfig {
            method: "cpc".into(),
            width: 4,
            batch_size: 4,
            ..TrainConfig::default()
        }
    }

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = Rng::new(seed);
        let v: Vec<f32> = (0..shape.iter().product())
            .map(|_| rng.normal() as f32)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn batch(x: Tensor) -> Batch {
        let n = x.dim(0).unwrap();
        Batch {
            views: vec![x],
            labels: None,
            indices: (0..n).collect(),
            targets: None,
        }
    }

    /// Every trainable variable of a video model gets a finite, non-zero gradient; the
    /// latents are one per frame, and the evaluation encoder pools a frame to one vector.
    #[test]
    fn video_clips_predict_frames_ahead_and_every_variable_learns() {
        let varmap = VarMap::new();
        let mut cfg = cfg();
        cfg.predictive.steps = 3;
        let data = DataShape {
            channels: 1,
            size: 16,
            images: 8,
            clip_len: 5,
            ..DataShape::default()
        };
        let mut m = build_method(&cfg, data, &varmap, &Device::Cpu).unwrap();
        let clips = random(&[4, 1, 5 * 16, 16], 1);
        let loss = m.loss(&batch(clips.clone())).unwrap();
        let grads = loss.backward().unwrap();
        let params = trainable_params(&varmap, &[]);
        assert!(params.iter().any(|p| p.name.starts_with("context.")));
        for p in &params {
            let g = grads
                .get(p.var.as_tensor())
                .unwrap_or_else(|| panic!("{}", p.name));
            let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(
                g.iter().all(|v| v.is_finite()) && g.iter().any(|v| *v != 0.0),
                "{}",
                p.name
            );
        }
        let frame2 = clips.i((.., .., 32..48, ..)).unwrap();
        let map = m.encoder().forward_map(&frame2, false).unwrap();
        assert_eq!(map.dims(), &[4, 32, 1, 1]);
        let tally = m.pretext_eval(&batch(clips)).unwrap();
        // Steps 1, 2, 3 over 5 frames: 4 + 3 + 2 predictions per clip.
        assert_eq!(tally.count, 4 * 9);
        cfg.predictive.steps = 5;
        let err = build_method(&cfg, data, &VarMap::new(), &Device::Cpu)
            .err()
            .unwrap();
        assert!(err.to_string().contains("predictive.steps"), "{err}");
    }

    #[test]
    fn images_give_a_grid_of_patch_latents_and_the_export_is_the_encoder() {
        let varmap = VarMap::new();
        let data = DataShape::default();
        let m = build_method(&cfg(), data, &varmap, &Device::Cpu).unwrap();
        let x = random(&[4, 1, 28, 28], 2);
        assert_eq!(
            m.encoder().forward_map(&x, false).unwrap().dims(),
            &[4, 32, 6, 6]
        );
        assert_eq!(m.encoder().forward_t(&x, false).unwrap().dims(), &[4, 32]);
        let tally = m.pretext_eval(&batch(x)).unwrap();
        assert_eq!(tally.count, 4 * 6 * (5 + 4));
        // The wrapper adds no variables: the exported tensors are the small-cnn's.
        let exported = crate::export::encoder_tensors(&varmap, 1).unwrap();
        assert!(exported
            .keys()
            .all(|k| k.starts_with("conv") || k.starts_with("bn")));
        assert_eq!(exported.len(), 4 * 6);
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let mut cfg = cfg();
        cfg.predictive.grid = 30;
        cfg.predictive.steps = 2;
        let data = DataShape::default();
        let err = build_method(&cfg, data, &VarMap::new(), &Device::Cpu)
            .err()
            .unwrap();
        assert!(err.to_string().contains("predictive.grid"), "{err}");
        cfg.predictive.grid = 3;
        cfg.predictive.steps = 3;
        let err = build_method(&cfg, data, &VarMap::new(), &Device::Cpu)
            .err()
            .unwrap();
        assert!(err.to_string().contains("predictive.steps"), "{err}");
    }
}
