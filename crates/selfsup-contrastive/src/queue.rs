//! The key queue of MoCo (He et al. 2020, "Momentum Contrast for Unsupervised Visual
//! Representation Learning").
use crate::l2_normalize;
use crate::memory_bank::random_unit_rows;
use candle_core::{bail, DType, Device, Result, Tensor};

/// A FIFO ring buffer of the K most recent keys, used as negatives.
///
/// It starts full of random unit vectors (as MoCo's does), is a plain detached tensor
/// (never a variable), and is correct for any batch size: a batch that runs past the end
/// wraps around to the front, and a batch larger than K keeps its last K keys.
#[derive(Debug)]
pub struct Queue {
    keys: Tensor,
    ptr: usize,
}

impl Queue {
    /// A queue of `k` random unit keys of size `dim`, drawn from `seed`.
    ///
    /// # Errors
    /// If `k` or `dim` is 0.
    pub fn new(k: usize, dim: usize, seed: u64, device: &Device) -> Result<Self> {
        if k == 0 || dim == 0 {
            bail!("queue needs at least one key of at least one dimension, got {k}x{dim}")
        }
        Ok(Self {
            keys: random_unit_rows(k, dim, seed, device)?,
            ptr: 0,
        })
    }

    /// A queue holding `keys` whose next write goes to row `ptr` (for checkpoints).
    ///
    /// # Errors
    /// If `keys` is not `(K, D)` `f32` or `ptr >= K`.
    pub fn from_parts(keys: Tensor, ptr: usize) -> Result<Self> {
        if keys.rank() != 2 || keys.dtype() != DType::F32 || ptr >= keys.dims()[0] {
            bail!(
                "queue must be (K, D) f32 keys with a write position below K, got {:?} {:?} at {ptr}",
                keys.dims(),
                keys.dtype()
            )
        }
        Ok(Self {
            keys: keys.contiguous()?.copy()?,
            ptr,
        })
    }

    /// The `(K, D)` keys, oldest first from [`Queue::ptr`] on.
    pub fn keys(&self) -> &Tensor {
        &self.keys
    }

    /// Row the next key is written to.
    pub fn ptr(&self) -> usize {
        self.ptr
    }

    /// Capacity K.
    pub fn len(&self) -> usize {
        self.keys.dims()[0]
    }

    /// Whether the queue holds no keys (never true for a constructed queue).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces the oldest keys by `keys` (detached and L2-normalised), in place.
    ///
    /// # Shapes
    /// `keys`: `(B, D)`, any B ≥ 1.
    ///
    /// # Errors
    /// On a dimension mismatch.
    pub fn enqueue(&mut self, keys: &Tensor) -> Result<()> {
        let (k, d) = self.keys.dims2()?;
        if keys.rank() != 2 || keys.dims()[1] != d {
            bail!("queue holds (K, {d}) keys, got {:?}", keys.dims())
        }
        let keys = l2_normalize(&keys.detach().to_dtype(DType::F32)?)?;
        let b = keys.dims()[0];
        let keys = if b > k {
            keys.narrow(0, b - k, k)?
        } else {
            keys
        };
        let mut written = 0;
        while written < keys.dims()[0] {
            let n = (k - self.ptr).min(keys.dims()[0] - written);
            let part = keys.narrow(0, written, n)?.contiguous()?;
            self.keys.slice_set(&part, 0, self.ptr)?;
            self.ptr = (self.ptr + n) % k;
            written += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Keys whose first coordinate is `id` (after normalisation, with a 0 second coordinate).
    fn keys(ids: &[f32]) -> Tensor {
        let v: Vec<f32> = ids.iter().flat_map(|&i| [i, 0.0]).collect();
        Tensor::from_vec(v, (ids.len(), 2), &Device::Cpu).unwrap()
    }

    fn first_coords(q: &Queue) -> Vec<f32> {
        q.keys()
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .map(|r| r[0])
            .collect()
    }

    #[test]
    fn wraps_around_when_k_is_not_a_multiple_of_the_batch() {
        let mut q = Queue::new(5, 2, 0, &Device::Cpu).unwrap();
        q.enqueue(&keys(&[1.0, 1.0, 1.0])).unwrap();
        assert_eq!(q.ptr(), 3);
        q.enqueue(&keys(&[-1.0, -1.0, -1.0])).unwrap();
        assert_eq!(q.ptr(), 1);
        assert_eq!(first_coords(&q), vec![-1.0, 1.0, 1.0, -1.0, -1.0]);
        // A batch larger than the queue keeps its last K keys.
        q.enqueue(&keys(&[1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0]))
            .unwrap();
        assert_eq!(q.ptr(), 1);
        assert_eq!(first_coords(&q), vec![1.0, 1.0, -1.0, 1.0, -1.0]);
    }

    #[test]
    fn parts_round_trip_and_bad_input_is_an_error() {
        let mut q = Queue::new(4, 3, 1, &Device::Cpu).unwrap();
        let r = Queue::from_parts(q.keys().clone(), 2).unwrap();
        q.enqueue(&Tensor::ones((1, 3), DType::F32, &Device::Cpu).unwrap())
            .unwrap();
        assert_ne!(
            q.keys().to_vec2::<f32>().unwrap(),
            r.keys().to_vec2::<f32>().unwrap(),
            "the restored queue owns its storage"
        );
        assert!(Queue::from_parts(q.keys().clone(), 4).is_err());
        assert!(q
            .enqueue(&Tensor::ones((1, 2), DType::F32, &Device::Cpu).unwrap())
            .is_err());
        assert!(Queue::new(0, 3, 0, &Device::Cpu).is_err());
    }
}
