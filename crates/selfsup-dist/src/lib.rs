//! Data-parallel collectives for selfsup.
//!
//! A [`Communicator`] is one process's view of a group of `world_size` ranks, as in
//! MPI: every rank calls the same collectives in the same order. [`SingleProcess`]
//! is the group of one (every collective is the identity); [`Mpi`] (feature `mpi`)
//! runs over an MPI library, for processes started by `mpirun` or `srun`;
//! [`ThreadGroup`] runs ranks as threads of one process, for tests.
//!
//! Collectives work on host `f32` buffers; [`tensor`] lifts them to candle tensors.
//! Every blocking collective gives up after the communicator's timeout with
//! [`DistError::Timeout`], so that a rank whose peer died exits instead of hanging.
#[cfg(feature = "mpi")]
mod mpi_comm;
mod single;
pub mod tensor;
mod threads;

#[cfg(feature = "mpi")]
pub use mpi_comm::Mpi;
pub use single::SingleProcess;
pub use threads::ThreadGroup;

use std::time::Duration;

/// What a collective can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A collective did not complete in time: a peer rank died, hangs or runs other code.
    #[error(
        "rank {rank}: {op} timed out after {seconds:.0} s waiting for the other ranks \
         (one of them was lost or stopped calling collectives)"
    )]
    Timeout {
        /// This process's rank.
        rank: usize,
        /// The collective that timed out.
        op: &'static str,
        /// How long it waited.
        seconds: f64,
    },
    /// Buffers of the wrong length, or a root outside the group.
    #[error("{0}")]
    Usage(String),
    /// The communication library failed.
    #[error("communication failed: {0}")]
    Backend(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

impl From<DistError> for candle_core::Error {
    fn from(e: DistError) -> Self {
        match e {
            DistError::Tensor(e) => e,
            other => candle_core::Error::Msg(other.to_string()),
        }
    }
}

/// Result of a collective.
pub type Result<T> = std::result::Result<T, DistError>;

/// How long a collective waits for the other ranks by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// One rank's handle on a group of processes.
pub trait Communicator: Send + Sync {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;

    /// Number of ranks in the group.
    fn world_size(&self) -> usize;

    /// Replaces `buf` on every rank with the element-wise sum of all ranks' `buf`.
    ///
    /// # Errors
    /// On a timeout or a failure of the library.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;

    /// [`Communicator::all_reduce_sum`] in double precision, for statistics that must
    /// not lose digits on the way (synchronised batch norm's sums).
    ///
    /// # Errors
    /// On a timeout or a failure of the library.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;

    /// Every rank's `local` (all of the same length), concatenated in rank order.
    ///
    /// # Errors
    /// On a timeout or a failure of the library.
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>>;

    /// Replaces `buf` on every rank with rank `root`'s.
    ///
    /// # Errors
    /// If `root` is not a rank, on a timeout or a failure of the library.
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()>;

    /// Waits until every rank has called it.
    ///
    /// # Errors
    /// On a timeout or a failure of the library.
    fn barrier(&self) -> Result<()>;

    /// Whether this rank writes the run's files (checkpoints, metrics, progress): rank 0.
    fn is_leader(&self) -> bool {
        self.rank() == 0
    }

    /// Replaces `buf` with the element-wise mean over ranks.
    ///
    /// # Errors
    /// As [`Communicator::all_reduce_sum`].
    fn all_reduce_mean(&self, buf: &mut [f32]) -> Result<()> {
        self.all_reduce_sum(buf)?;
        let scale = 1.0 / self.world_size() as f32;
        buf.iter_mut().for_each(|v| *v *= scale);
        Ok(())
    }

    /// Stops every rank of the group with exit code `code`, after this rank failed, so
    /// that none waits for it. The single-process default just exits.
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// Checks that `root` is a rank of a group of `world` ranks.
pub(crate) fn check_root(root: usize, world: usize) -> Result<()> {
    if root < world {
        Ok(())
    } else {
        Err(DistError::Usage(format!(
            "broadcast root {root} is not a rank of a group of {world}"
        )))
    }
}
