use std::path::PathBuf;

/// Everything that can go wrong while training, checkpointing or evaluating.
///
/// Each variant's message is one line that names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting is out of range or inconsistent.
    #[error("invalid setting `{setting}`: {msg}")]
    Config {
        /// The setting's name, as on the command line.
        setting: String,
        /// What is wrong with it.
        msg: String,
    },
    /// The loss became NaN or infinite.
    #[error("loss is {loss} at step {step}; stopping (the last good checkpoint is kept{})", hint.as_deref().map(|h| format!(": {h}")).unwrap_or_default())]
    NonFinite {
        /// The step whose loss was not finite.
        step: usize,
        /// The loss value.
        loss: f32,
        /// Where the last good checkpoint is, if any.
        hint: Option<String>,
    },
    /// A checkpoint is missing, unreadable or does not fit the model.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint {
        /// The checkpoint file or folder.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Loading or augmenting data failed.
    #[error(transparent)]
    Data(#[from] selfsup_data::DataError),
    /// A collective of a data-parallel run failed or timed out.
    #[error(transparent)]
    Dist(#[from] selfsup_dist::DistError),
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias for selfsup-train.
pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    /// A [`TrainError::Config`] for `setting`.
    pub fn config(setting: &str, msg: impl Into<String>) -> Self {
        Self::Config {
            setting: setting.to_string(),
            msg: msg.into(),
        }
    }

    /// A [`TrainError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
