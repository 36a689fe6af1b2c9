//! Collectives on candle tensors and gradients: what a data-parallel trainer needs.
//!
//! Tensors travel through host `f32` buffers; on the CPU that copy is the only cost.
use crate::{Communicator, DistError, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

/// Elements per all-reduce when averaging gradients (25 MiB of `f32`, the bucket
/// size PyTorch's DistributedDataParallel uses): few collective calls, each large
/// enough to reach the link's bandwidth.
pub const BUCKET_ELEMS: usize = 25 * 1024 * 1024 / 4;

/// A tensor's values as a host `f32` vector.
fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// `values` shaped, typed and placed like `like`.
fn like(values: &[f32], like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::from_slice(values, like.shape(), like.device())?.to_dtype(like.dtype())?)
}

/// Replaces each variable's gradient in `grads` with its mean over ranks. Variables
/// are packed in the given order (the same on every rank) into buckets of about
/// `bucket_elems` values, one all-reduce each. A variable this rank has no gradient
/// for takes part with zeros and stays without one here, as the single-process
/// optimizer skips it; every rank runs the same code, so they agree on which have one.
///
/// # Errors
/// On a collective's failure or timeout.
pub fn average_gradients(
    comm: &dyn Communicator,
    vars: &[Var],
    grads: &mut GradStore,
    bucket_elems: usize,
) -> Result<()> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    let mut start = 0;
    while start < vars.len() {
        let mut end = start;
        let mut buf = Vec::new();
        while end < vars.len()
            && (end == start || buf.len() + vars[end].elem_count() <= bucket_elems)
        {
            match grads.get(&vars[end]) {
                Some(g) => buf.extend(host(g)?),
                None => buf.resize(buf.len() + vars[end].elem_count(), 0.0),
            }
            end += 1;
        }
        comm.all_reduce_mean(&mut buf)?;
        let mut at = 0;
        for var in &vars[start..end] {
            let n = var.elem_count();
            if grads.get(var).is_some() {
                grads.insert(var, like(&buf[at..at + n], var.as_tensor())?);
            }
            at += n;
        }
        start = end;
    }
    Ok(())
}

/// Sets every variable to rank `root`'s value, so that all replicas start equal.
///
/// # Errors
/// On a collective's failure or timeout.
pub fn broadcast_vars(comm: &dyn Communicator, vars: &[Var], root: usize) -> Result<()> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    for var in vars {
        let mut buf = host(var.as_tensor())?;
        comm.broadcast(&mut buf, root)?;
        var.set(&like(&buf, var.as_tensor())?)?;
    }
    Ok(())
}

/// The mean of a scalar over ranks (a loss to log, or to check for NaN on every rank).
///
/// # Errors
/// On a collective's failure or timeout.
pub fn mean_scalar(comm: &dyn Communicator, value: f32) -> Result<f32> {
    let mut buf = [value];
    comm.all_reduce_mean(&mut buf)?;
    Ok(buf[0])
}

/// Every rank's `indices` (all as many), concatenated in rank order: the dataset
/// indices of the global batch.
///
/// # Errors
/// For an index of 2²⁴ or more (it travels as an exact `f32`), or on a collective's
/// failure or timeout.
pub fn all_gather_indices(comm: &dyn Communicator, indices: &[usize]) -> Result<Vec<usize>> {
    const EXACT: usize = 1 << f32::MANTISSA_DIGITS;
    if let Some(&big) = indices.iter().find(|&&i| i >= EXACT) {
        return Err(DistError::Usage(format!(
            "index {big} is too large to gather (at most {EXACT} samples)"
        )));
    }
    let local: Vec<f32> = indices.iter().map(|&i| i as f32).collect();
    Ok(comm
        .all_gather(&local)?
        .into_iter()
        .map(|i| i as usize)
        .collect())
}

/// Every rank's rows of `x` `(n, ...)`, concatenated in rank order `(world·n, ...)`,
/// for a loss over the global batch (SimCLR's negatives from every rank).
///
/// Gradients reach this rank's rows only, scaled by the world size: when every rank
/// computes the same loss on the gathered batch and the trainer averages gradients
/// over ranks, the result is the gradient one process gets on the whole batch. (Each
/// rank's rows get their gradient only on their own rank; the mean over ranks
/// divides it by the world size, which the scale undoes.)
///
/// # Errors
/// If ranks' `x` differ in size, or on a collective's failure or timeout.
pub fn all_gather_rows(comm: &dyn Communicator, x: &Tensor) -> Result<Tensor> {
    let world = comm.world_size();
    if world == 1 {
        return Ok(x.clone());
    }
    // The communicator refuses, on every rank, buffers of different lengths.
    let all = comm.all_gather(&host(x)?)?;
    let n = x.dim(0)?;
    let mut shape = x.dims().to_vec();
    shape[0] = world * n;
    let gathered = Tensor::from_vec(all, shape, x.device())?.to_dtype(x.dtype())?;
    // `x + (a − a.detach())` with `a = (world − 1)·x` equals `x` exactly and passes
    // `world` times the gradient.
    let scaled = x.affine((world - 1) as f64, 0.0)?;
    let mine = (x + (&scaled - scaled.detach())?)?;
    let rank = comm.rank();
    let mut parts = Vec::with_capacity(3);
    if rank > 0 {
        parts.push(gathered.narrow(0, 0, rank * n)?);
    }
    parts.push(mine);
    if rank + 1 < world {
        parts.push(gathered.narrow(0, (rank + 1) * n, (world - rank - 1) * n)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::SingleProcess;
    use candle_core::Device;
    use std::sync::Mutex;

    /// Rank `rank` of a pretend group of `world`. The other ranks' rows for gathers
    /// are `others`; in sums, together they add `world − 1` times this rank's value
    /// plus `skew · i` at position `i` of the buffer.
    struct Pretend {
        rank: usize,
        world: usize,
        skew: f32,
        others: Mutex<Vec<Vec<f32>>>,
    }

    impl Communicator for Pretend {
        fn rank(&self) -> usize {
            self.rank
        }
        fn world_size(&self) -> usize {
            self.world
        }
        fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
            for (i, v) in buf.iter_mut().enumerate() {
                *v = *v * self.world as f32 + self.skew * i as f32;
            }
            Ok(())
        }
        fn all_reduce_sum_f64(&self, _buf: &mut [f64]) -> Result<()> {
            unreachable!("not used by these tests")
        }
        fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
            let others = self.others.lock().unwrap();
            let mut out = Vec::new();
            let mut it = others.iter();
            for r in 0..self.world {
                if r == self.rank {
                    out.extend_from_slice(local);
                } else {
                    out.extend(it.next().unwrap());
                }
            }
            Ok(out)
        }
        fn broadcast(&self, _buf: &mut [f32], root: usize) -> Result<()> {
            crate::check_root(root, self.world)
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn gathered_rows_are_in_rank_order_and_only_ours_get_the_scaled_gradient() {
        let dev = Device::Cpu;
        let comm = Pretend {
            rank: 1,
            world: 3,
            skew: 0.0,
            others: Mutex::new(vec![vec![10.0, 11.0], vec![30.0, 31.0]]),
        };
        let x = Var::new(&[[20f32], [21.0]], &dev).unwrap();
        let all = all_gather_rows(&comm, x.as_tensor()).unwrap();
        assert_eq!(
            all.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [10.0, 11.0, 20.0, 21.0, 30.0, 31.0]
        );
        let weights = Tensor::new(&[[1f32], [2.0], [3.0], [4.0], [5.0], [6.0]], &dev).unwrap();
        let grads = (all * weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g = grads.get(&x).unwrap().flatten_all().unwrap();
        assert_eq!(g.to_vec1::<f32>().unwrap(), [9.0, 12.0]); // 3 × [3, 4]
    }

    #[test]
    fn indices_gather_in_rank_order_and_huge_ones_are_refused() {
        let comm = Pretend {
            rank: 0,
            world: 2,
            skew: 0.0,
            others: Mutex::new(vec![vec![7.0, 9.0]]),
        };
        assert_eq!(
            all_gather_indices(&comm, &[3, 16_000_000]).unwrap(),
            [3, 16_000_000, 7, 9]
        );
        assert!(all_gather_indices(&comm, &[1 << 24]).is_err());
    }

    #[test]
    fn single_process_gather_is_the_identity() {
        let x = Tensor::new(&[[1f32, 2.0]], &Device::Cpu).unwrap();
        let y = all_gather_rows(&SingleProcess, &x).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), [[1.0, 2.0]]);
    }

    #[test]
    fn averaging_keeps_which_variables_have_gradients_and_spans_buckets() {
        let dev = Device::Cpu;
        let comm = Pretend {
            rank: 0,
            world: 2,
            skew: 1.0,
            others: Mutex::new(vec![]),
        };
        let a = Var::new(&[1f32, 2.0, 3.0], &dev).unwrap();
        let b = Var::new(&[4f32], &dev).unwrap();
        let c = Var::new(&[[5f32, 6.0]], &dev).unwrap();
        let loss = ((a.as_tensor().sum_all().unwrap() * 2.0).unwrap()
            + c.as_tensor().sqr().unwrap().sum_all().unwrap())
        .unwrap();
        let mut grads = loss.backward().unwrap();
        // Buckets of 3 values: a alone, then b and c.
        average_gradients(&comm, &[a.clone(), b.clone(), c.clone()], &mut grads, 3).unwrap();
        // The mean adds skew · position / 2, position counted within each bucket.
        let a_mean = grads.get(&a).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a_mean, [2.0, 2.5, 3.0]);
        assert!(grads.get(&b).is_none());
        let c_mean = grads.get(&c).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(c_mean, [[10.5, 13.0]]);
        assert_eq!(mean_scalar(&comm, 1.5).unwrap(), 1.5);
    }
}
