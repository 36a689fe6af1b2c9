//! Inpainting (Pathak et al. 2016, "Context Encoders: Feature Learning by
//! Inpainting"): hide part of the image, encode the rest, decode the whole image
//! and score the hidden region, with a higher weight on its overlap border.
use super::side::{SideNet, GAN_BETAS};
use super::{encoder_kind, DataShape};
use crate::config::{MaskKind, TrainConfig};
use crate::method::{Method, PretextMetric, PretextTally, ENCODER_PREFIX};
use crate::{Result, TrainError};
use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, VarBuilder};
use selfsup_data::pretext::{
    border_width, rasterize_mask, InpaintingViews, MaskBox, MaskLayout, DEFAULT_BLOCKS,
};
use selfsup_data::{Batch, DataError, Image, ViewRecipe};
use selfsup_dist::Communicator;
use selfsup_encoders::Encoder;
use selfsup_generative::{discriminator_loss, generator_loss, Decoder, Discriminator};
use selfsup_pretext::{inpainting_loss, masked_squared_error};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Images of the last training batch shown in the artefact grid.
const SHOWN: usize = 8;
/// The artefact grid, overwritten at every checkpoint.
pub const GRID_FILE: &str = "inpainting.png";
/// Learning rate of the discriminator (DCGAN's, as the context encoder uses).
const ADVERSARY_LR: f64 = 2e-4;

/// Context encoder: the hidden squares of the normalised view are set to 0 (the
/// dataset mean), the encoder's pooled features go through a [`Decoder`], and the
/// loss is [`inpainting_loss`] over the hidden pixels (weight 1) and the visible
/// overlap border around them (weight `pretext.overlap-weight`). With
/// `pretext.adversarial-weight` λ > 0 the loss is `(1 − λ)·L_rec + λ·L_adv` (the
/// paper's λ_rec = 0.999, λ_adv = 0.001), `L_adv` coming from a [`Discriminator`]
/// on the filled-in images that is trained after each step, outside the run's
/// optimizer.
pub struct Inpainting {
    encoder: Box<dyn Encoder>,
    decoder: Decoder,
    views: Arc<InpaintingViews>,
    border: usize,
    overlap_weight: f64,
    device: Device,
    adversary: Option<Adversary>,
    /// Host copies of the first views and targets of the last training batch.
    shown: Option<(Tensor, Tensor)>,
}

/// The discriminator and the batch it learns from next.
struct Adversary {
    weight: f64,
    side: SideNet<Discriminator>,
    /// Real and (detached) filled-in images of the last training batch.
    pending: Option<(Tensor, Tensor)>,
}

impl Adversary {
    fn new(cfg: &TrainConfig, channels: usize, device: &Device) -> Result<Self> {
        let side = SideNet::new("adversary", cfg.seed, device, GAN_BETAS, |vb| {
            Discriminator::new(channels, cfg.width, vb.pp("discriminator"))
        })?;
        Ok(Self {
            weight: cfg.pretext.adversarial_weight,
            side,
            pending: None,
        })
    }
}

/// A recipe error, renamed to the `[pretext]` setting it comes from.
fn pretext_setting(e: DataError) -> TrainError {
    match e {
        DataError::Config { setting, msg } => {
            TrainError::config(&format!("pretext.{setting}"), msg)
        }
        other => other.into(),
    }
}

impl Inpainting {
    /// Builds the encoder under `encoder.` and the decoder under `decoder.`; the
    /// mask geometry follows from `cfg.pretext` and the image size.
    ///
    /// # Errors
    /// For an unknown encoder, or images too small for the mask (a clear
    /// `pretext.mask-size` error).
    pub fn new(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Self> {
        let p = &cfg.pretext;
        let layout = match p.mask {
            MaskKind::Center => MaskLayout::Center,
            MaskKind::Blocks => MaskLayout::Blocks(DEFAULT_BLOCKS),
        };
        let views =
            InpaintingViews::new(data.size, layout, p.mask_size).map_err(pretext_setting)?;
        let encoder = encoder_kind(cfg)?.build(data.channels, vb.pp(ENCODER_PREFIX))?;
        let decoder = Decoder::new(
            encoder.feature_dim(),
            data.channels,
            data.size,
            cfg.width,
            vb.pp("decoder"),
        )?;
        let adversary = if p.adversarial_weight > 0.0 {
            Some(Adversary::new(cfg, data.channels, vb.device())?)
        } else {
            None
        };
        Ok(Self {
            encoder,
            decoder,
            views: Arc::new(views),
            border: border_width(p.overlap, data.size),
            overlap_weight: p.overlap_weight,
            device: vb.device().clone(),
            adversary,
            shown: None,
        })
    }

    /// The hidden pixels and the overlap border of each image, from its targets.
    ///
    /// # Shapes
    /// `targets` `(N, 4K)` to two `(N, 1, size, size)` planes of 0/1.
    fn planes(&self, targets: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let side = self.views.size;
        let (mut mask, mut border) = (Vec::new(), Vec::new());
        let rows = targets.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        for row in &rows {
            let planes = rasterize_mask(&MaskBox::from_targets(row), side, side, self.border);
            mask.extend(planes.mask);
            border.extend(planes.border);
        }
        let shape = (rows.len(), 1, side, side);
        Ok((
            Tensor::from_vec(mask, shape, &self.device)?,
            Tensor::from_vec(border, shape, &self.device)?,
        ))
    }

    /// The view and its targets, checked.
    fn inputs(batch: &Batch) -> candle_core::Result<(&Tensor, &Tensor)> {
        let [view] = batch.views.as_slice() else {
            candle_core::bail!(
                "inpainting expects 1 view per image, got {}",
                batch.views.len()
            )
        };
        let Some(targets) = batch.targets.as_ref() else {
            candle_core::bail!("inpainting expects the mask boxes as targets, got none")
        };
        Ok((view, targets))
    }

    /// The decoder's reconstruction of `view` from its visible pixels.
    ///
    /// # Shapes
    /// `view` `(N, C, H, W)`, `mask` `(N, 1, H, W)`; the result is `(N, C, H, W)`.
    fn reconstruct(
        &self,
        view: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let visible = view.broadcast_mul(&mask.affine(-1.0, 1.0)?)?;
        let features = self.encoder.forward_t(&visible, train)?;
        self.decoder.forward_t(&features, train)
    }
}

/// `view` outside the mask, `pred` inside it.
fn fill(view: &Tensor, pred: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    view.broadcast_mul(&mask.affine(-1.0, 1.0)?)? + pred.broadcast_mul(mask)?
}

/// The images of an `(N, C, H, W)` tensor, each scaled with the `(lo, hi)` of its index.
fn display(t: &Tensor, ranges: &[(f32, f32)]) -> candle_core::Result<Vec<Image>> {
    let (n, c, h, w) = t.dims4()?;
    let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(data
        .chunks_exact(c * h * w)
        .zip(ranges)
        .take(n)
        .map(|(px, &(lo, hi))| Image {
            channels: c,
            height: h,
            width: w,
            data: px.iter().map(|v| (v - lo) / (hi - lo).max(1e-6)).collect(),
        })
        .collect())
}

impl Method for Inpainting {
    fn name(&self) -> &'static str {
        "inpainting"
    }

    /// The losses are means over samples; the adversary's gradients are averaged
    /// like the run's.
    fn join_group(&mut self, comm: Arc<dyn Communicator>) -> std::result::Result<(), String> {
        match self.adversary.as_mut() {
            Some(adv) => adv.side.join_group(comm).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    fn views(&self) -> Arc<dyn ViewRecipe> {
        self.views.clone()
    }

    fn loss(&mut self, batch: &Batch) -> candle_core::Result<Tensor> {
        let (view, targets) = Self::inputs(batch)?;
        let (mask, border) = self.planes(targets)?;
        let pred = self.reconstruct(view, &mask, true)?;
        let rec = inpainting_loss(&pred, view, &mask, &border, self.overlap_weight)?;
        let k = view.dim(0)?.min(SHOWN);
        self.shown = Some((
            view.narrow(0, 0, k)?.to_device(&Device::Cpu)?.copy()?,
            targets.narrow(0, 0, k)?.to_device(&Device::Cpu)?.copy()?,
        ));
        let Some(adv) = self.adversary.as_mut() else {
            return Ok(rec);
        };
        let filled = fill(view, &pred, &mask)?;
        let fooled = generator_loss(&adv.side.net.forward(&filled)?)?;
        adv.pending = Some((view.detach(), filled.detach()));
        (rec * (1.0 - adv.weight))? + (fooled * adv.weight)?
    }

    /// Trains the discriminator on the last batch's real and filled-in images, at
    /// its own fixed learning rate.
    fn side_step(&mut self, _batch: &Batch, _lr: f64) -> candle_core::Result<Option<f32>> {
        let Some(adv) = self.adversary.as_mut() else {
            return Ok(None);
        };
        let Some((real, fake)) = adv.pending.take() else {
            return Ok(None);
        };
        let d = &adv.side.net;
        let loss = discriminator_loss(&d.forward(&real)?, &d.forward(&fake)?)?;
        adv.side.step(&loss, ADVERSARY_LR)
    }

    fn encoder(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    fn pretext_metric(&self) -> Option<PretextMetric> {
        Some(PretextMetric::Mse)
    }

    /// Squared error of the reconstruction over the hidden pixels only (all channels).
    fn pretext_eval(&self, batch: &Batch) -> candle_core::Result<PretextTally> {
        let (view, targets) = Self::inputs(batch)?;
        let (mask, _) = self.planes(targets)?;
        let pred = self.reconstruct(view, &mask, false)?;
        let (sum, count) = masked_squared_error(&pred, view, &mask)?;
        Ok(PretextTally { sum, count })
    }

    /// Overwrites `inpainting.png`: for up to 8 images of the last training batch, rows of
    /// masked input, reconstruction pasted into the hidden squares, and original,
    /// reconstructed by the current model in evaluation mode. Each image is scaled to
    /// the range of its original's normalised values (the hidden squares show the
    /// dataset mean).
    fn write_artifacts(&self, run_dir: &Path, _step: usize) -> Result<()> {
        let Some((views, targets)) = &self.shown else {
            return Ok(());
        };
        let view = views.to_device(&self.device)?;
        let (mask, _) = self.planes(targets)?;
        let pred = self.reconstruct(&view, &mask, false)?;
        let masked = view.broadcast_mul(&mask.affine(-1.0, 1.0)?)?;
        let filled = fill(&view, &pred, &mask)?;
        let (n, ..) = view.dims4()?;
        let flat = view.flatten_from(1)?;
        let lo = flat.min(1)?.to_vec1::<f32>()?;
        let hi = flat.max(1)?.to_vec1::<f32>()?;
        let ranges: Vec<(f32, f32)> = lo.into_iter().zip(hi).take(n).collect();
        let rows = [masked, filled, view]
            .iter()
            .map(|t| display(t, &ranges))
            .collect::<candle_core::Result<Vec<_>>>()?;
        selfsup_data::image_grid::write_png_grid(&run_dir.join(GRID_FILE), &rows)?;
        Ok(())
    }

    /// The discriminator's weights and optimizer state, when the adversarial loss is on.
    fn state(&self) -> Vec<(String, Tensor)> {
        self.adversary
            .as_ref()
            .map_or_else(Vec::new, |adv| adv.side.state())
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> candle_core::Result<()> {
        match self.adversary.as_mut() {
            Some(adv) => adv.side.load_state(state),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::PretextConfig;
    use candle_nn::VarMap;
    use selfsup_encoders::seeded_var_builder;

    fn build(pretext: PretextConfig, channels: usize, size: usize) -> Result<Inpainting> {
        let cfg = TrainConfig {
            method: "inpainting".into(),
            width: 4,
            batch_size: 2,
            pretext,
            ..Default::default()
        };
        let vb = seeded_var_builder(&VarMap::new(), 0, DType::F32, &Device::Cpu);
        Inpainting::new(
            &cfg,
            DataShape {
                channels,
                size,
                images: 1,
                clip_len: 1,
                ..DataShape::default()
            },
            vb,
        )
    }

    /// A batch of `n` random views with the given boxes as targets.
    fn batch(n: usize, channels: usize, size: usize, boxes: &[Vec<u32>]) -> Batch {
        let view = Tensor::randn(0f32, 1.0, (n, channels, size, size), &Device::Cpu).unwrap();
        let flat: Vec<u32> = boxes.concat();
        let targets = Tensor::from_vec(flat, (n, boxes[0].len()), &Device::Cpu).unwrap();
        Batch {
            views: vec![view],
            labels: None,
            indices: (0..n).collect(),
            targets: Some(targets),
        }
    }

    #[test]
    fn pretext_eval_counts_exactly_the_hidden_elements() {
        let m = build(PretextConfig::default(), 3, 16).unwrap();
        // Areas 5·4 = 20 and 16·1 = 16, three channels.
        let b = batch(2, 3, 16, &[vec![2, 3, 5, 4], vec![0, 15, 16, 1]]);
        let tally = m.pretext_eval(&b).unwrap();
        assert_eq!(tally.count, (20 + 16) * 3);
        let (mask, _) = m.planes(b.targets.as_ref().unwrap()).unwrap();
        let pred = m.reconstruct(&b.views[0], &mask, false).unwrap();
        let v = pred.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let x = b.views[0].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut want = 0f64;
        for (i, (a, t)) in v.iter().zip(&x).enumerate() {
            let (img, y, col) = (i / (3 * 256), (i / 16) % 16, i % 16);
            let inside = if img == 0 {
                (2..7).contains(&y) && (3..7).contains(&col)
            } else {
                col == 15
            };
            if inside {
                want += f64::from(a - t).powi(2);
            }
        }
        assert!(
            (tally.sum - want).abs() < 1e-3 * want,
            "{} vs {want}",
            tally.sum
        );
    }

    #[test]
    fn hidden_pixels_do_not_reach_the_encoder() {
        let m = build(PretextConfig::default(), 1, 16).unwrap();
        let a = batch(2, 1, 16, &[vec![4, 4, 8, 8], vec![4, 4, 8, 8]]);
        let (mask, _) = m.planes(a.targets.as_ref().unwrap()).unwrap();
        let noise = Tensor::randn(0f32, 1.0, (2, 1, 16, 16), &Device::Cpu).unwrap();
        let changed = (&a.views[0] + noise.broadcast_mul(&mask).unwrap()).unwrap();
        let p1 = m.reconstruct(&a.views[0], &mask, false).unwrap();
        let p2 = m.reconstruct(&changed, &mask, false).unwrap();
        let d = (p1 - p2).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn artefact_grid_has_three_rows_of_the_last_batch() {
        let mut m = build(PretextConfig::default(), 1, 16).unwrap();
        let dir = tempfile::tempdir().unwrap();
        m.write_artifacts(dir.path(), 0).unwrap();
        assert!(!dir.path().join(GRID_FILE).exists(), "nothing seen yet");
        let b = batch(2, 1, 16, &[vec![4, 4, 8, 8], vec![0, 0, 8, 8]]);
        m.loss(&b).unwrap();
        m.write_artifacts(dir.path(), 1).unwrap();
        // The PNG header's IHDR chunk holds the width and height (big-endian).
        let png = std::fs::read(dir.path().join(GRID_FILE)).unwrap();
        let dim = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
        let gap = selfsup_data::image_grid::GRID_GAP as u32;
        assert_eq!(
            (dim(16), dim(20)),
            (gap + 2 * (16 + gap), gap + 3 * (16 + gap))
        );
    }

    #[test]
    fn adversary_trains_outside_the_run_and_round_trips_its_state() {
        let pretext = PretextConfig {
            adversarial_weight: 0.001,
            mask: MaskKind::Blocks,
            mask_size: 0.25,
            ..Default::default()
        };
        let mut m = build(pretext.clone(), 3, 16).unwrap();
        let views = m.views();
        let img = Image::zeros(3, 20, 20);
        let mut rng = selfsup_data::Rng::new(1);
        let boxes: Vec<Vec<u32>> = (0..2)
            .map(|_| views.sample(&img, &mut rng).targets)
            .collect();
        let b = batch(2, 3, 16, &boxes);
        // Copies: the state's tensors share storage with the live variables.
        let snapshot = |m: &Inpainting| -> Vec<(String, Tensor)> {
            m.state()
                .into_iter()
                .map(|(k, t)| (k, t.copy().unwrap()))
                .collect()
        };
        let before = snapshot(&m);
        let loss = m.loss(&b).unwrap();
        assert!(loss.to_scalar::<f32>().unwrap().is_finite());
        m.side_step(&b, 1e-3).unwrap();
        let after = snapshot(&m);
        assert_eq!(before.len(), after.len());
        let differ = |x: &Tensor, y: &Tensor| {
            let d = (x - y).unwrap().abs().unwrap().sum_all().unwrap();
            d.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap() > 0.0
        };
        let moved = before
            .iter()
            .zip(&after)
            .any(|((k, x), (_, y))| k.starts_with("adversary.var.") && differ(x, y));
        assert!(moved, "the discriminator should have been updated");
        let mut fresh = build(pretext, 3, 16).unwrap();
        let saved: HashMap<String, Tensor> = after.into_iter().collect();
        fresh.load_state(&saved).unwrap();
        for (k, t) in fresh.state() {
            assert!(!differ(&t, &saved[&k]), "{k}");
        }
        assert!(fresh.load_state(&HashMap::new()).is_err());
    }

    #[test]
    fn too_small_images_name_the_mask_setting() {
        let e = build(PretextConfig::default(), 1, 3)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("pretext.mask-size"), "{e}");
    }
}
