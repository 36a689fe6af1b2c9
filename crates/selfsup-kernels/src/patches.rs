//! One sample's im2col and col2im on raw slices, into and out of a block of
//! a column matrix, through a padded, phase-split copy of the sample.
//!
//! A *column block* holds the columns of several samples side by side: row
//! `r = (c * kh + i) * kw + j` (one per channel and kernel tap) has length
//! `ld`, and sample `s` of the block owns columns `s * Ho * Wo ..` of every
//! row, one per output pixel.
//!
//! im2col is [`split_sample`] then [`cols_from_phases`]; col2im is
//! [`phases_from_cols`] then [`merge_sample`]. The strided, padded accesses
//! happen once per input pixel in the split and merge; the per-tap work in
//! between is contiguous copies and adds, which matters most for col2im (a
//! strided read-modify-write otherwise).

use candle_core::{bail, Layout, Result};

use crate::geometry::ConvGeometry;

/// A strided read-only view of an `(N, C, H, W)` tensor's data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Image<'a> {
    data: &'a [f32],
    offset: usize,
    /// Strides of N, C, H and W.
    strides: [usize; 4],
}

impl<'a> Image<'a> {
    /// Views `data` through `layout`, which must have the geometry's input
    /// shape.
    ///
    /// # Errors
    ///
    /// Fails when the shape differs from the geometry's, or the layout
    /// reaches past the end of `data`.
    pub(crate) fn new(data: &'a [f32], layout: &Layout, g: &ConvGeometry) -> Result<Self> {
        let (n, c, h, w) = g.input_shape();
        let &[sn, sc, sh, sw] = layout.stride() else {
            bail!("conv: expected a 4-D input, got {:?}", layout.dims())
        };
        if layout.dims() != [n, c, h, w] {
            bail!(
                "conv: input shape {:?} does not match {:?}",
                layout.dims(),
                (n, c, h, w)
            )
        }
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

/// The padded, phase-split copy of one sample that the phased im2col and
/// col2im work on.
///
/// With stride `s`, padded pixel `(y, x)` goes to phase plane
/// `(y % s, x % s)` at `(y / s, x / s)`. Kernel tap `(i, j)` at output pixel
/// `(oh, ow)` reads padded pixel `(oh * s + i, ow * s + j)`: in phase plane
/// `(i % s, j % s)` that is `(oh + i / s, ow + j / s)`, so one output row is
/// one contiguous run of a phase plane, with the padding already in place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phases {
    s: usize,
    /// Phase plane size.
    hq: usize,
    wq: usize,
}

impl Phases {
    pub(crate) fn new(g: &ConvGeometry) -> Self {
        let (s, hp, wp) = (g.stride, g.h + 2 * g.padding, g.w + 2 * g.padding);
        Self {
            s,
            hq: hp.div_ceil(s),
            wq: wp.div_ceil(s),
        }
    }

    /// Values per sample: `C * s * s` phase planes.
    pub(crate) fn len(&self, g: &ConvGeometry) -> usize {
        g.c * self.s * self.s * self.hq * self.wq
    }

    /// Start of phase plane `(a, b)` of channel `ci`.
    fn plane(&self, ci: usize, a: usize, b: usize) -> usize {
        ((ci * self.s + a) * self.s + b) * self.hq * self.wq
    }

    /// First `j` with `b + s * j >= v`.
    fn first(&self, b: usize, v: usize) -> usize {
        v.saturating_sub(b).div_ceil(self.s)
    }
}

/// Fills `buf` (`ph.len(g)` values) with sample `ni` of `x`, padded and
/// phase-split.
pub(crate) fn split_sample(
    x: &Image<'_>,
    ni: usize,
    g: &ConvGeometry,
    ph: &Phases,
    buf: &mut [f32],
) {
    let [sn, sc, sh, sw] = x.strides;
    let (s, p) = (ph.s, g.padding);
    for ci in 0..g.c {
        let base = x.offset + ni * sn + ci * sc;
        for a in 0..s {
            for b in 0..s {
                let plane = &mut buf[ph.plane(ci, a, b)..][..ph.hq * ph.wq];
                let (lo, hi) = (ph.first(b, p).min(ph.wq), ph.first(b, g.w + p).min(ph.wq));
                for (i, row) in plane.chunks_exact_mut(ph.wq).enumerate() {
                    let y = a + s * i;
                    if y < p || y >= g.h + p || lo >= hi {
                        row.fill(0.0);
                        continue;
                    }
                    row[..lo].fill(0.0);
                    row[hi..].fill(0.0);
                    let src = base + (y - p) * sh + (b + s * lo - p) * sw;
                    let dst = &mut row[lo..hi];
                    if s * sw == 1 {
                        dst.copy_from_slice(&x.data[src..src + dst.len()]);
                    } else {
                        let src = &x.data[src..=src + (dst.len() - 1) * s * sw];
                        let src = src.iter().step_by(s * sw);
                        dst.iter_mut().zip(src).for_each(|(d, v)| *d = *v);
                    }
                }
            }
        }
    }
}

/// Writes the columns of a sample split into `buf` to the column block
/// `cols` (row length `ld`) at columns `col0 .. col0 + Ho * Wo`.
pub(crate) fn cols_from_phases(
    buf: &[f32],
    g: &ConvGeometry,
    ph: &Phases,
    cols: &mut [f32],
    ld: usize,
    col0: usize,
) {
    let (s, wo) = (ph.s, g.wo);
    for r in 0..g.patch_len() {
        let (ci, ki, kj) = g.split_row(r);
        let plane = &buf[ph.plane(ci, ki % s, kj % s)..][..ph.hq * ph.wq];
        let row = &mut cols[r * ld + col0..][..g.out_plane()];
        for (oh, seg) in row.chunks_exact_mut(wo).enumerate() {
            seg.copy_from_slice(&plane[(oh + ki / s) * ph.wq + kj / s..][..wo]);
        }
    }
}

/// Adds the column block's columns `col0 ..` into `buf` (zeroed by the
/// caller): the adjoint of [`cols_from_phases`].
pub(crate) fn phases_from_cols(
    cols: &[f32],
    ld: usize,
    col0: usize,
    g: &ConvGeometry,
    ph: &Phases,
    buf: &mut [f32],
) {
    let (s, wo) = (ph.s, g.wo);
    for r in 0..g.patch_len() {
        let (ci, ki, kj) = g.split_row(r);
        let plane = &mut buf[ph.plane(ci, ki % s, kj % s)..][..ph.hq * ph.wq];
        let row = &cols[r * ld + col0..][..g.out_plane()];
        for (oh, seg) in row.chunks_exact(wo).enumerate() {
            let dst = &mut plane[(oh + ki / s) * ph.wq + kj / s..][..wo];
            dst.iter_mut().zip(seg).for_each(|(d, v)| *d += v);
        }
    }
}

/// Writes the unpadded pixels of `buf` to one sample's contiguous
/// `(C, H, W)` image `dst`: the adjoint of [`split_sample`].
pub(crate) fn merge_sample(buf: &[f32], g: &ConvGeometry, ph: &Phases, dst: &mut [f32]) {
    let (s, p, w) = (ph.s, g.padding, g.w);
    for (ci, img) in dst.chunks_exact_mut(g.h * w).enumerate() {
        for (yi, line) in img.chunks_exact_mut(w).enumerate() {
            let y = yi + p;
            for b in 0..s {
                // Pixels x = b + s * j - p of this line, j from `lo`.
                let lo = ph.first(b, p);
                let start = b + s * lo - p;
                if start >= w {
                    continue;
                }
                let plane = &buf[ph.plane(ci, y % s, b) + (y / s) * ph.wq..][..ph.wq];
                if s == 1 {
                    line.copy_from_slice(&plane[lo..lo + w]);
                } else {
                    let d = line[start..].iter_mut().step_by(s);
                    d.zip(&plane[lo..]).for_each(|(d, v)| *d = *v);
                }
            }
        }
    }
}
