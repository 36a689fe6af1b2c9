//! The memory bank of NPID (Wu et al. 2018, "Unsupervised Feature Learning via
//! Non-Parametric Instance Discrimination") and PIRL (Misra & van der Maaten 2020).
use crate::l2_normalize;
use candle_core::{bail, DType, Device, Result, Tensor};
use selfsup_data::Rng;

/// One L2-normalised D-dimensional slot per training sample, addressed by dataset index,
/// holding a running average of that sample's features.
///
/// The slots are a plain detached `(N, D)` `f32` tensor (never a variable), so no
/// gradient reaches them; [`MemoryBank::update`] writes the changed rows in place.
/// It needs `N·D·4` bytes: 30.7 MB for Fashion-MNIST at D = 128, 656 MB for ImageNet.
#[derive(Debug)]
pub struct MemoryBank {
    slots: Tensor,
}

/// The momentum of NPID and PIRL: `slot ← normalize(0.5·slot + 0.5·feature)`.
pub const DEFAULT_BANK_MOMENTUM: f64 = 0.5;

/// Bytes the `(n, dim)` `f32` slots take.
pub fn bank_bytes(n: usize, dim: usize) -> u64 {
    (n as u64).saturating_mul(dim as u64).saturating_mul(4)
}

/// Memory the system reports as available (`MemAvailable` of `/proc/meminfo`), if known.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Errors unless `momentum` lies in [0, 1].
pub(crate) fn check_momentum(what: &str, momentum: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&momentum) {
        bail!("{what} momentum must lie in [0, 1], got {momentum}")
    }
    Ok(())
}

/// `rows` random L2-normalised vectors of size `dim` from `seed` (normal entries).
pub(crate) fn random_unit_rows(
    rows: usize,
    dim: usize,
    seed: u64,
    device: &Device,
) -> Result<Tensor> {
    let mut rng = Rng::new(seed);
    let values: Vec<f32> = (0..rows * dim).map(|_| rng.normal() as f32).collect();
    l2_normalize(&Tensor::from_vec(values, (rows, dim), device)?)
}

/// `indices` as a `(B,)` `u32` tensor, checked against `n`.
fn index_tensor(indices: &[usize], n: usize, device: &Device) -> Result<Tensor> {
    if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
        bail!("memory bank index {bad} is out of range for a bank of {n} slots")
    }
    let idx: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
    Tensor::from_vec(idx, indices.len(), device)
}

impl MemoryBank {
    /// A bank of `n` random unit vectors of size `dim`, drawn from `seed`.
    ///
    /// # Errors
    /// If `n` or `dim` is 0, or (on the CPU) the slots would not fit in available memory.
    pub fn new(n: usize, dim: usize, seed: u64, device: &Device) -> Result<Self> {
        if n == 0 || dim == 0 {
            bail!("memory bank needs at least one slot of at least one dimension, got {n}x{dim}")
        }
        let bytes = bank_bytes(n, dim);
        let addressable = isize::MAX as u64;
        let free = match device.is_cpu() {
            true => available_memory().unwrap_or(addressable),
            false => addressable,
        };
        if bytes > free {
            bail!(
                "memory bank of {n} x {dim} f32 needs {:.2} GiB but only {:.2} GiB of memory is available",
                bytes as f64 / (1u64 << 30) as f64,
                free as f64 / (1u64 << 30) as f64
            )
        }
        Ok(Self {
            slots: random_unit_rows(n, dim, seed, device)?,
        })
    }

    /// A bank holding `slots` (for checkpoints).
    ///
    /// # Errors
    /// If `slots` is not an `(N, D)` `f32` tensor.
    pub fn from_tensor(slots: Tensor) -> Result<Self> {
        if slots.rank() != 2 || slots.dtype() != DType::F32 {
            bail!(
                "memory bank must be an (N, D) f32 tensor, got {:?} {:?}",
                slots.dims(),
                slots.dtype()
            )
        }
        Ok(Self {
            slots: slots.contiguous()?.copy()?,
        })
    }

    /// Number of slots N.
    pub fn len(&self) -> usize {
        self.slots.dims()[0]
    }

    /// Whether the bank has no slots (never true for a constructed bank).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slot size D.
    pub fn dim(&self) -> usize {
        self.slots.dims()[1]
    }

    /// The whole `(N, D)` bank.
    pub fn slots(&self) -> &Tensor {
        &self.slots
    }

    /// The slots of `indices`.
    ///
    /// # Shapes
    /// `(B, D)`.
    ///
    /// # Errors
    /// If an index is out of range.
    pub fn get(&self, indices: &[usize]) -> Result<Tensor> {
        let idx = index_tensor(indices, self.len(), self.slots.device())?;
        self.slots.index_select(&idx, 0)
    }

    /// Sets `slot_i = normalize(m·slot_i + (1 − m)·feature_i)` for each index, in place.
    /// `features` are detached first, so no gradient ever reaches the bank; they need
    /// not be normalised. Indices must be distinct.
    ///
    /// # Shapes
    /// `features`: `(B, D)` with `B = indices.len()`.
    ///
    /// # Errors
    /// On a momentum outside [0, 1], an index out of range, or a shape mismatch.
    pub fn update(&self, indices: &[usize], features: &Tensor, momentum: f64) -> Result<()> {
        check_momentum("memory bank", momentum)?;
        if features.dims() != [indices.len(), self.dim()] {
            bail!(
                "memory bank update: expected features ({}, {}), got {:?}",
                indices.len(),
                self.dim(),
                features.dims()
            )
        }
        let features = l2_normalize(&features.detach().to_dtype(DType::F32)?)?;
        let old = self.get(indices)?;
        let new = l2_normalize(&((old * momentum)? + (features * (1.0 - momentum))?)?)?;
        let idx = index_tensor(indices, self.len(), self.slots.device())?
            .unsqueeze(1)?
            .broadcast_as(new.dims())?
            .contiguous()?;
        self.slots.scatter_set(&idx, &new, 0)
    }

    /// `k` slot indices drawn uniformly with replacement (as NPID does), never one of
    /// `exclude` (the batch's own positives).
    ///
    /// # Errors
    /// If `k` is 0 or larger than the number of slots left after the exclusions.
    pub fn sample_indices(&self, exclude: &[usize], k: usize, rng: &mut Rng) -> Result<Vec<u32>> {
        let n = self.len();
        // Sorted distinct exclusions: O(B log B) per step, independent of N.
        let mut excluded: Vec<usize> = exclude.iter().copied().filter(|&i| i < n).collect();
        excluded.sort_unstable();
        excluded.dedup();
        let allowed = n - excluded.len();
        if k == 0 || k > allowed {
            bail!(
                "cannot draw {k} negatives from a memory bank of {n} slots with {} excluded; K must lie in 1..={allowed}",
                excluded.len()
            )
        }
        let mut out = Vec::with_capacity(k);
        while out.len() < k {
            let i = rng.below(n as u64) as usize;
            if excluded.binary_search(&i).is_err() {
                out.push(i as u32);
            }
        }
        Ok(out)
    }

    /// The slots of `k` negatives from [`MemoryBank::sample_indices`], shared by the whole batch.
    ///
    /// # Shapes
    /// `(k, D)`.
    ///
    /// # Errors
    /// As [`MemoryBank::sample_indices`].
    pub fn negatives(&self, exclude: &[usize], k: usize, rng: &mut Rng) -> Result<Tensor> {
        let idx = self.sample_indices(exclude, k, rng)?;
        let idx = Tensor::from_vec(idx, k, self.slots.device())?;
        self.slots.index_select(&idx, 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2::<f32>().unwrap()
    }

    #[test]
    fn slots_start_normalised_and_seeded() {
        let a = MemoryBank::new(10, 4, 7, &Device::Cpu).unwrap();
        let b = MemoryBank::new(10, 4, 7, &Device::Cpu).unwrap();
        assert_eq!(rows(a.slots()), rows(b.slots()));
        assert_ne!(
            rows(a.slots()),
            rows(MemoryBank::new(10, 4, 8, &Device::Cpu).unwrap().slots())
        );
        for r in rows(a.slots()) {
            let norm: f32 = r.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn update_follows_the_formula_and_touches_only_its_rows() {
        let bank = MemoryBank::new(6, 3, 1, &Device::Cpu).unwrap();
        let before = rows(bank.slots());
        let feats = Tensor::new(&[[3.0f32, 0.0, 4.0], [0.0, -2.0, 0.0]], &Device::Cpu).unwrap();
        bank.update(&[4, 1], &feats, 0.7).unwrap();
        let after = rows(bank.slots());
        for (row, f) in [(4usize, [0.6f32, 0.0, 0.8]), (1, [0.0, -1.0, 0.0])] {
            let mixed: Vec<f32> = (0..3).map(|j| 0.7 * before[row][j] + 0.3 * f[j]).collect();
            let norm = mixed.iter().map(|v| v * v).sum::<f32>().sqrt();
            for j in 0..3 {
                assert!((after[row][j] - mixed[j] / norm).abs() < 1e-6, "row {row}");
            }
        }
        for row in [0, 2, 3, 5] {
            assert_eq!(after[row], before[row], "row {row} must not change");
        }
        // Momentum 0 replaces the slot by the normalised feature.
        bank.update(
            &[0],
            &Tensor::new(&[[0.0f32, 2.0, 0.0]], &Device::Cpu).unwrap(),
            0.0,
        )
        .unwrap();
        assert_eq!(rows(&bank.get(&[0]).unwrap()), vec![vec![0.0, 1.0, 0.0]]);
    }

    #[test]
    fn negatives_never_include_the_positives() {
        let bank = MemoryBank::new(8, 2, 0, &Device::Cpu).unwrap();
        let mut rng = Rng::new(3);
        let exclude = [0, 3, 5, 7];
        let idx: Vec<u32> = (0..100)
            .flat_map(|_| bank.sample_indices(&exclude, 4, &mut rng).unwrap())
            .collect();
        assert_eq!(idx.len(), 400);
        assert!(idx.iter().all(|i| !exclude.contains(&(*i as usize))));
        for allowed in [1u32, 2, 4, 6] {
            assert!(idx.contains(&allowed), "slot {allowed} never drawn");
        }
        let neg = bank.negatives(&exclude, 3, &mut rng).unwrap();
        assert_eq!(neg.dims(), [3, 2]);
    }

    #[test]
    fn bad_settings_are_errors() {
        let bank = MemoryBank::new(8, 2, 0, &Device::Cpu).unwrap();
        let msg = bank
            .sample_indices(&[0, 1], 7, &mut Rng::new(0))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("K must lie in 1..=6"), "{msg}");
        let f = Tensor::zeros((1, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(bank
            .update(&[0], &f, 1.5)
            .unwrap_err()
            .to_string()
            .contains("momentum"));
        assert!(bank.update(&[0], &f, -0.1).is_err());
        assert!(bank
            .update(&[8], &f, 0.5)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        assert!(bank.update(&[0, 1], &f, 0.5).is_err());
        let msg = MemoryBank::new(usize::MAX / 8, 128, 0, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("GiB of memory is available"), "{msg}");
        assert!(MemoryBank::new(0, 4, 0, &Device::Cpu).is_err());
    }

    #[test]
    fn from_tensor_round_trips() {
        let bank = MemoryBank::new(5, 3, 2, &Device::Cpu).unwrap();
        let copy = MemoryBank::from_tensor(bank.slots().clone()).unwrap();
        bank.update(
            &[1],
            &Tensor::ones((1, 3), DType::F32, &Device::Cpu).unwrap(),
            0.5,
        )
        .unwrap();
        assert_ne!(
            rows(copy.slots()),
            rows(bank.slots()),
            "the copy owns its storage"
        );
        assert!(
            MemoryBank::from_tensor(Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap()).is_err()
        );
    }
}
