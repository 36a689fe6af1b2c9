//! A plain floating-point image: what augmentations read and write.

/// One image as `f32` values in `[0, 1]`, channel-major (CHW).
///
/// # Shapes
/// `data.len() == channels * height * width`; pixel `(c, y, x)` sits at
/// `data[(c * height + y) * width + x]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    /// Number of channels: 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// CHW pixel values in `[0, 1]`.
    pub data: Vec<f32>,
}

impl Image {
    /// A black image.
    pub fn zeros(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
            data: vec![0.0; channels * height * width],
        }
    }

    /// Converts CHW `u8` pixels to `[0, 1]` floats.
    ///
    /// # Panics
    /// If `pixels.len() != channels * height * width` (a programming error).
    pub fn from_u8(channels: usize, height: usize, width: usize, pixels: &[u8]) -> Self {
        assert_eq!(
            pixels.len(),
            channels * height * width,
            "pixel count does not match {channels}x{height}x{width}"
        );
        Self {
            channels,
            height,
            width,
            data: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
        }
    }

    /// Pixels per channel.
    pub fn plane_len(&self) -> usize {
        self.height * self.width
    }

    /// The value at channel `c`, row `y`, column `x`.
    pub fn get(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }

    /// One channel's plane.
    pub fn plane(&self, c: usize) -> &[f32] {
        let n = self.plane_len();
        &self.data[c * n..(c + 1) * n]
    }
}
