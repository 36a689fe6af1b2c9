//! CPC's grid of overlapping patches and the encoder that encodes every patch.
use candle_core::{bail, Result, Tensor};
use selfsup_encoders::Encoder;

/// A `grid x grid` grid of square, overlapping patches of an image (Hénaff et al.
/// 2020: a 7x7 grid of 64-pixel patches with stride 32).
///
/// Patch `(i, j)` covers rows `offset + i·stride ..+ patch` and the same columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchGrid {
    /// Patches per side.
    pub grid: usize,
    /// Patch side length, in pixels.
    pub patch: usize,
    /// Distance between neighbouring patches, in pixels.
    pub stride: usize,
    /// Top and left margin of the first patch, in pixels.
    pub offset: usize,
}

impl PatchGrid {
    /// Half-overlapping patches (`patch = 2·stride`) as in Hénaff et al. 2020, with the
    /// largest stride that fits, `size / (grid + 1)`, centred: 28-pixel images with a
    /// 6x6 grid give 8-pixel patches at stride 4 covering the whole image, 32-pixel
    /// images the same patches over the central 28x28.
    ///
    /// # Errors
    /// If `grid` is 0 or `size < grid + 1` (patches would be empty).
    pub fn half_overlapping(size: usize, grid: usize) -> Result<Self> {
        let stride = size / grid.saturating_add(1);
        if grid == 0 || stride == 0 {
            bail!(
                "a {grid}x{grid} grid of half-overlapping patches does not fit {size}-pixel images"
            )
        }
        Ok(Self {
            grid,
            patch: 2 * stride,
            stride,
            offset: (size - (grid + 1) * stride) / 2,
        })
    }

    /// One patch: the whole `size x size` image.
    pub fn whole(size: usize) -> Self {
        Self {
            grid: 1,
            patch: size,
            stride: size,
            offset: 0,
        }
    }

    /// Pixels per side the grid spans.
    pub fn span(&self) -> usize {
        self.offset + self.grid.saturating_sub(1) * self.stride + self.patch
    }

    /// Cuts every image into its patches, image-major then row-major: patch `(i, j)` of
    /// image `n` is row `(n·grid + i)·grid + j`.
    ///
    /// # Shapes
    /// `(N, C, H, W)` to `(N·grid², C, patch, patch)`.
    ///
    /// # Errors
    /// If `x` is not rank 4 or smaller than the grid's span, or the grid is empty.
    pub fn extract(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if self.grid == 0 || self.patch == 0 {
            bail!("a patch grid needs at least one non-empty patch, got {self:?}")
        }
        if h < self.span() || w < self.span() {
            bail!(
                "{h}x{w} images are smaller than the {}-pixel span of the patch grid",
                self.span()
            )
        }
        let (g, p) = (self.grid, self.patch);
        if g == 1 && h == p && w == p {
            return Ok(x.clone());
        }
        let mut patches = Vec::with_capacity(g * g);
        for i in 0..g {
            let rows = x.narrow(2, self.offset + i * self.stride, p)?;
            for j in 0..g {
                patches.push(rows.narrow(3, self.offset + j * self.stride, p)?);
            }
        }
        Tensor::stack(&patches, 1)?.reshape((n * g * g, c, p, p))
    }
}

/// An encoder applied to every patch of a [`PatchGrid`]: its map is the grid of patch
/// latents, and its pooled features (what evaluation reads) are their mean, as in
/// Hénaff et al. 2020's linear evaluation. It adds no variables: the inner encoder's
/// are the ones trained and exported.
pub struct PatchEncoder {
    inner: Box<dyn Encoder>,
    grid: PatchGrid,
}

impl PatchEncoder {
    /// Wraps `inner`, which encodes one patch into one vector (its pooled features).
    pub fn new(inner: Box<dyn Encoder>, grid: PatchGrid) -> Self {
        Self { inner, grid }
    }

    /// The patch encoder.
    pub fn inner(&self) -> &dyn Encoder {
        self.inner.as_ref()
    }

    /// The patch grid.
    pub fn grid(&self) -> PatchGrid {
        self.grid
    }

    /// The latent of every patch, all patches of all images encoded in one batch.
    ///
    /// # Shapes
    /// `(N, C, H, W)` to `(N, grid, grid, D)`.
    ///
    /// # Errors
    /// As [`PatchGrid::extract`] and the inner encoder.
    pub fn latents(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let n = x.dim(0)?;
        let g = self.grid.grid;
        let z = self.inner.forward_t(&self.grid.extract(x)?, train)?;
        z.reshape((n, g, g, self.inner.feature_dim()))
    }
}

impl Encoder for PatchEncoder {
    /// # Shapes
    /// `(N, C, H, W)` to `(N, D, grid, grid)`.
    fn forward_map(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.latents(x, train)?.permute((0, 3, 1, 2))?.contiguous()
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.latents(x, train)?.mean((1, 2))
    }

    fn feature_dim(&self) -> usize {
        self.inner.feature_dim()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use candle_core::{DType, Device, IndexOp};
    use candle_nn::VarMap;
    use selfsup_encoders::{seeded_var_builder, EncoderKind};

    #[test]
    fn grids_for_28_and_32_pixels() {
        let g28 = PatchGrid::half_overlapping(28, 6).unwrap();
        assert_eq!(
            (g28.patch, g28.stride, g28.offset, g28.span()),
            (8, 4, 0, 28)
        );
        let g32 = PatchGrid::half_overlapping(32, 6).unwrap();
        assert_eq!(
            (g32.patch, g32.stride, g32.offset, g32.span()),
            (8, 4, 2, 30)
        );
        assert!(PatchGrid::half_overlapping(6, 6).is_err());
        assert!(PatchGrid::half_overlapping(28, 0).is_err());
        assert_eq!(PatchGrid::whole(28).span(), 28);
    }

    #[test]
    fn patches_are_image_major_then_row_major() {
        let (n, c, s) = (2, 2, 9);
        let x = Tensor::arange(0f32, (n * c * s * s) as f32, &Device::Cpu)
            .unwrap()
            .reshape((n, c, s, s))
            .unwrap();
        let grid = PatchGrid::half_overlapping(s, 3).unwrap();
        assert_eq!((grid.patch, grid.stride, grid.offset), (4, 2, 0));
        let p = grid.extract(&x).unwrap();
        assert_eq!(p.dims(), &[n * 9, c, 4, 4]);
        for b in 0..n {
            for i in 0..3 {
                for j in 0..3 {
                    let want = x
                        .i((b, .., 2 * i..2 * i + 4, 2 * j..2 * j + 4))
                        .unwrap()
                        .flatten_all()
                        .unwrap();
                    let got = p.i((b * 9 + i * 3 + j,)).unwrap().flatten_all().unwrap();
                    assert_eq!(
                        want.to_vec1::<f32>().unwrap(),
                        got.to_vec1::<f32>().unwrap()
                    );
                }
            }
        }
    }

    #[test]
    fn map_is_the_grid_of_patch_latents_and_pooling_their_mean() {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 3, DType::F32, &Device::Cpu);
        let inner = EncoderKind::SmallCnn { width: 4 }.build(1, vb).unwrap();
        let enc = PatchEncoder::new(inner, PatchGrid::half_overlapping(28, 6).unwrap());
        let x = crate::cpc::tests::input(&[2, 1, 28, 28], 9);
        let map = enc.forward_map(&x, false).unwrap();
        assert_eq!(map.dims(), &[2, 32, 6, 6]);
        // Cell (1, 2) of image 1 is the inner encoder's vector of that patch alone.
        let patch = x.i((1..2, .., 4..12, 8..16)).unwrap();
        let alone = enc.inner().forward_t(&patch, false).unwrap().i(0).unwrap();
        let cell = map.i((1, .., 1, 2)).unwrap();
        let diff = (alone - cell).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        let pooled = enc.forward_t(&x, false).unwrap();
        let mean = map.mean((2, 3)).unwrap();
        let diff = (pooled - mean).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        assert_eq!(enc.feature_dim(), 32);
    }
}
