//! The CPU kernels of [`batch_norm_train`](crate::batch_norm_train) and
//! [`batch_norm_train_relu`](crate::batch_norm_train_relu): the
//! normalisation (with the optional ReLU) and its fused backward, each one
//! channel- or plane-parallel pass over memory channels first, and one pass
//! over blocks of rows channels last (the statistics are in
//! [`crate::bn_stats`]).
//!
//! With the ReLU fused, the backward stores no mask: it recomputes the
//! pre-activation `x * scale + shift` from the same coefficients with the
//! same `f32` operations, so `y > 0` is decided exactly as in the forward.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::format::MemoryFormat;
use crate::profile;
use crate::sync::{reduce, StatsReducer};
use crate::zeros::zeros;
use std::sync::Arc;

/// `(N, C, H * W)` of an `(N, C, H, W)` or `(N, H, W, C)` tensor.
pub(crate) type Dims = (usize, usize, usize);

/// The contiguous `f32` data of a storage, for op `op`.
pub(crate) fn contiguous_data<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("{op}: expected a contiguous tensor")
    };
    Ok(&s.as_slice::<f32>()?[start..end])
}

pub(crate) fn data<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    contiguous_data(s, l, "batch norm")
}

/// The [`Dims`] of a layout in `format`.
pub(crate) fn dims(l: &Layout, format: MemoryFormat) -> Result<Dims> {
    match (format, l.dims()) {
        (MemoryFormat::Nchw, &[n, c, h, w]) | (MemoryFormat::Nhwc, &[n, h, w, c]) => {
            Ok((n, c, h * w))
        }
        _ => bail!(
            "batch norm: expected a 4-D {format:?} tensor, got {:?}",
            l.dims()
        ),
    }
}

/// Per-channel pairs as the rows of a `(2, C)` buffer: all firsts, then all seconds.
pub(crate) fn pairs_to_rows(pairs: &[(f32, f32)]) -> Vec<f32> {
    pairs
        .iter()
        .map(|p| p.0)
        .chain(pairs.iter().map(|p| p.1))
        .collect()
}

/// Per-channel pairs as a `(2, C)` storage.
pub(crate) fn pairs_to_storage(pairs: Vec<(f32, f32)>) -> (CpuStorage, Shape) {
    (
        CpuStorage::F32(pairs_to_rows(&pairs)),
        Shape::from((2, pairs.len())),
    )
}

/// A new buffer of `len` values, filled in parallel plane by plane by
/// `fill(channel, offset of the plane, plane)`.
fn par_planes(
    len: usize,
    (_, c, hw): Dims,
    fill: impl Fn(usize, usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut out = zeros(len);
    if hw > 0 {
        out.par_chunks_mut(hw)
            .enumerate()
            .for_each(|(p, plane)| fill(p % c, p * hw, plane));
    }
    out
}

/// About this many values make one parallel task over rows.
const ROW_BLOCK: usize = 1 << 14;

/// Values per task over rows of `c` values: whole rows, about [`ROW_BLOCK`].
fn row_block(c: usize) -> usize {
    c * (ROW_BLOCK / c.max(1)).max(1)
}

/// A new buffer of `len` values, filled in parallel by blocks of whole rows
/// of `c` values by `fill(offset of the block, block)`.
fn par_rows(len: usize, c: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = zeros(len);
    if c > 0 {
        let block = row_block(c);
        out.par_chunks_mut(block)
            .enumerate()
            .for_each(|(i, part)| fill(i * block, part));
    }
    out
}

/// Accumulators per sum in [`lane_sums`].
pub(crate) const LANES: usize = 8;

/// `(Σ f(a[i], b[i]).0, Σ f(a[i], b[i]).1)` over equally long `a` and `b`,
/// each in `LANES` independent `f32` accumulators, so that the loop
/// vectorises.
pub(crate) fn lane_sums(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f32, f32)) -> (f32, f32) {
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let mut tail = (0f32, 0f32);
    for (&u, &v) in ca.remainder().iter().zip(cb.remainder()) {
        let t = f(u, v);
        tail = (tail.0 + t.0, tail.1 + t.1);
    }
    let (mut acc0, mut acc1) = ([0f32; LANES], [0f32; LANES]);
    for (us, vs) in ca.zip(cb) {
        for (((s0, s1), &u), &v) in acc0.iter_mut().zip(&mut acc1).zip(us).zip(vs) {
            let t = f(u, v);
            *s0 += t.0;
            *s1 += t.1;
        }
    }
    (
        acc0.iter().sum::<f32>() + tail.0,
        acc1.iter().sum::<f32>() + tail.1,
    )
}

/// `(Σ g, Σ g · (x − mean))` over one plane, `g = gate(dy, x, relu)`, in
/// `LANES` independent accumulators, so that the loop vectorises.
fn gated_sums(x: &[f32], dy: &[f32], mean: f32, relu: Option<(f32, f32)>) -> (f32, f32) {
    let (xs, gs) = (x.chunks_exact(LANES), dy.chunks_exact(LANES));
    let mut tail = (0f32, 0f32);
    for (&v, &g) in xs.remainder().iter().zip(gs.remainder()) {
        let g = gate(g, v, relu);
        tail = (tail.0 + g, tail.1 + g * (v - mean));
    }
    let (mut s0, mut s1) = ([0f32; LANES], [0f32; LANES]);
    for (xv, gv) in xs.zip(gs) {
        for i in 0..LANES {
            let g = gate(gv[i], xv[i], relu);
            s0[i] += g;
            s1[i] += g * (xv[i] - mean);
        }
    }
    (
        s0.iter().sum::<f32>() + tail.0,
        s1.iter().sum::<f32>() + tail.1,
    )
}

/// `g` where the fused ReLU let the forward through (`v * a + b > 0` for the
/// channel's forward coefficients `relu = (a, b)`), else 0; `g` without a ReLU.
///
/// One select, no branch on the data: this form keeps [`gated_sums`]'s loop
/// vectorised (measured 4x faster than a closure-per-mask form there, while
/// [`InputGrad::apply`] is faster the other way round).
#[inline(always)]
fn gate(g: f32, v: f32, relu: Option<(f32, f32)>) -> f32 {
    let (a, b, on) = relu.map_or((0.0, 0.0, false), |(a, b)| (a, b, true));
    if !on | (v * a + b > 0.0) {
        g
    } else {
        0.0
    }
}

/// `Σ g` and `Σ g · (x − mean)` per channel over the rows of `x` and `dy`
/// (channels last), added to `s0` and `s1`; `g` is `dy` where
/// `x * a + b > 0` for the channel's [`gate_coefficients`] `(a, b)`, else 0.
fn gated_row_sums(
    (x, dy): (&[f32], &[f32]),
    mean: &[f32],
    (a, b): (&[f32], &[f32]),
    (s0, s1): (&mut [f32], &mut [f32]),
) {
    let c = mean.len();
    for (xr, gr) in x.chunks_exact(c).zip(dy.chunks_exact(c)) {
        let sums = s0.iter_mut().zip(s1.iter_mut());
        let coef = mean.iter().zip(a).zip(b);
        for (((&v, &g), (s0, s1)), ((&m, &a), &b)) in xr.iter().zip(gr).zip(sums).zip(coef) {
            let g = if v * a + b > 0.0 { g } else { 0.0 };
            *s0 += g;
            *s1 += g * (v - m);
        }
    }
}

/// [`gated_row_sums`] over all rows of `x` and `dy`: in parallel over
/// blocks of rows, each summed in `f32`, then the blocks in order in `f64`
/// (the same result for any thread count).
fn row_sums((x, dy): (&[f32], &[f32]), mean: &[f32], gate: (&[f32], &[f32])) -> Vec<(f64, f64)> {
    let c = mean.len();
    let mut total = vec![(0f64, 0f64); c];
    if c == 0 {
        return total;
    }
    let block = row_block(c);
    let parts: Vec<(Vec<f32>, Vec<f32>)> = x
        .par_chunks(block)
        .zip(dy.par_chunks(block))
        .map(|(xb, gb)| {
            let (mut s0, mut s1) = (vec![0f32; c], vec![0f32; c]);
            gated_row_sums((xb, gb), mean, gate, (&mut s0, &mut s1));
            (s0, s1)
        })
        .collect();
    for (s0, s1) in parts {
        for ((t, a), b) in total.iter_mut().zip(s0).zip(s1) {
            t.0 += f64::from(a);
            t.1 += f64::from(b);
        }
    }
    total
}

/// Per-channel `(scale, shift)` of the normalisation, `out = x * scale +
/// shift`, from the `(2, C)` `stats` (mean, biased variance) and `affine`
/// (weight, bias).
fn coefficients(stats: &[f32], affine: &[f32], c: usize, eps: f64) -> Vec<(f32, f32)> {
    (0..c)
        .map(|ci| {
            let a = affine[ci] / (stats[c + ci] as f64 + eps).sqrt() as f32;
            (a, affine[c + ci] - stats[ci] * a)
        })
        .collect()
}

/// Per channel, the batch-norm input gradient `dx = x · a + b + g · k`, with
/// `g` `dy` where `x * fa + fb > 0` (the [`gate_coefficients`]), else 0.
#[derive(Debug, Clone, Default)]
pub(crate) struct InputGrads {
    a: Vec<f32>,
    b: Vec<f32>,
    k: Vec<f32>,
    fa: Vec<f32>,
    fb: Vec<f32>,
    relu: bool,
}

impl InputGrads {
    /// `out = dx` of one plane of channel `ci`, from its `x` and `dy` (read
    /// from their starts).
    pub(crate) fn plane(&self, ci: usize, out: &mut [f32], x: &[f32], dy: &[f32]) {
        let (fa, fb) = (self.fa[ci], self.fb[ci]);
        if self.relu {
            self.plane_masked(ci, out, (x, dy), |v| v * fa + fb > 0.0);
        } else {
            self.plane_masked(ci, out, (x, dy), |_| true);
        }
    }

    /// [`Self::plane`] with the ReLU's mask as a closure (a branch-free loop;
    /// measured faster here than the select of [`gate`]).
    #[inline(always)]
    fn plane_masked(
        &self,
        ci: usize,
        out: &mut [f32],
        (x, dy): (&[f32], &[f32]),
        keep: impl Fn(f32) -> bool,
    ) {
        let (a, b, k) = (self.a[ci], self.b[ci], self.k[ci]);
        for ((o, &v), &g) in out.iter_mut().zip(x).zip(dy) {
            *o = v * a + b + if keep(v) { g * k } else { 0.0 };
        }
    }

    /// `out = dx` of whole rows of `C` values (channels last), from the rows
    /// of `x` and `dy`.
    pub(crate) fn rows(&self, out: &mut [f32], x: &[f32], dy: &[f32]) {
        let c = self.a.len();
        if c == 0 {
            return;
        }
        // Indexed loops over slices of length `c`, and the mask as bits: the
        // form that the compiler vectorises here (an iterator chain or an `if`
        // stayed scalar, with a branch).
        let (a, b, k) = (&self.a[..c], &self.b[..c], &self.k[..c]);
        let (fa, fb) = (&self.fa[..c], &self.fb[..c]);
        let rows = out
            .chunks_exact_mut(c)
            .zip(x.chunks_exact(c))
            .zip(dy.chunks_exact(c));
        for ((or, xr), gr) in rows {
            let (or, xr, gr) = (&mut or[..c], &xr[..c], &gr[..c]);
            for i in 0..c {
                let v = xr[i];
                let keep = u32::from(v * fa[i] + fb[i] > 0.0).wrapping_neg();
                let g = f32::from_bits((gr[i] * k[i]).to_bits() & keep);
                or[i] = v * a[i] + b[i] + g;
            }
        }
    }
}

/// Processes whose samples the statistics cover.
fn world(sync: &Option<Arc<dyn StatsReducer>>) -> usize {
    sync.as_ref().map_or(1, |g| g.world_size())
}

/// `y = (x - mean) * weight / sqrt(var + eps) + bias`, then `max(0, y)` when
/// `relu`, on `(x, stats, affine)`; stats and affine are `(2, C)`. With `sync`,
/// the backward's sums run over every process, as the statistics did.
#[derive(Clone)]
pub(crate) struct BnTrain {
    pub(crate) eps: f64,
    pub(crate) relu: bool,
    pub(crate) sync: Option<Arc<dyn StatsReducer>>,
    pub(crate) format: MemoryFormat,
}

impl BnTrain {
    /// The forward on `x` (dims `d`) with `(2, C)` `stats` and `affine`.
    pub(crate) fn normalize(&self, x: &[f32], d: Dims, stats: &[f32], affine: &[f32]) -> Vec<f32> {
        let _t = profile::scope("bn.fwd");
        let coef = coefficients(stats, affine, d.1, self.eps);
        let relu = self.relu;
        if self.format == MemoryFormat::Nhwc {
            let (a, b): (Vec<f32>, Vec<f32>) = coef.into_iter().unzip();
            return par_rows(x.len(), d.1, |at, out| {
                for (or, xr) in out.chunks_exact_mut(d.1).zip(x[at..].chunks_exact(d.1)) {
                    for (((o, &v), &a), &b) in or.iter_mut().zip(xr).zip(&a).zip(&b) {
                        let z = v * a + b;
                        *o = if relu { z.max(0.0) } else { z };
                    }
                }
            });
        }
        par_planes(x.len(), d, |ci, at, out| {
            let (a, b) = coef[ci];
            for (o, &v) in out.iter_mut().zip(&x[at..]) {
                let z = v * a + b;
                *o = if relu { z.max(0.0) } else { z };
            }
        })
    }

    /// The backward from `dy`, for the forward on `x` with `stats` and `affine`: the
    /// input gradient (when `want_dx`) and the `(2, C)` affine gradient.
    pub(crate) fn grads(
        &self,
        x: &Tensor,
        stats: &Tensor,
        affine: &Tensor,
        dy: &Tensor,
        want_dx: bool,
    ) -> Result<(Option<Tensor>, Tensor)> {
        let dy = dy.contiguous()?;
        let (packed, daffine) = self.grad_sums(x, stats, affine, &dy)?;
        let dx = if want_dx {
            Some(x.apply_op3_no_bwd(&dy, &packed, &BnGradInput(self.clone()))?)
        } else {
            None
        };
        Ok((dx, daffine))
    }

    /// The sums of the backward from the contiguous `dy`: `[stats; affine; sums]`,
    /// `(6, C)`, with the sums over every process (what [`Self::input_grads`]
    /// needs), and the `(2, C)` affine gradient (this process's share).
    pub(crate) fn grad_sums(
        &self,
        x: &Tensor,
        stats: &Tensor,
        affine: &Tensor,
        dy: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let packed = Tensor::cat(&[stats, &affine.detach()], 0)?; // (4, C)
        let sums = x.apply_op3_no_bwd(dy, &packed, &BnGradSums(self.clone()))?;
        // The input gradient needs the sums over every process; the parameters'
        // gradients keep this process's share, which the trainer averages.
        let total = match &self.sync {
            Some(group) => {
                let local: Vec<f64> = sums
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .into_iter()
                    .map(f64::from)
                    .collect();
                let summed: Vec<f32> = reduce(group.as_ref(), &local)?
                    .into_iter()
                    .map(|v| v as f32)
                    .collect();
                Tensor::from_vec(summed, sums.shape(), sums.device())?
            }
            None => sums.clone(),
        };
        let packed = Tensor::cat(&[packed, total], 0)?; // (6, C)
        let daffine = Tensor::stack(&[sums.get(1)?, sums.get(0)?], 0)?;
        Ok((packed, daffine))
    }

    /// Per channel, the input gradient's coefficients from `[stats; affine; sums]`
    /// (`p`, `(6, C)`) over `d`'s samples on every process.
    pub(crate) fn input_grads(&self, p: &[f32], d: Dims) -> InputGrads {
        let (c, m) = (d.1, (d.0 * d.2 * world(&self.sync)).max(1) as f32);
        let (fa, fb) = self.gate_coefficients(p, c);
        let mut grads = InputGrads {
            fa,
            fb,
            relu: self.relu,
            ..InputGrads::default()
        };
        for ci in 0..c {
            let (mean, var, gamma) = (p[ci], p[c + ci], p[2 * c + ci]);
            let (sum_g, sum_g_xhat) = (p[4 * c + ci], p[5 * c + ci]);
            let inv = 1.0 / (var as f64 + self.eps).sqrt() as f32;
            let k = gamma * inv;
            let a = -k * inv * sum_g_xhat / m;
            grads.a.push(a);
            grads.b.push(-k * sum_g / m - a * mean);
            grads.k.push(k);
        }
        grads
    }

    /// Per channel, the `(a, b)` of the backward's mask: `dy` passes where
    /// `x * a + b > 0`. With the ReLU fused these are the forward's coefficients
    /// (the mask is `y > 0`); without, `(0, 1)`, which pass every finite `x`.
    /// `p` starts with `[stats; affine]`.
    fn gate_coefficients(&self, p: &[f32], c: usize) -> (Vec<f32>, Vec<f32>) {
        if self.relu {
            coefficients(&p[..2 * c], &p[2 * c..], c, self.eps)
                .into_iter()
                .unzip()
        } else {
            (vec![0.0; c], vec![1.0; c])
        }
    }
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        if self.relu {
            "selfsup-bn-train-relu"
        } else {
            "selfsup-bn-train"
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, d) = (data(s1, l1)?, dims(l1, self.format)?);
        let y = self.normalize(x, d, data(s2, l2)?, data(s3, l3)?);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        stats: &Tensor,
        affine: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, daffine) = self.grads(x, stats, affine, dy, x.track_op())?;
        Ok((dx, None, Some(daffine)))
    }
}

/// `(2, C)` of `sum(g)` and `sum(g * xhat)` on `(x, dy, [stats; affine])`,
/// where `g` is `dy` masked by the fused ReLU, if any.
struct BnGradSums(BnTrain);

impl CustomOp3 for BnGradSums {
    fn name(&self) -> &'static str {
        "selfsup-bn-grad-sums"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = profile::scope("bn.bwd.sums");
        let bn = &self.0;
        let (x, dy, p) = (data(s1, l1)?, data(s2, l2)?, data(s3, l3)?);
        let (n, c, hw) = dims(l1, bn.format)?;
        let (fa, fb) = bn.gate_coefficients(p, c);
        let sums: Vec<(f64, f64)> = if bn.format == MemoryFormat::Nhwc {
            row_sums((x, dy), &p[..c], (&fa, &fb))
        } else {
            (0..c)
                .into_par_iter()
                .map(|ci| {
                    let gate = bn.relu.then_some((fa[ci], fb[ci]));
                    let (mut s0, mut s1) = (0f64, 0f64);
                    for at in (0..n).map(|ni| (ni * c + ci) * hw) {
                        let r = at..at + hw;
                        let (g, gx) = gated_sums(&x[r.clone()], &dy[r], p[ci], gate);
                        s0 += f64::from(g);
                        s1 += f64::from(gx);
                    }
                    (s0, s1)
                })
                .collect()
        };
        let pairs = sums
            .into_iter()
            .enumerate()
            .map(|(ci, (s0, s1))| {
                let inv = 1.0 / (p[c + ci] as f64 + bn.eps).sqrt();
                (s0 as f32, (s1 * inv) as f32)
            })
            .collect();
        Ok(pairs_to_storage(pairs))
    }
}

/// The input gradient on `(x, dy, [stats; affine; sums])`:
/// `dx = k * (g - sum(g) / M - xhat * sum(g * xhat) / M)`,
/// `k = weight / sqrt(var + eps)`, with `g` as in [`BnGradSums`].
struct BnGradInput(BnTrain);

impl CustomOp3 for BnGradInput {
    fn name(&self) -> &'static str {
        "selfsup-bn-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = profile::scope("bn.bwd.x");
        let (x, dy, p) = (data(s1, l1)?, data(s2, l2)?, data(s3, l3)?);
        let d = dims(l1, self.0.format)?;
        let coef = self.0.input_grads(p, d);
        let dx = if self.0.format == MemoryFormat::Nhwc {
            par_rows(x.len(), d.1, |at, out| {
                let r = at..at + out.len();
                coef.rows(out, &x[r.clone()], &dy[r]);
            })
        } else {
            par_planes(x.len(), d, |ci, at, out| {
                coef.plane(ci, out, &x[at..], &dy[at..]);
            })
        };
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}
