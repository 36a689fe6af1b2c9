//! Synchronised batch norm for data-parallel training: the batch statistics, and
//! the sums of the backward pass, are summed over every process of the run, so
//! that N processes at batch B compute what one computes at batch N·B (as
//! PyTorch's `SyncBatchNorm`).
//!
//! The setting is per thread and scoped: [`sync_batch_norm`] turns it on for the
//! calling thread until its guard drops. A training-mode batch norm captures it
//! when it runs forward, and its backward uses the same group.
use candle_core::Result;
use std::cell::RefCell;
use std::sync::Arc;

/// Sums buffers over the processes of a run. Every process must call it the same
/// number of times, in the same order, with buffers of the same length.
pub trait StatsReducer: Send + Sync {
    /// Processes in the group; every one holds the same number of samples.
    fn world_size(&self) -> usize;

    /// Replaces `buf` with its element-wise sum over the group, in double precision:
    /// the statistics then lose no digits that one process would keep.
    ///
    /// # Errors
    /// When the communication fails.
    fn all_reduce_sum(&self, buf: &mut [f64]) -> Result<()>;
}

thread_local! {
    static GROUP: RefCell<Option<Arc<dyn StatsReducer>>> = const { RefCell::new(None) };
}

/// Restores the previous setting when dropped.
#[must_use = "batch norm is synchronised only while the guard lives"]
pub struct SyncGuard {
    previous: Option<Arc<dyn StatsReducer>>,
}

impl Drop for SyncGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        GROUP.with(|g| *g.borrow_mut() = previous);
    }
}

/// Synchronises training-mode batch norm on this thread over `group` while the
/// returned guard lives. Every process must hold the same number of samples per
/// batch. Only the CPU kernels support it; elsewhere batch norm fails with an error.
pub fn sync_batch_norm(group: Arc<dyn StatsReducer>) -> SyncGuard {
    let previous = GROUP.with(|g| g.borrow_mut().replace(group));
    SyncGuard { previous }
}

/// Turns synchronisation off on this thread while the returned guard lives, for a
/// forward pass that already sees every rank's samples (MoCo's keys of the gathered
/// batch).
pub fn unsync_batch_norm() -> SyncGuard {
    let previous = GROUP.with(|g| g.borrow_mut().take());
    SyncGuard { previous }
}

/// The group batch norm is synchronised over on this thread, if any.
pub(crate) fn current_group() -> Option<Arc<dyn StatsReducer>> {
    GROUP.with(|g| g.borrow().clone())
}

/// Processes whose samples a training-mode batch norm on this thread normalises
/// over: 1 unless [`sync_batch_norm`] is on. The running variance's unbiased
/// correction counts `N·H·W` times this.
pub fn batch_norm_world() -> usize {
    current_group().map_or(1, |g| g.world_size())
}

/// `values` summed over `group`.
pub(crate) fn reduce(group: &dyn StatsReducer, values: &[f64]) -> Result<Vec<f64>> {
    let mut buf = values.to_vec();
    group.all_reduce_sum(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::test_util::{rand, rel_err};
    use crate::{batch_norm_train, batch_norm_train_relu};
    use candle_core::{Tensor, Var};
    use std::sync::{Barrier, Mutex};

    /// `world` threads of one process summing through shared memory.
    struct Threads {
        world: usize,
        barrier: Barrier,
        acc: Mutex<Vec<f64>>,
    }

    impl StatsReducer for Threads {
        fn world_size(&self) -> usize {
            self.world
        }

        fn all_reduce_sum(&self, buf: &mut [f64]) -> Result<()> {
            {
                let mut acc = self.acc.lock().unwrap();
                acc.resize(buf.len(), 0.0);
                acc.iter_mut().zip(buf.iter()).for_each(|(a, b)| *a += b);
            }
            self.barrier.wait();
            buf.copy_from_slice(&self.acc.lock().unwrap());
            if self.barrier.wait().is_leader() {
                self.acc.lock().unwrap().clear();
            }
            self.barrier.wait();
            Ok(())
        }
    }

    /// `(y, mean, var, dx, dweight, dbias)` of batch norm on `x` with the loss
    /// `Σ y·r`, the loss scaled by `scale`.
    fn run(x: &Tensor, r: &Tensor, relu: bool, scale: f64) -> Vec<Tensor> {
        let c = x.dim(1).unwrap();
        let x = Var::from_tensor(x).unwrap();
        let wt = Var::from_tensor(&rand(&[c], 2).unwrap()).unwrap();
        let b = Var::from_tensor(&rand(&[c], 3).unwrap()).unwrap();
        let bn = if relu {
            batch_norm_train_relu
        } else {
            batch_norm_train
        };
        let (y, mean, var) = bn(&x, &wt, &b, 1e-5).unwrap();
        let loss = ((&y * r).unwrap().sum_all().unwrap() * scale).unwrap();
        let g = loss.backward().unwrap();
        let mut out = vec![y, mean, var];
        out.extend([&x, &wt, &b].map(|v| g.get(v).unwrap().clone()));
        out
    }

    #[test]
    fn two_synchronised_halves_compute_what_one_process_does_on_the_whole_batch() {
        for relu in [false, true] {
            let shape = [6, 5, 3, 4];
            let x = ((rand(&shape, 1).unwrap() * 3.0).unwrap() + 2.0).unwrap();
            let r = rand(&shape, 4).unwrap();
            let whole = run(&x, &r, relu, 1.0);
            let group = Arc::new(Threads {
                world: 2,
                barrier: Barrier::new(2),
                acc: Mutex::new(Vec::new()),
            });
            // Each half's loss is scaled by 2 and its parameter gradients halved
            // afterwards: the data-parallel mean of two ranks' gradients.
            let halves: Vec<Vec<Tensor>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..2)
                    .map(|k| {
                        let (x, r, group) = (&x, &r, group.clone());
                        s.spawn(move || {
                            let _on = sync_batch_norm(group);
                            assert_eq!(batch_norm_world(), 2);
                            let xs = x.narrow(0, 3 * k, 3).unwrap();
                            let rs = r.narrow(0, 3 * k, 3).unwrap();
                            run(&xs, &rs, relu, 2.0)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let cat = |i: usize| Tensor::cat(&[&halves[0][i], &halves[1][i]], 0).unwrap();
            let mean_of = |i: usize| ((&halves[0][i] + &halves[1][i]).unwrap() / 2.0).unwrap();
            let y = cat(0);
            // dx of a half is scaled by its loss's 2 and by nothing else.
            let dx = (cat(3) / 2.0).unwrap();
            for (name, got, want) in [
                ("y", &y, &whole[0]),
                ("mean", &halves[1][1], &whole[1]),
                ("var", &halves[0][2], &whole[2]),
                ("dx", &dx, &whole[3]),
                ("dweight", &mean_of(4), &whole[4]),
                ("dbias", &mean_of(5), &whole[5]),
            ] {
                let err = rel_err(got, want).unwrap();
                assert!(err < 1e-5, "{name} relu={relu}: {err}");
            }
            assert_eq!(batch_norm_world(), 1, "the guard's thread only");
        }
    }

    #[test]
    fn the_guard_restores_the_previous_setting() {
        let group = Arc::new(Threads {
            world: 3,
            barrier: Barrier::new(1),
            acc: Mutex::new(Vec::new()),
        });
        {
            let _on = sync_batch_norm(group);
            assert_eq!(batch_norm_world(), 3);
            {
                let _off = unsync_batch_norm();
                assert_eq!(batch_norm_world(), 1);
            }
            assert_eq!(batch_norm_world(), 3);
        }
        assert_eq!(batch_norm_world(), 1);
    }
}
