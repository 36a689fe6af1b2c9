//! The geometry of a 2-D convolution, shared by every kernel.

use candle_core::{bail, Result};

/// The geometry of a 2-D convolution: input size, kernel, stride and padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) stride: usize,
    pub(crate) padding: usize,
    pub(crate) ho: usize,
    pub(crate) wo: usize,
}

impl ConvGeometry {
    /// Describes a convolution of an `(n, c, h, w)` input with a `(kh, kw)`
    /// kernel, the same `stride` and zero `padding` on both spatial axes.
    ///
    /// # Errors
    ///
    /// Fails when `stride` is zero, the kernel is empty or the padded input
    /// is smaller than the kernel.
    pub fn new(
        (n, c, h, w): (usize, usize, usize, usize),
        (kh, kw): (usize, usize),
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        if stride == 0 || kh == 0 || kw == 0 {
            bail!("conv geometry: stride {stride} and kernel {kh}x{kw} must be positive")
        }
        if h + 2 * padding < kh || w + 2 * padding < kw {
            bail!("conv geometry: input {h}x{w} with padding {padding} is smaller than kernel {kh}x{kw}")
        }
        let ho = (h + 2 * padding - kh) / stride + 1;
        let wo = (w + 2 * padding - kw) / stride + 1;
        Ok(Self {
            n,
            c,
            h,
            w,
            kh,
            kw,
            stride,
            padding,
            ho,
            wo,
        })
    }

    /// The output's spatial size `(Ho, Wo)`.
    pub fn output_hw(&self) -> (usize, usize) {
        (self.ho, self.wo)
    }

    /// The column matrix's shape `(C * kh * kw, N * Ho * Wo)`.
    pub fn cols_shape(&self) -> (usize, usize) {
        (self.c * self.kh * self.kw, self.n * self.ho * self.wo)
    }

    /// The input's shape `(N, C, H, W)`.
    pub fn input_shape(&self) -> (usize, usize, usize, usize) {
        (self.n, self.c, self.h, self.w)
    }

    /// Rows of the column matrix, `C * kh * kw` (the gemm's inner size).
    pub(crate) fn patch_len(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output pixels per sample and channel, `Ho * Wo`.
    pub(crate) fn out_plane(&self) -> usize {
        self.ho * self.wo
    }

    /// Input values per sample, `C * H * W`.
    pub(crate) fn in_sample(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Output positions `o` in `0..out_len` whose input index
    /// `o * stride + tap - padding` lies in `0..in_len`, as a range.
    pub(crate) fn valid(
        &self,
        out_len: usize,
        in_len: usize,
        tap: usize,
    ) -> std::ops::Range<usize> {
        let s = self.stride;
        let lo = self.padding.saturating_sub(tap).div_ceil(s).min(out_len);
        let hi = (in_len + self.padding)
            .saturating_sub(tap)
            .div_ceil(s)
            .clamp(lo, out_len);
        lo..hi
    }

    /// Splits a column-matrix row index into `(channel, tap row, tap column)`.
    pub(crate) fn split_row(&self, r: usize) -> (usize, usize, usize) {
        (
            r / (self.kh * self.kw),
            (r / self.kw) % self.kh,
            r % self.kw,
        )
    }
}
