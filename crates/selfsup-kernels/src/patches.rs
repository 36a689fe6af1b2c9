//! One sample's im2col and col2im on raw slices, through a padded,
//! pixel-major copy of the sample.
//!
//! The column block is pixel-major: one row per output pixel, of length
//! `K = kh * kw * C`, ordered `(i, j, c)` (kernel tap row, tap column,
//! channel). Sample `s` of a block owns rows `s * Ho * Wo ..`. In a padded
//! `(Hp, Wp, C)` copy of the sample, the `kw` taps of one kernel row sit at
//! adjacent pixels, so each row of the block is `kh` contiguous runs of
//! `kw * C` values: long copies (and, for col2im, long adds) even when the
//! output planes are only a few pixels wide, as in the last layers of a
//! small CNN. The weights are permuted to the same `(O, kh, kw, C)` order
//! by [`to_pixel_major`].
//!
//! im2col is [`pad_sample`] then [`cols_from_padded`]; col2im is
//! [`padded_from_cols`] then [`unpad_sample`].

use candle_core::{bail, Layout, Result};

use crate::format::MemoryFormat;
use crate::geometry::ConvGeometry;

/// A strided read-only view of a 4-D tensor's data, by `(N, C, H, W)`
/// whatever its memory format.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Image<'a> {
    data: &'a [f32],
    offset: usize,
    /// Strides of N, C, H and W.
    strides: [usize; 4],
}

impl<'a> Image<'a> {
    /// Views `data` through `layout`, which must have the geometry's input
    /// shape in `format`.
    ///
    /// # Errors
    ///
    /// Fails when the shape differs from the geometry's, or the layout
    /// reaches past the end of `data`.
    pub(crate) fn new(
        data: &'a [f32],
        layout: &Layout,
        g: &ConvGeometry,
        format: MemoryFormat,
    ) -> Result<Self> {
        let (n, c, h, w) = g.input_shape();
        let &[s0, s1, s2, s3] = layout.stride() else {
            bail!("conv: expected a 4-D input, got {:?}", layout.dims())
        };
        let want = format.dims((n, c, h, w));
        if layout.dims() != want {
            bail!(
                "conv: input shape {:?} does not match {want:?}",
                layout.dims()
            )
        }
        let [sn, sc, sh, sw] = match format {
            MemoryFormat::Nchw => [s0, s1, s2, s3],
            MemoryFormat::Nhwc => [s0, s3, s1, s2],
        };
        let last = [(n, sn), (c, sc), (h, sh), (w, sw)]
            .iter()
            .try_fold(layout.start_offset(), |acc, &(d, s)| {
                acc.checked_add(d.saturating_sub(1).checked_mul(s)?)
            });
        if n * c * h * w > 0 && last.is_none_or(|i| i >= data.len()) {
            bail!("conv: the input layout reaches past its storage")
        }
        Ok(Self {
            data,
            offset: layout.start_offset(),
            strides: [sn, sc, sh, sw],
        })
    }
}

/// The taps `lo .. hi` of a kernel row that fall inside an image of `len`
/// pixels when the row's first tap is at `first` (negative in the padding).
fn taps_inside(first: isize, kw: usize, len: usize) -> (usize, usize) {
    let lo = (-first).clamp(0, kw as isize) as usize;
    let hi = (len as isize - first).clamp(lo as isize, kw as isize) as usize;
    (lo, hi)
}

/// Adds the im2col rows `cols` of one sample into its `(H, W, C)` image
/// gradient `img` (the taps in the padding dropped): the same as
/// [`padded_from_cols`] then [`unpad_sample`] onto a zeroed `img`, without
/// the padded copy.
pub(crate) fn image_from_cols(cols: &[f32], g: &ConvGeometry, img: &mut [f32]) {
    let (c, run, (s, p)) = (g.c, g.kw * g.c, (g.stride, g.padding as isize));
    if run == 0 || g.wo == 0 {
        return;
    }
    for (pix, row) in cols.chunks_exact(g.kh * run).enumerate() {
        let (oh, ow) = (pix / g.wo, pix % g.wo);
        let x0 = (ow * s) as isize - p;
        let (lo, hi) = taps_inside(x0, g.kw, g.w);
        for (i, src) in row.chunks_exact(run).enumerate() {
            let y = (oh * s + i) as isize - p;
            if y < 0 || y >= g.h as isize || lo == hi {
                continue;
            }
            let to = (y as usize * g.w + (x0 + lo as isize) as usize) * c;
            let dst = &mut img[to..to + (hi - lo) * c];
            dst.iter_mut()
                .zip(&src[lo * c..hi * c])
                .for_each(|(d, v)| *d += v);
        }
    }
}

/// The padded, pixel-major `(Hp, Wp, C)` copy of one sample.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Padded {
    wp: usize,
    hp: usize,
}

impl Padded {
    pub(crate) fn new(g: &ConvGeometry) -> Self {
        Self {
            hp: g.h + 2 * g.padding,
            wp: g.w + 2 * g.padding,
        }
    }

    /// A padded copy of `hp` by `wp` pixels (at least the input plus its
    /// padding; the pixels past it are zeros too).
    pub(crate) fn sized(hp: usize, wp: usize) -> Self {
        Self { hp, wp }
    }

    /// Pixels per row.
    pub(crate) fn wp(&self) -> usize {
        self.wp
    }

    /// Values per sample.
    pub(crate) fn len(&self, g: &ConvGeometry) -> usize {
        self.hp * self.wp * g.c
    }
}

/// Fills `buf` (`pd.len(g)` values) with sample `ni` of `x`, zero-padded,
/// pixel-major.
pub(crate) fn pad_sample(x: &Image<'_>, ni: usize, g: &ConvGeometry, pd: &Padded, buf: &mut [f32]) {
    let [sn, sc, sh, sw] = x.strides;
    let (c, p, line) = (g.c, g.padding, pd.wp * g.c);
    let base = x.offset + ni * sn;
    if line == 0 {
        return;
    }
    for (yp, row) in buf.chunks_exact_mut(line).enumerate() {
        if yp < p || yp >= g.h + p {
            row.fill(0.0);
            continue;
        }
        row[..p * c].fill(0.0);
        row[(g.w + p) * c..].fill(0.0);
        let inner = &mut row[p * c..(g.w + p) * c];
        let y = yp - p;
        if sw == c && (sc == 1 || c == 1) {
            // Channels last (or one channel) with contiguous rows: one copy.
            let src = base + y * sh;
            inner.copy_from_slice(&x.data[src..src + inner.len()]);
        } else if c < 8 {
            // Few channels: one strided write pass per channel.
            for ci in 0..c {
                let src = base + ci * sc + y * sh;
                let dst = inner[ci..].iter_mut().step_by(c);
                dst.enumerate()
                    .for_each(|(xi, d)| *d = x.data[src + xi * sw]);
            }
        } else {
            // Many: fill each pixel's channels in order (contiguous writes).
            for (xi, px) in inner.chunks_exact_mut(c).enumerate() {
                let src = base + y * sh + xi * sw;
                px.iter_mut()
                    .enumerate()
                    .for_each(|(ci, d)| *d = x.data[src + ci * sc]);
            }
        }
    }
}

/// The contiguous runs that make up one sample's im2col rows: for each, its
/// start in the rows (`Ho * Wo` rows of `K` values) and in the padded copy,
/// `kw * C` values long.
fn runs(g: &ConvGeometry, pd: &Padded) -> impl Iterator<Item = (usize, usize)> {
    let (wo, wp, c, s, kh, run) = (g.wo, pd.wp, g.c, g.stride, g.kh, g.kw * g.c);
    (0..g.out_plane()).flat_map(move |pix| {
        let (oh, ow) = (pix / wo, pix % wo);
        (0..kh).map(move |i| ((pix * kh + i) * run, ((oh * s + i) * wp + ow * s) * c))
    })
}

/// Writes the im2col rows of a sample padded into `buf` to `cols`
/// (`Ho * Wo` rows of `K` values).
///
/// The short runs of a first layer (3x3 taps of one or three channels) are
/// copied as fixed-size arrays, a few moves each, instead of a `memcpy` call
/// per run of 3 or 9 values.
pub(crate) fn cols_from_padded(buf: &[f32], g: &ConvGeometry, pd: &Padded, cols: &mut [f32]) {
    match g.kw * g.c {
        3 => copy_runs::<3>(buf, g, pd, cols),
        9 => copy_runs::<9>(buf, g, pd, cols),
        run => {
            for (at, from) in runs(g, pd) {
                cols[at..at + run].copy_from_slice(&buf[from..from + run]);
            }
        }
    }
}

/// [`cols_from_padded`] for runs of `N` values.
fn copy_runs<const N: usize>(buf: &[f32], g: &ConvGeometry, pd: &Padded, cols: &mut [f32]) {
    for (at, from) in runs(g, pd) {
        let src: [f32; N] = std::array::from_fn(|i| buf[from + i]);
        cols[at..at + N].copy_from_slice(&src);
    }
}

/// Adds the im2col rows `cols` of one sample into `buf` (zeroed by the
/// caller): the adjoint of [`cols_from_padded`].
pub(crate) fn padded_from_cols(cols: &[f32], g: &ConvGeometry, pd: &Padded, buf: &mut [f32]) {
    let run = g.kw * g.c;
    for (at, to) in runs(g, pd) {
        let dst = &mut buf[to..to + run];
        dst.iter_mut()
            .zip(&cols[at..at + run])
            .for_each(|(d, v)| *d += v);
    }
}

/// Writes the unpadded pixels of `buf` to one sample's contiguous image
/// `dst`, `(C, H, W)` or `(H, W, C)` by `format`: the adjoint of
/// [`pad_sample`].
pub(crate) fn unpad_sample(
    buf: &[f32],
    g: &ConvGeometry,
    pd: &Padded,
    dst: &mut [f32],
    format: MemoryFormat,
) {
    let (c, p, hw) = (g.c, g.padding, g.h * g.w);
    if hw == 0 {
        return;
    }
    for y in 0..g.h {
        let inner = &buf[((y + p) * pd.wp + p) * c..][..g.w * c];
        if format == MemoryFormat::Nhwc {
            dst[y * g.w * c..][..g.w * c].copy_from_slice(inner);
            continue;
        }
        for (ci, plane) in dst.chunks_exact_mut(hw).enumerate() {
            let line = &mut plane[y * g.w..][..g.w];
            let src = inner[ci..].iter().step_by(c);
            line.iter_mut().zip(src).for_each(|(d, v)| *d = *v);
        }
    }
}

/// Reorders an `(O, C, kh, kw)` kernel to `(O, kh, kw, C)`, the column
/// order of the pixel-major blocks.
pub(crate) fn to_pixel_major(w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    transpose_blocks(w, g.c, g.kh * g.kw)
}

/// Reorders an `(O, kh, kw, C)` kernel back to `(O, C, kh, kw)`: the
/// inverse of [`to_pixel_major`].
pub(crate) fn from_pixel_major(w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    transpose_blocks(w, g.kh * g.kw, g.c)
}

/// Reorders a `(kh, kw, C, O)` kernel, the columns of a pixel-major
/// kernel gradient, to `(O, C, kh, kw)`.
pub(crate) fn from_pixel_major_columns(w: &[f32], g: &ConvGeometry, o: usize) -> Vec<f32> {
    let (c, taps) = (g.c, g.kh * g.kw);
    let mut out = vec![0f32; w.len()];
    for (oi, kernel) in out.chunks_exact_mut(c * taps).enumerate() {
        for (ci, plane) in kernel.chunks_exact_mut(taps).enumerate() {
            for (t, v) in plane.iter_mut().enumerate() {
                *v = w[(t * c + ci) * o + oi];
            }
        }
    }
    out
}

/// Transposes each consecutive `rows x cols` block of `v`.
fn transpose_blocks(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    if rows * cols == 0 {
        return out;
    }
    for (src, dst) in v
        .chunks_exact(rows * cols)
        .zip(out.chunks_exact_mut(rows * cols))
    {
        for (i, line) in src.chunks_exact(cols).enumerate() {
            dst[i..]
                .iter_mut()
                .step_by(rows)
                .zip(line)
                .for_each(|(d, v)| *d = *v);
        }
    }
    out
}
