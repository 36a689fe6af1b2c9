//! Winograd's minimal filtering F(2x2, 3x3) for 3x3, stride-1
//! convolutions channels last (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", CVPR 2016).
//!
//! The output is cut into 2x2 tiles. Tile `t`, at output `(2ty, 2tx)`,
//! reads the 4x4 input tile `d` at padded `(2ty, 2tx)`, and
//!
//! ```text
//! y_t = Aᵀ [ U ⊙ V_t ] A,   U = G g Gᵀ,   V_t = Bᵀ d_t B,
//! ```
//!
//! so that each of the 16 positions `ξ` of the 4x4 transformed tile is an
//! independent product over channels, `M[ξ] (T, O) = V[ξ] (T, C) @ U[ξ] (C, O)`:
//! 16 products per channel pair and tile instead of 36, 2.25x fewer
//! multiply-adds than the direct convolution.
//!
//! The backward is the adjoint of the same chain. With `Γ_t = A dy_t Aᵀ`
//! (the 4x4 transform of a 2x2 output-gradient tile):
//! - kernel: `dU[ξ] (C, O) = Σ_t V[ξ]ᵀ Γ[ξ]`, then `dg = Gᵀ dU G`;
//! - input: `dV[ξ] (T, C) = Γ[ξ] @ U[ξ]ᵀ`, then `dd_t = B dV_t Bᵀ`, added
//!   into the padded input gradient (neighbouring tiles overlap by two
//!   pixels).
//!
//! The transforms' coefficients are 0, ±1 and ±½, so the results agree with
//! the direct convolution to a few units in the last place of `f32`.
//!
//! Transformed tiles are stored tile-major, `(T, 16, C)`: one tile's 16
//! vectors of `C` values are contiguous, so every transform is a few
//! additions of contiguous runs, and each product reads its `V[ξ]` rows with
//! a stride of `16 C`.

use candle_core::Result;
use rayon::prelude::*;

use crate::conv_kernels::{sized, Plan};
use crate::format::MemoryFormat;
use crate::geometry::ConvGeometry;
use crate::patches::{pad_sample, unpad_sample, Image, Padded};
use crate::profile::scope;
use crate::sgemm::{gemm, Mat};

/// The fewest input channels for which F(2x2, 3x3) pays: with fewer, the
/// products are too thin for the gemm and the transforms dominate (a first
/// layer on an image).
const MIN_CHANNELS: usize = 16;

/// Positions of a transformed 4x4 tile.
const POSITIONS: usize = 16;

/// Whether `plan` runs as F(2x2, 3x3): a 3x3 kernel, stride 1, channels
/// last and at least [`MIN_CHANNELS`] input channels.
pub(crate) fn applies(g: &ConvGeometry, format: MemoryFormat) -> bool {
    format == MemoryFormat::Nhwc
        && (g.kh, g.kw, g.stride) == (3, 3, 1)
        && g.c >= MIN_CHANNELS
        && g.ho * g.wo > 0
}

/// The 2x2 output tiles of one sample.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tiles {
    rows: usize,
    cols: usize,
}

impl Tiles {
    pub(crate) fn of(g: &ConvGeometry) -> Self {
        Self {
            rows: g.ho.div_ceil(2),
            cols: g.wo.div_ceil(2),
        }
    }

    pub(crate) fn per_sample(&self) -> usize {
        self.rows * self.cols
    }

    /// The padded copy of a sample that every tile's 4x4 input lies in:
    /// `2 * rows + 2` by `2 * cols + 2` pixels (at least the input plus its
    /// padding; the rest zeros).
    fn padded(&self) -> Padded {
        Padded::sized(2 * self.rows + 2, 2 * self.cols + 2)
    }

    /// `(tile index within the sample, tile row, tile column)`.
    fn iter(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        (0..self.per_sample()).map(|t| (t, t / self.cols, t % self.cols))
    }
}

/// `[a0, a1, a2, a3]` of equal length: the four quarters of `v`.
fn quarters(v: &[f32]) -> [&[f32]; 4] {
    let q = v.len() / 4;
    std::array::from_fn(|i| &v[i * q..(i + 1) * q])
}

/// The four quarters of `v`, mutably.
fn quarters_mut(v: &mut [f32]) -> [&mut [f32]; 4] {
    let q = v.len() / 4;
    let (a, rest) = v.split_at_mut(q);
    let (b, rest) = rest.split_at_mut(q);
    let (c, d) = rest.split_at_mut(q);
    [a, b, c, &mut d[..q]]
}

/// The two halves of `v`, mutably.
fn halves_mut(v: &mut [f32]) -> [&mut [f32]; 2] {
    let (a, b) = v.split_at_mut(v.len() / 2);
    let q = a.len();
    [a, &mut b[..q]]
}

// The 1-D transforms are never inlined: inlined into the tile loops, one of
// them lost its slices' no-alias guarantees and stayed a scalar loop.

/// `o = Bᵀ a` on runs: `o0 = a0 − a2, o1 = a1 + a2, o2 = a2 − a1, o3 = a1 − a3`.
#[inline(never)]
fn input_1d([o0, o1, o2, o3]: [&mut [f32]; 4], a: [&[f32]; 4]) {
    let n = o0.len();
    let (o1, o2, o3) = (&mut o1[..n], &mut o2[..n], &mut o3[..n]);
    let [a0, a1, a2, a3] = a.map(|a| &a[..n]);
    for k in 0..n {
        o0[k] = a0[k] - a2[k];
        o1[k] = a1[k] + a2[k];
        o2[k] = a2[k] - a1[k];
        o3[k] = a1[k] - a3[k];
    }
}

/// `o += B a` on runs, the adjoint of [`input_1d`]:
/// `o0 += a0, o1 += a1 − a2 + a3, o2 += a1 + a2 − a0, o3 −= a3`.
#[inline(never)]
fn input_1d_adjoint_add([o0, o1, o2, o3]: [&mut [f32]; 4], a: [&[f32]; 4]) {
    let n = o0.len();
    let (o1, o2, o3) = (&mut o1[..n], &mut o2[..n], &mut o3[..n]);
    let [a0, a1, a2, a3] = a.map(|a| &a[..n]);
    for k in 0..n {
        o0[k] += a0[k];
        o1[k] += a1[k] - a2[k] + a3[k];
        o2[k] += a1[k] + a2[k] - a0[k];
        o3[k] -= a3[k];
    }
}

/// `o = Aᵀ a` on runs: `o0 = a0 + a1 + a2, o1 = a1 − a2 − a3`.
#[inline(never)]
fn output_1d([o0, o1]: [&mut [f32]; 2], a: [&[f32]; 4]) {
    let n = o0.len();
    let o1 = &mut o1[..n];
    let [a0, a1, a2, a3] = a.map(|a| &a[..n]);
    for k in 0..n {
        o0[k] = a0[k] + a1[k] + a2[k];
        o1[k] = a1[k] - a2[k] - a3[k];
    }
}

/// `o = A a` on runs, the adjoint of [`output_1d`]:
/// `o0 = a0, o1 = a0 + a1, o2 = a0 − a1, o3 = −a1`.
#[inline(never)]
fn output_1d_adjoint([o0, o1, o2, o3]: [&mut [f32]; 4], [a0, a1]: [&[f32]; 2]) {
    let n = o0.len();
    let (o1, o2, o3) = (&mut o1[..n], &mut o2[..n], &mut o3[..n]);
    let (a0, a1) = (&a0[..n], &a1[..n]);
    for k in 0..n {
        o0[k] = a0[k];
        o1[k] = a0[k] + a1[k];
        o2[k] = a0[k] - a1[k];
        o3[k] = -a1[k];
    }
}

/// `G g Gᵀ` of one 3x3 kernel `g`, row-major: `G` has rows `(1, 0, 0)`,
/// `(½, ½, ½)`, `(½, −½, ½)` and `(0, 0, 1)`.
fn kernel_tile(g: &[f32]) -> [f32; 16] {
    let g1 = |g: [f32; 3]| {
        [
            g[0],
            (g[0] + g[1] + g[2]) / 2.0,
            (g[0] - g[1] + g[2]) / 2.0,
            g[2],
        ]
    };
    let rows: [[f32; 4]; 3] = std::array::from_fn(|i| g1([g[3 * i], g[3 * i + 1], g[3 * i + 2]]));
    let cols: [[f32; 4]; 4] = std::array::from_fn(|j| g1([rows[0][j], rows[1][j], rows[2][j]]));
    std::array::from_fn(|xi| cols[xi % 4][xi / 4])
}

/// `U = G g Gᵀ` of an `(O, C, 3, 3)` kernel, `(C, 16, O)`: position `ξ`
/// is the `(C, O)` matrix of rows `U[(c * 16 + ξ) * O ..]`, the right
/// operand of the forward's products. Parallel over input channels, each
/// written as 16 contiguous runs.
pub(crate) fn kernel_transform(w: &[f32], c: usize, o: usize) -> Vec<f32> {
    let mut u = vec![0f32; kernel_transform_len(c, o)];
    if o > 0 {
        u.par_chunks_mut(POSITIONS * o)
            .enumerate()
            .for_each(|(ci, u)| {
                for oi in 0..o {
                    let tile = kernel_tile(&w[(oi * c + ci) * 9..][..9]);
                    tile.iter()
                        .enumerate()
                        .for_each(|(xi, &v)| u[xi * o + oi] = v);
                }
            });
    }
    u
}

/// [`kernel_transform`] as `(O, 16, C)`: position `ξ` is `U[ξ]ᵀ`, the
/// `(O, C)` matrix of rows `(o * 16 + ξ) * C ..`, the right operand of the
/// input gradient's products (contiguous rows, which the gemm packs faster
/// than the columns of the `(C, 16, O)` form).
pub(crate) fn kernel_transform_transposed(w: &[f32], c: usize, o: usize) -> Vec<f32> {
    let mut u = vec![0f32; kernel_transform_len(c, o)];
    if c > 0 {
        u.par_chunks_mut(POSITIONS * c)
            .enumerate()
            .for_each(|(oi, u)| {
                for ci in 0..c {
                    let tile = kernel_tile(&w[(oi * c + ci) * 9..][..9]);
                    tile.iter()
                        .enumerate()
                        .for_each(|(xi, &v)| u[xi * c + ci] = v);
                }
            });
    }
    u
}

/// Values of [`kernel_transform`]'s output for `c` inputs and `o` outputs.
pub(crate) fn kernel_transform_len(c: usize, o: usize) -> usize {
    POSITIONS * c * o
}

/// `dg = Gᵀ dU G`: the kernel gradient `(O, C, 3, 3)` from the gradient of
/// [`kernel_transform`]'s output (the adjoint of that transform).
pub(crate) fn kernel_transform_adjoint(du: &[f32], c: usize, o: usize) -> Vec<f32> {
    let g1t = |d: [f32; 4]| {
        let (s, t) = ((d[1] + d[2]) / 2.0, (d[1] - d[2]) / 2.0);
        [d[0] + s, t, s + d[3]]
    };
    let mut dw = vec![0f32; o * c * 9];
    if c == 0 {
        return dw;
    }
    dw.par_chunks_mut(c * 9)
        .enumerate()
        .for_each(|(oi, kernel)| {
            for (ci, g) in kernel.chunks_exact_mut(9).enumerate() {
                let at = |i: usize, j: usize| du[(ci * POSITIONS + 4 * i + j) * o + oi];
                let cols: [[f32; 3]; 4] =
                    std::array::from_fn(|j| g1t(std::array::from_fn(|i| at(i, j))));
                for i in 0..3 {
                    let row = g1t(std::array::from_fn(|j| cols[j][i]));
                    g[3 * i..3 * i + 3].copy_from_slice(&row);
                }
            }
        });
    dw
}

/// `V = Bᵀ d B` of every tile of samples `n0 .. n0 + b` of `x` into `v`,
/// `(b * tiles, 16, C)`.
pub(crate) fn transform_input(
    x: &Image<'_>,
    g: &ConvGeometry,
    (n0, b): (usize, usize),
    padded: &mut Vec<f32>,
    v: &mut [f32],
) {
    let (c, tiles) = (g.c, Tiles::of(g));
    let pd = tiles.padded();
    let scratch = sized(padded, pd.len(g));
    let mut rows = vec![0f32; POSITIONS * c];
    let tile_len = POSITIONS * c;
    for (s, out) in v
        .chunks_exact_mut(tiles.per_sample() * tile_len)
        .take(b)
        .enumerate()
    {
        pad_sample(x, n0 + s, g, &pd, scratch);
        for (t, ty, tx) in tiles.iter() {
            let d: [&[f32]; 4] =
                std::array::from_fn(|i| &scratch[((2 * ty + i) * pd.wp() + 2 * tx) * c..][..4 * c]);
            input_1d(quarters_mut(&mut rows), d);
            let tile = &mut out[t * tile_len..][..tile_len];
            for (o, r) in tile.chunks_exact_mut(4 * c).zip(rows.chunks_exact(4 * c)) {
                input_1d(quarters_mut(o), quarters(r));
            }
        }
    }
}

/// Adds `B dV Bᵀ` of every tile of `dv` `(b * tiles, 16, C)` into the input
/// gradient `dx` of `b` samples channels last: the adjoint of
/// [`transform_input`].
fn transform_input_adjoint(dv: &[f32], g: &ConvGeometry, padded: &mut Vec<f32>, dx: &mut [f32]) {
    let (c, tiles) = (g.c, Tiles::of(g));
    let pd = tiles.padded();
    let scratch = sized(padded, pd.len(g));
    let mut rows = vec![0f32; POSITIONS * c];
    let tile_len = POSITIONS * c;
    let samples = dv.chunks_exact(tiles.per_sample() * tile_len);
    for (img, dv) in dx.chunks_exact_mut(g.in_sample()).zip(samples) {
        scratch.fill(0.0);
        for (t, ty, tx) in tiles.iter() {
            rows.fill(0.0);
            input_1d_adjoint_add(
                quarters_mut(&mut rows),
                quarters(&dv[t * tile_len..][..tile_len]),
            );
            for (i, r) in rows.chunks_exact(4 * c).enumerate() {
                let at = ((2 * ty + i) * pd.wp() + 2 * tx) * c;
                input_1d_adjoint_add(quarters_mut(&mut scratch[at..at + 4 * c]), quarters(r));
            }
        }
        unpad_sample(scratch, g, &pd, img, MemoryFormat::Nhwc);
    }
}

/// `y = Aᵀ M A` of every tile of `m` `(b * tiles, 16, O)`, written to the
/// output rows `y` `(b * Ho * Wo, O)` (pixels past the output's edge are
/// dropped).
fn transform_output(m: &[f32], g: &ConvGeometry, o: usize, y: &mut [f32]) {
    let tiles = Tiles::of(g);
    let tile_len = POSITIONS * o;
    let (mut rows, mut edge) = (vec![0f32; 8 * o], vec![0f32; 2 * o]);
    let samples = m.chunks_exact(tiles.per_sample() * tile_len);
    for (out, m) in y.chunks_exact_mut(g.out_plane() * o).zip(samples) {
        for (t, ty, tx) in tiles.iter() {
            let [r0, r1] = halves_mut(&mut rows);
            output_1d([r0, r1], quarters(&m[t * tile_len..][..tile_len]));
            for (i, r) in rows.chunks_exact(4 * o).enumerate() {
                let (oy, ox) = (2 * ty + i, 2 * tx);
                if oy >= g.ho {
                    continue;
                }
                let at = (oy * g.wo + ox) * o;
                if ox + 1 < g.wo {
                    output_1d(halves_mut(&mut out[at..at + 2 * o]), quarters(r));
                } else {
                    output_1d(halves_mut(&mut edge), quarters(r));
                    out[at..at + o].copy_from_slice(&edge[..o]);
                }
            }
        }
    }
}

/// `Γ = A dy Aᵀ` of every 2x2 tile of the output-gradient rows `dy`
/// `(b * Ho * Wo, O)` into `gamma` `(b * tiles, 16, O)` (pixels past the
/// output's edge count as zeros): the adjoint of [`transform_output`].
fn transform_output_adjoint(dy: &[f32], g: &ConvGeometry, o: usize, gamma: &mut [f32]) {
    let tiles = Tiles::of(g);
    let tile_len = POSITIONS * o;
    let (mut pixels, mut rows) = (vec![0f32; 4 * o], vec![0f32; 8 * o]);
    let samples = gamma.chunks_exact_mut(tiles.per_sample() * tile_len);
    for (dy, out) in dy.chunks_exact(g.out_plane() * o).zip(samples) {
        for (t, ty, tx) in tiles.iter() {
            // The tile's 2x2 gradient as two rows of two pixels: in place
            // inside the output, copied with zeros past its edge.
            let (oy, ox) = (2 * ty, 2 * tx);
            let at = |i: usize| ((oy + i) * g.wo + ox) * o;
            let [p0, p1]: [&[f32]; 2] = if oy + 1 < g.ho && ox + 1 < g.wo {
                [&dy[at(0)..][..2 * o], &dy[at(1)..][..2 * o]]
            } else {
                for (i, line) in pixels.chunks_exact_mut(2 * o).enumerate() {
                    let cols = if oy + i < g.ho {
                        g.wo.min(ox + 2) - ox
                    } else {
                        0
                    };
                    line[..cols * o].copy_from_slice(&dy[at(i).min(dy.len())..][..cols * o]);
                    line[cols * o..].fill(0.0);
                }
                let (p0, p1) = pixels.split_at(2 * o);
                [p0, p1]
            };
            output_1d_adjoint(quarters_mut(&mut rows), [p0, p1]);
            let tile = &mut out[t * tile_len..][..tile_len];
            for (o4, r) in tile.chunks_exact_mut(4 * o).zip(rows.chunks_exact(2 * o)) {
                let (a0, a1) = r.split_at(o);
                output_1d_adjoint(quarters_mut(o4), [a0, a1]);
            }
        }
    }
}

/// Position `ξ` of transformed tiles (or kernel) `(rows, 16, width)` as a
/// `(rows, width)` matrix.
fn position(v: &[f32], xi: usize, rows: usize, width: usize) -> Result<Mat<'_>> {
    Mat::new(&v[xi * width..], (rows, width), (POSITIONS * width, 1))
}

/// The 16 products `dst[ξ] (+)= a(ξ) @ b(ξ)`, `dst` a `(rows, 16, width)`
/// array (added to with `accumulate`, else overwritten).
fn products<'a>(
    (dst, width): (&mut [f32], usize),
    (a, b): (
        impl Fn(usize) -> Result<Mat<'a>>,
        impl Fn(usize) -> Result<Mat<'a>>,
    ),
    accumulate: bool,
    plan: &Plan,
) -> Result<()> {
    for xi in 0..POSITIONS {
        let dst = &mut dst[xi * width..];
        gemm(
            dst,
            POSITIONS * width,
            a(xi)?,
            b(xi)?,
            accumulate,
            plan.threads(),
        )?;
    }
    Ok(())
}

/// The chunk of samples `n0 .. n0 + b` of the forward: `y` `(b * Ho * Wo, O)`
/// from `x` and the transformed kernel `u`, with the scratch `v` and `m`.
pub(crate) fn forward_chunk(
    x: &Image<'_>,
    u: &[f32],
    plan: &Plan,
    (n0, b): (usize, usize),
    (v, m, padded): (&mut Vec<f32>, &mut Vec<f32>, &mut Vec<f32>),
    y: &mut [f32],
) -> Result<()> {
    let (g, o) = (&plan.g, plan.o);
    let t = b * Tiles::of(g).per_sample();
    let v = sized(v, t * POSITIONS * g.c);
    {
        let _t = scope("conv.fwd.winograd.in");
        transform_input(x, g, (n0, b), padded, v);
    }
    let m = sized(m, t * POSITIONS * o);
    {
        let _t = scope("conv.fwd.gemm");
        let (vx, ux) = (|xi| position(v, xi, t, g.c), |xi| position(u, xi, g.c, o));
        products((m, o), (vx, ux), false, plan)?;
    }
    let _t = scope("conv.fwd.winograd.out");
    transform_output(m, g, o, y);
    Ok(())
}

/// The backward of one chunk of `b` samples from its output-gradient rows
/// `dy` `(b * Ho * Wo, O)`: with `x` (samples `n0 ..`), adds the chunk's
/// kernel gradient to `du` (`(C, 16, O)` as [`kernel_transform`]'s; overwritten when not
/// `accumulate`); with the transformed kernel `u` (in the
/// [`kernel_transform_transposed`] form), writes the chunk's input
/// gradient `dx`.
pub(crate) fn backward_chunk(
    dy: &[f32],
    plan: &Plan,
    (n0, b): (usize, usize),
    kernel: Option<(&Image<'_>, &mut [f32], bool)>,
    input: Option<(&[f32], &mut [f32])>,
    (v, gamma, padded): (&mut Vec<f32>, &mut Vec<f32>, &mut Vec<f32>),
) -> Result<()> {
    let (g, o, c) = (&plan.g, plan.o, plan.g.c);
    let t = b * Tiles::of(g).per_sample();
    let gamma = sized(gamma, t * POSITIONS * o);
    {
        let _t = scope("conv.bwd.winograd.dy");
        transform_output_adjoint(dy, g, o, gamma);
    }
    let v = sized(v, t * POSITIONS * c);
    if let Some((x, du, accumulate)) = kernel {
        {
            let _t = scope("conv.bwd.w.winograd.in");
            transform_input(x, g, (n0, b), padded, v);
        }
        let _t = scope("conv.bwd.w.gemm");
        let vx = |xi| Ok(position(v, xi, t, c)?.t());
        let gx = |xi| position(gamma, xi, t, o);
        products((du, o), (vx, gx), accumulate, plan)?;
    }
    if let Some((u, dx)) = input {
        {
            let _t = scope("conv.bwd.x.gemm");
            let (gx, ux) = (|xi| position(gamma, xi, t, o), |xi| position(u, xi, o, c));
            products((v, c), (gx, ux), false, plan)?;
        }
        let _t = scope("conv.bwd.x.winograd.in");
        transform_input_adjoint(v, g, padded, dx);
    }
    Ok(())
}
