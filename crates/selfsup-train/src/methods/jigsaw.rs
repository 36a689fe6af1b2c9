//! Jigsaw (Noroozi & Favaro 2016, "Unsupervised Learning of Visual Representations
//! by Solving Jigsaw Puzzles"): the tiles of an image, shuffled by one of `P`
//! permutations, go through the shared encoder; their features, concatenated in view
//! order, feed an MLP that names the permutation.
use super::classification::{batch_targets, ClassificationTask};
use super::{encoder_kind, DataShape};
use crate::checkpoint::write_atomic;
use crate::config::TrainConfig;
use crate::method::ENCODER_PREFIX;
use crate::{Result, TrainError};
use candle_core::{DType, Tensor};
use candle_nn::{Module, VarBuilder};
use selfsup_data::pretext::{JigsawTiles, JigsawViews, PatchGrid, PermutationSet};
use selfsup_data::{Batch, ColorJitter, DataError, ViewRecipe};
use selfsup_encoders::Encoder;
use selfsup_pretext::{classify, concat_views, Classified, MlpHead};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Hidden width of the classifier over the concatenated tile features (the paper's
/// fc7 has 4096 units over 9 x 512 features; ours sees 9 x 256 with the default small-cnn).
pub const HEAD_HIDDEN: usize = 1024;
/// Probability that an RGB tile is turned into grayscale, against chromatic aberration.
pub const GRAYSCALE_P: f64 = 0.3;
/// File in the run folder that holds the permutation set.
pub const PERMUTATIONS_FILE: &str = "permutations.json";
/// Name of the permutation set in the method's checkpoint state: a `(P, tiles)` `u32` tensor.
pub const PERMUTATIONS_STATE: &str = "jigsaw.permutations";

/// Jigsaw: `grid²` tiles → encoder (one batch of `N * grid²`) → features concatenated
/// in view order → [`MlpHead`] → `P`-way cross-entropy against the permutation index.
///
/// The permutation set is built from `cfg.seed` and `cfg.pretext.permutations` and
/// written to [`PERMUTATIONS_FILE`]. Checkpoints carry it too
/// ([`PERMUTATIONS_STATE`]); since a resumed run rebuilds the same set from its saved
/// settings, [`Method::load_state`] only checks that the two agree.
pub struct Jigsaw {
    encoder: Box<dyn Encoder>,
    head: MlpHead,
    views: Arc<JigsawViews>,
    permutations: Tensor,
}

impl Jigsaw {
    /// Builds the encoder under `encoder.`, the classifier under `head.`, the
    /// permutation set and the tiles for `data.size x data.size` images. Tiles are
    /// `cfg.pretext.patch_size` pixels, or with 0 [`JigsawTiles::default_tile_size`]
    /// (twice the natural tile: 14x14 on 28x28 images).
    ///
    /// # Errors
    /// For an unknown encoder, images too small for the grid, or more permutations
    /// than the grid's tiles allow.
    pub fn new(cfg: &TrainConfig, data: DataShape, vb: VarBuilder) -> Result<Self> {
        let tiles = jigsaw_tiles(cfg, data)?;
        let set = PermutationSet::new(tiles.count(), cfg.pretext.permutations, cfg.seed)
            .map_err(in_pretext)?;
        let views = JigsawViews {
            tiles,
            permutations: Arc::new(set),
        };
        views.validate()?;
        let encoder = encoder_kind(cfg)?.build(data.channels, vb.pp(ENCODER_PREFIX))?;
        let head = MlpHead::new(
            views.num_views() * encoder.feature_dim(),
            HEAD_HIDDEN,
            views.permutations.len(),
            vb.pp("head"),
        )?;
        let set = &views.permutations;
        let permutations = Tensor::from_vec(set.to_u32(), (set.len(), set.tiles()), vb.device())?;
        Ok(Self {
            encoder,
            head,
            views: Arc::new(views),
            permutations,
        })
    }

    /// The permutation set the labels index.
    pub fn permutations(&self) -> &PermutationSet {
        &self.views.permutations
    }

    /// Permutation logits of a batch of puzzles.
    ///
    /// # Shapes
    /// `grid²` views of `(N, C, t, t)` to `(N, P)`.
    fn logits(&self, views: &[Tensor], train: bool) -> candle_core::Result<Tensor> {
        let tiles = self.views.num_views();
        if views.len() != tiles {
            candle_core::bail!(
                "jigsaw expects {tiles} views per image, got {}",
                views.len()
            )
        }
        // One encoder pass over all N * tiles tiles, view-major.
        let features = self.encoder.forward_t(&Tensor::cat(views, 0)?, train)?;
        self.head.forward(&concat_views(&features, tiles)?)
    }
}

/// The tiles of `cfg.pretext`'s grid for `data.size x data.size` images, at
/// `cfg.pretext.patch_size` pixels or with 0 [`JigsawTiles::default_tile_size`], with
/// `cfg`'s colour jitter and [`GRAYSCALE_P`] on RGB tiles (jigsaw and PIRL).
pub(super) fn jigsaw_tiles(cfg: &TrainConfig, data: DataShape) -> Result<JigsawTiles> {
    let p = &cfg.pretext;
    let grid = PatchGrid::new(data.size, data.size, p.grid, p.gap, p.jitter).map_err(in_pretext)?;
    let tile_size = match p.patch_size {
        0 => JigsawTiles::default_tile_size(&grid),
        side => side,
    };
    let mut tiles = JigsawTiles::new(grid, tile_size);
    tiles.color_jitter = ColorJitter::new(
        cfg.jitter,
        cfg.jitter,
        cfg.jitter,
        (cfg.jitter * 0.25).min(0.5),
    );
    tiles.color_jitter_p = cfg.jitter_p;
    tiles.grayscale_p = GRAYSCALE_P;
    Ok(tiles)
}

/// Names a data-side setting error after its `[pretext]` setting.
fn in_pretext(e: DataError) -> TrainError {
    match e {
        DataError::Config { setting, msg } => {
            TrainError::config(&format!("pretext.{setting}"), msg)
        }
        other => other.into(),
    }
}

impl ClassificationTask for Jigsaw {
    const NAME: &'static str = "jigsaw";

    fn recipe(&self) -> Arc<dyn ViewRecipe> {
        self.views.clone()
    }

    fn backbone(&self) -> &dyn Encoder {
        self.encoder.as_ref()
    }

    fn classified(&self, batch: &Batch, train: bool) -> candle_core::Result<Classified> {
        classify(
            &self.logits(&batch.views, train)?,
            batch_targets(batch, Self::NAME)?,
        )
    }

    fn artifacts(&self, run_dir: &Path, _step: usize) -> Result<()> {
        let json = serde_json::to_string_pretty(self.permutations())
            .map_err(|e| TrainError::config("pretext.permutations", e.to_string()))?;
        write_atomic(&run_dir.join(PERMUTATIONS_FILE), json.as_bytes())
    }

    fn task_state(&self) -> Vec<(String, Tensor)> {
        vec![(PERMUTATIONS_STATE.into(), self.permutations.clone())]
    }

    fn load_task_state(&mut self, state: &HashMap<String, Tensor>) -> candle_core::Result<()> {
        let Some(saved) = state.get(PERMUTATIONS_STATE) else {
            candle_core::bail!(
                "the checkpoint has no {PERMUTATIONS_STATE}; was it written by a jigsaw run?"
            )
        };
        let same = saved.dims() == self.permutations.dims()
            && saved
                .to_dtype(DType::U32)?
                .flatten_all()?
                .to_vec1::<u32>()?
                == self.permutations().to_u32();
        if !same {
            candle_core::bail!(
                "the checkpoint's permutation set differs from the one built from seed {} \
                 with {} permutations",
                self.permutations().seed(),
                self.permutations().len()
            )
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::method::{Method, PretextMetric, PretextTally};
    use candle_core::Device;
    use candle_nn::VarMap;

    fn cpu() -> Device {
        Device::Cpu
    }
    use selfsup_encoders::seeded_var_builder;

    fn build(size: usize, permutations: usize) -> Result<Jigsaw> {
        let mut cfg = TrainConfig {
            method: "jigsaw".into(),
            width: 4,
            ..Default::default()
        };
        cfg.pretext.permutations = permutations;
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 1, DType::F32, &cpu());
        Jigsaw::new(
            &cfg,
            DataShape {
                channels: 1,
                size,
                images: 1,
                clip_len: 1,
                ..DataShape::default()
            },
            vb,
        )
    }

    #[test]
    fn pretext_eval_counts_the_rows_whose_argmax_is_the_target() {
        let m = build(28, 10).unwrap();
        let n = 5;
        let views: Vec<Tensor> = (0..9)
            .map(|_| Tensor::randn(0f32, 1.0, (n, 1, 14, 14), &cpu()).unwrap())
            .collect();
        let predicted = m
            .logits(&views, false)
            .unwrap()
            .argmax(1)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        // Rows 0 and 3 get their predicted class as target, the others a wrong one.
        let targets: Vec<u32> = predicted
            .iter()
            .enumerate()
            .map(|(i, &p)| if i == 0 || i == 3 { p } else { (p + 1) % 10 })
            .collect();
        let batch = Batch {
            views,
            labels: None,
            indices: (0..n).collect(),
            targets: Some(Tensor::from_vec(targets, (n, 1), &cpu()).unwrap()),
        };
        let tally = m.pretext_eval(&batch).unwrap();
        assert_eq!(tally, PretextTally { sum: 2.0, count: n });
        assert_eq!(m.pretext_eval(&batch).unwrap(), tally, "eval changed state");
        assert_eq!(m.pretext_metric(), Some(PretextMetric::Top1));
    }

    #[test]
    fn permutation_set_is_saved_with_the_run_and_checked_on_resume() {
        let mut m = build(28, 10).unwrap();
        let dir = tempfile::tempdir().unwrap();
        m.write_artifacts(dir.path(), 0).unwrap();
        let text = std::fs::read_to_string(dir.path().join(PERMUTATIONS_FILE)).unwrap();
        let saved: PermutationSet = serde_json::from_str(&text).unwrap();
        assert_eq!(&saved, m.permutations());
        let state: HashMap<String, Tensor> = m.state().into_iter().collect();
        assert_eq!(state[PERMUTATIONS_STATE].dims(), &[10, 9]);
        m.load_state(&state).unwrap();
        let other: HashMap<String, Tensor> = build(28, 11).unwrap().state().into_iter().collect();
        let e = m.load_state(&other).unwrap_err().to_string();
        assert!(e.contains("permutation set differs"), "{e}");
        assert!(m.load_state(&HashMap::new()).is_err());
        let tampered = text.replace("\"min_hamming_distance\": ", "\"min_hamming_distance\": 1");
        assert!(serde_json::from_str::<PermutationSet>(&tampered).is_err());
    }

    #[test]
    fn small_images_and_large_sets_are_clear_errors() {
        let e = build(9, 10).err().unwrap().to_string();
        assert!(e.contains("pretext.grid") && e.contains("9x9"), "{e}");
        let e = build(28, 400_000).err().unwrap().to_string();
        assert!(
            e.contains("pretext.permutations") && e.contains("362880"),
            "{e}"
        );
    }
}
