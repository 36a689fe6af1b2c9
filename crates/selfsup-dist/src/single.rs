//! The group of one process.
use crate::{check_root, Communicator, Result};

/// A single process: rank 0 of 1, every collective the identity. What a run without
/// `--dist` uses, so that the trainer has one code path.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }

    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }

    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        Ok(local.to_vec())
    }

    fn broadcast(&self, _buf: &mut [f32], root: usize) -> Result<()> {
        check_root(root, 1)
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_collective_is_the_identity() {
        let c = SingleProcess;
        let mut buf = vec![1.0, -2.5];
        c.all_reduce_sum(&mut buf).unwrap();
        c.all_reduce_mean(&mut buf).unwrap();
        assert_eq!(buf, [1.0, -2.5]);
        assert_eq!(c.all_gather(&buf).unwrap(), buf);
        c.broadcast(&mut buf, 0).unwrap();
        assert_eq!(buf, [1.0, -2.5]);
        assert!(c.broadcast(&mut buf, 1).is_err());
        assert!(c.is_leader() && c.world_size() == 1);
    }
}
