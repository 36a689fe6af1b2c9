//! Ranks as threads of one process.
use crate::{check_root, Communicator, DistError, Result};
use std::sync::{Arc, Barrier, Mutex};

/// State the threads of a [`ThreadGroup`] share.
struct Shared {
    barrier: Barrier,
    /// The round's buffers, one slot per rank (`f32` values widen exactly).
    slots: Mutex<Vec<Vec<f64>>>,
}

/// One rank of a group of threads in a single process, exchanging buffers through
/// shared memory: data-parallel code tested without an MPI launcher. Every rank
/// must run on its own thread. No timeouts: a thread that stops calling
/// collectives blocks the others.
#[derive(Clone)]
pub struct ThreadGroup {
    rank: usize,
    world: usize,
    shared: Arc<Shared>,
}

impl ThreadGroup {
    /// The `world` ranks of a new group, in rank order.
    pub fn new(world: usize) -> Vec<ThreadGroup> {
        let shared = Arc::new(Shared {
            barrier: Barrier::new(world.max(1)),
            slots: Mutex::new(vec![Vec::new(); world]),
        });
        (0..world)
            .map(|rank| ThreadGroup {
                rank,
                world,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Posts `local`, waits for every rank's, and returns `f` of all of them.
    fn exchange<T>(&self, local: Vec<f64>, f: impl FnOnce(&[Vec<f64>]) -> T) -> Result<T> {
        self.slots()?[self.rank] = local;
        self.shared.barrier.wait();
        let out = f(&self.slots()?);
        // Nobody posts the next round before everyone has read this one.
        self.shared.barrier.wait();
        Ok(out)
    }

    fn slots(&self) -> Result<std::sync::MutexGuard<'_, Vec<Vec<f64>>>> {
        self.shared
            .slots
            .lock()
            .map_err(|_| DistError::Backend("a rank thread panicked".into()))
    }
}

/// All slots' lengths agree with `len`.
fn check_lengths(slots: &[Vec<f64>], len: usize, op: &str) -> Result<()> {
    match slots.iter().position(|s| s.len() != len) {
        None => Ok(()),
        Some(r) => Err(DistError::Usage(format!(
            "{op}: rank {r} holds {} values, this rank {len}",
            slots[r].len()
        ))),
    }
}

impl Communicator for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let mut wide: Vec<f64> = buf.iter().map(|&v| v.into()).collect();
        self.all_reduce_sum_f64(&mut wide)?;
        buf.iter_mut().zip(wide).for_each(|(b, w)| *b = w as f32);
        Ok(())
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        let len = buf.len();
        let sum = self.exchange(buf.to_vec(), |slots| {
            check_lengths(slots, len, "all-reduce")?;
            // Rank order, so that every rank adds in the same order.
            let mut sum = vec![0f64; len];
            for slot in slots {
                sum.iter_mut().zip(slot).for_each(|(s, v)| *s += v);
            }
            Ok::<_, DistError>(sum)
        })??;
        buf.copy_from_slice(&sum);
        Ok(())
    }

    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        let wide = local.iter().map(|&v| v.into()).collect();
        self.exchange(wide, |slots| {
            check_lengths(slots, local.len(), "all-gather")?;
            Ok(slots.concat().into_iter().map(|v| v as f32).collect())
        })?
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        check_root(root, self.world)?;
        let len = buf.len();
        let wide = buf.iter().map(|&v| v.into()).collect();
        let value = self.exchange(wide, |slots| {
            check_lengths(slots, len, "broadcast")?;
            Ok::<_, DistError>(slots[root].clone())
        })??;
        buf.iter_mut().zip(value).for_each(|(b, w)| *b = w as f32);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.exchange(Vec::new(), |_| ())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn three_threads_sum_gather_and_broadcast() {
        let ranks = ThreadGroup::new(3);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = ranks
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        let r = c.rank() as f32;
                        let mut sum = vec![r, 10.0 * r];
                        c.all_reduce_sum(&mut sum).unwrap();
                        let mut mean = vec![r];
                        c.all_reduce_mean(&mut mean).unwrap();
                        let gathered = c.all_gather(&[r, -r]).unwrap();
                        let mut b = vec![r + 100.0];
                        c.broadcast(&mut b, 2).unwrap();
                        c.barrier().unwrap();
                        let mismatch = c.all_gather(&vec![0.0; c.rank()]).is_err();
                        (sum, mean, gathered, b, mismatch)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (sum, mean, gathered, b, mismatch) in results {
            assert_eq!(sum, [3.0, 30.0]);
            assert_eq!(mean, [1.0]);
            assert_eq!(gathered, [0.0, -0.0, 1.0, -1.0, 2.0, -2.0]);
            assert_eq!(b, [102.0]);
            assert!(mismatch);
        }
    }
}
