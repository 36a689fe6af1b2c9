//! The `[distributed]` settings of a run: how many data-parallel ranks train it.
use crate::{Result, TrainError};

/// Data-parallel settings. `batch_size` is per rank; a step sees `world_size` of them.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistConfig {
    /// Ranks the run trains on (set from the launcher, e.g. `mpirun -np`); a run
    /// resumes only with as many.
    pub world_size: usize,
    /// Batch-norm statistics over every rank's samples (`--sync-bn`), so that N
    /// ranks at batch B compute what one process does at batch N·B.
    pub sync_bn: bool,
    /// Every this many steps (and at every checkpoint) the ranks compare a hash of
    /// their weights and stop if any replica drifted; 0 checks at checkpoints only.
    pub check_replicas_every: usize,
}

impl Default for DistConfig {
    fn default() -> Self {
        Self {
            world_size: 1,
            sync_bn: false,
            check_replicas_every: 0,
        }
    }
}

impl DistConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// A [`TrainError::Config`] naming the bad setting.
    pub fn validate(&self) -> Result<()> {
        if self.world_size == 0 {
            return Err(TrainError::config("world-size", "must be at least 1"));
        }
        Ok(())
    }
}
