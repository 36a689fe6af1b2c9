//! Batch-norm statistics (Ioffe & Szegedy 2015): per-channel mean and biased
//! variance, from moments of parts of the batch combined in order (Chan,
//! Golub & LeVeque 1979), so that each part is read once, while in cache,
//! and the result does not depend on the thread count.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape};
use rayon::prelude::*;
use std::sync::Arc;

use crate::batch_norm_kernels::{data, dims, lane_sums, pairs_to_storage, Dims, LANES};
use crate::format::MemoryFormat;
use crate::profile;
use crate::sync::{reduce, StatsReducer};

/// Mean and biased variance per channel: `(2, C)`, over the samples of every
/// process of `sync` when given.
pub(crate) struct Stats {
    pub(crate) sync: Option<Arc<dyn StatsReducer>>,
}

impl CustomOp1 for Stats {
    fn name(&self) -> &'static str {
        "selfsup-bn-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let pairs = batch_stats(data(s, l)?, dims(l, MemoryFormat::Nchw)?, &self.sync)?;
        Ok(pairs_to_storage(pairs))
    }
}

/// Mean and biased variance per channel of `x`, whose dims are `d`, over every
/// process of `sync` when given: one parallel pass over the planes in memory
/// order, each plane's [`Moments`] taken while it is in cache.
pub(crate) fn batch_stats(
    x: &[f32],
    d: Dims,
    sync: &Option<Arc<dyn StatsReducer>>,
) -> Result<Vec<(f32, f32)>> {
    let _t = profile::scope("bn.stats");
    let parts: Vec<Moments> = if d.1 == 0 || d.2 == 0 {
        Vec::new()
    } else if d.2 < MIN_PLANE_PART {
        channel_moments(x, d)
    } else {
        x.par_chunks(d.2).map(Moments::of).collect()
    };
    moments_stats(&parts, d.1, sync)
}

/// Planes smaller than this are not parts of their own: a head's BN1d has one
/// value per plane, and N·C one-value parts cost more than the sums.
const MIN_PLANE_PART: usize = 64;

/// One [`Moments`] per channel of `x` (dims `d`, `C > 0`, `HW > 0`), from two
/// serial passes in memory order: the sums, then the centred squares.
fn channel_moments(x: &[f32], (n, c, hw): Dims) -> Vec<Moments> {
    let count = (n * hw) as f64;
    let per_channel = |f: &dyn Fn(&[f32], usize) -> f64| -> Vec<f64> {
        let mut acc = vec![0f64; c];
        for sample in x.chunks_exact(c * hw) {
            for (ci, (a, plane)) in acc.iter_mut().zip(sample.chunks_exact(hw)).enumerate() {
                *a += f(plane, ci);
            }
        }
        acc
    };
    let sums = per_channel(&|plane, _| plane.iter().map(|&v| f64::from(v)).sum());
    let means: Vec<f64> = sums.iter().map(|s| s / count.max(1.0)).collect();
    let m2 = per_channel(&|plane, ci| centred_squares(plane, means[ci]));
    means
        .into_iter()
        .zip(m2)
        .map(|(mean, m2)| Moments { count, mean, m2 })
        .collect()
}

/// Count, mean and centred sum of squares of a run of values (in f64), from
/// which [`moments_stats`] combines per-channel batch statistics (Chan et
/// al. 1979) without another pass over the data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Moments {
    count: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    /// The moments of the columns of `rows`, `C` values per row (a
    /// channels-last block, a few hundred rows): one per channel, from two
    /// passes over the rows, summed in `f32` (each a vector of `C` lanes),
    /// while the block is in cache.
    pub(crate) fn of_columns(rows: &[f32], c: usize) -> Vec<Self> {
        if c == 0 {
            return Vec::new();
        }
        let count = rows.len() / c;
        let mut sums = vec![0f32; c];
        for row in rows.chunks_exact(c) {
            sums.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
        }
        let means: Vec<f32> = sums.iter().map(|s| s / count.max(1) as f32).collect();
        let mut m2 = vec![0f32; c];
        for row in rows.chunks_exact(c) {
            for ((a, &v), &mean) in m2.iter_mut().zip(row).zip(&means) {
                *a += (v - mean) * (v - mean);
            }
        }
        let count = count as f64;
        sums.into_iter()
            .zip(m2)
            .map(|(sum, m2)| Self {
                count,
                mean: f64::from(sum) / count.max(1.0),
                m2: f64::from(m2),
            })
            .collect()
    }

    pub(crate) fn of(v: &[f32]) -> Self {
        let count = v.len() as f64;
        let sum = f64::from(lane_sums(v, v, |u, _| (u, 0.0)).0);
        let mean = if v.is_empty() { 0.0 } else { sum / count };
        Self {
            count,
            mean,
            m2: centred_squares(v, mean),
        }
    }
}

/// Mean and biased variance per channel from per-channel [`Moments`] of
/// parts of the batch (`parts[j * c + ci]` for part `j`), over every process
/// of `sync` when given; parts are combined in order, so the result does not
/// depend on the thread count.
pub(crate) fn moments_stats(
    parts: &[Moments],
    c: usize,
    sync: &Option<Arc<dyn StatsReducer>>,
) -> Result<Vec<(f32, f32)>> {
    let across = |local: Vec<f64>| -> Result<Vec<f64>> {
        match sync {
            Some(group) => reduce(group.as_ref(), &local),
            None => Ok(local),
        }
    };
    let per_channel = |f: &dyn Fn(&Moments) -> f64| -> Vec<f64> {
        let mut acc = vec![0f64; c];
        for (i, m) in parts.iter().enumerate() {
            acc[i % c] += f(m);
        }
        acc
    };
    let mut first = per_channel(&|m| m.count);
    first.extend(per_channel(&|m| m.count * m.mean));
    let first = across(first)?;
    let (counts, sums) = first.split_at(c);
    let means: Vec<f64> = sums
        .iter()
        .zip(counts)
        .map(|(s, n)| s / n.max(1.0))
        .collect();
    let mut squares = vec![0f64; c];
    for (i, m) in parts.iter().enumerate() {
        let d = m.mean - means[i % c];
        squares[i % c] += m.m2 + m.count * d * d;
    }
    let squares = across(squares)?;
    Ok((0..c)
        .map(|ci| (means[ci] as f32, (squares[ci] / counts[ci].max(1.0)) as f32))
        .collect())
}

/// `Σ (v − mean)²` over `x` in f64, in independent lanes (vectorised).
fn centred_squares(x: &[f32], mean: f64) -> f64 {
    let chunks = x.chunks_exact(LANES);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum();
    let mut acc = [0f64; LANES];
    for vs in chunks {
        for (a, &v) in acc.iter_mut().zip(vs) {
            let c = f64::from(v) - mean;
            *a += c * c;
        }
    }
    acc.iter().sum::<f64>() + tail
}
