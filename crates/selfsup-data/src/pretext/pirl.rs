//! The views of PIRL (Misra & van der Maaten 2020, "Self-Supervised Learning of
//! Pretext-Invariant Representations"): an augmented image and its jigsaw-transformed
//! counterpart.
use super::jigsaw::JigsawTiles;
use crate::error::Result;
use crate::image::Image;
use crate::rng::Rng;
use crate::views::{SimclrViews, ViewRecipe};

/// View 0 is one [`SimclrViews::view`] of the image; views `1..=grid²` are its jigsaw
/// tiles in a uniformly random order (PIRL draws a fresh permutation per image and
/// needs no label for it).
#[derive(Clone, Debug)]
pub struct PirlViews {
    /// Augmentation of the image branch (its `count` is ignored: one view).
    pub image: SimclrViews,
    /// How the tiles of the jigsaw branch are cut.
    pub tiles: JigsawTiles,
    /// Cut the tiles from a second, independently augmented view of the image (as
    /// PIRL's data pipeline augments the image before the jigsaw transform) instead
    /// of from the image itself.
    pub tiles_from_view: bool,
}

impl ViewRecipe for PirlViews {
    fn num_views(&self) -> usize {
        1 + self.tiles.count()
    }

    fn views(&self, img: &Image, rng: &mut Rng) -> Vec<Image> {
        let mut scratch = Vec::new();
        let mut views = vec![self.image.view(img, rng, &mut scratch)];
        let second;
        let source = if self.tiles_from_view {
            second = self.image.view(img, rng, &mut scratch);
            &second
        } else {
            img
        };
        let order = rng.permutation(self.tiles.count());
        views.extend(
            order
                .into_iter()
                .map(|cell| self.tiles.tile(source, cell, rng)),
        );
        views
    }

    fn validate(&self) -> Result<()> {
        self.image.validate()?;
        self.tiles.validate()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::pretext::PatchGrid;

    #[test]
    fn image_view_then_shuffled_tiles() {
        let mut tiles = JigsawTiles::new(PatchGrid::new(27, 27, 3, 0.0, 0.0).unwrap(), 0);
        tiles.normalize = false;
        let recipe = PirlViews {
            image: SimclrViews::for_size(28),
            tiles,
            tiles_from_view: false,
        };
        recipe.validate().unwrap();
        // Pixel (y, x) holds the index of its 3x3 cell, so each tile names its cell.
        let img = Image {
            channels: 1,
            height: 27,
            width: 27,
            data: (0..27 * 27)
                .map(|p| ((p / 27 / 9) * 3 + p % 27 / 9) as f32)
                .collect(),
        };
        let mut orders = std::collections::HashSet::new();
        for seed in 0..8 {
            let views = recipe.views(&img, &mut Rng::new(seed));
            assert_eq!(views.len(), 10);
            assert_eq!((views[0].height, views[0].width), (28, 28));
            let mut cells: Vec<usize> = views[1..].iter().map(|t| t.data[0] as usize).collect();
            orders.insert(cells.clone());
            cells.sort_unstable();
            assert_eq!(cells, (0..9).collect::<Vec<_>>(), "every cell exactly once");
        }
        assert!(orders.len() > 1, "tile order must vary between images");
    }

    #[test]
    fn tiles_from_a_second_view_are_augmented_like_the_image() {
        let tiles = JigsawTiles::new(PatchGrid::new(28, 28, 3, 0.25, 0.0).unwrap(), 14);
        let img = Image {
            channels: 1,
            height: 28,
            width: 28,
            data: (0..28 * 28).map(|p| (p % 28) as f32 / 27.0).collect(),
        };
        let raw = PirlViews {
            image: SimclrViews::for_size(28),
            tiles,
            tiles_from_view: false,
        };
        let augmented = PirlViews {
            tiles_from_view: true,
            ..raw.clone()
        };
        let (mut differ, mut flipped) = (0, 0);
        for seed in 0..16 {
            let a = raw.views(&img, &mut Rng::new(seed));
            let b = augmented.views(&img, &mut Rng::new(seed));
            assert_eq!(b.len(), 10);
            assert!(b[1..].iter().all(|t| (t.height, t.width) == (14, 14)));
            differ += usize::from(a[1..] != b[1..]);
            // A flipped source reverses the horizontal ramp inside a tile.
            let row = &b[1].data[7 * 14..8 * 14];
            flipped += usize::from(row[0] > row[13]);
        }
        assert_eq!(differ, 16, "tiles must come from the augmented view");
        assert!(
            flipped > 0 && flipped < 16,
            "some sources flipped, some not: {flipped}"
        );
    }
}
