//! The crate's error type.
//!
//! Every variant names the file, URL or setting at fault and what is wrong
//! with it, and its `Display` is a single line, so a command-line tool can
//! print it as-is and exit non-zero.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while finding, downloading, decoding or
/// batching data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The operating system refused a read, write or directory listing.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A file exists but its content is wrong: bad magic number, truncated
    /// gzip stream, inconsistent counts, undecodable image, ...
    #[error("{}: {msg}", path.display())]
    Format {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// None of the lookup locations holds the dataset.
    #[error("dataset `{name}` not found; tried {}; {hint}", join_paths(tried))]
    NotFound {
        /// The dataset name, e.g. `fashion-mnist`.
        name: String,
        /// Every folder that was looked at, in lookup order.
        tried: Vec<PathBuf>,
        /// How to get the data.
        hint: String,
    },
    /// An HTTP(S) transfer failed.
    #[error("download of {url} failed: {msg}")]
    Download {
        /// The URL that was fetched.
        url: String,
        /// What went wrong.
        msg: String,
    },
    /// A download finished but its SHA-256 differs from the expected one.
    #[error("checksum mismatch for {url}: expected sha256 {expected}, got {actual}")]
    Checksum {
        /// The URL that was fetched.
        url: String,
        /// The expected hex digest.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// A setting (batch size, dataset name, augmentation parameter, ...) is
    /// out of range.
    #[error("invalid setting `{setting}`: {msg}")]
    Config {
        /// The setting's name.
        setting: String,
        /// Why its value is not acceptable.
        msg: String,
    },
    /// The loader's background thread died (a view recipe panicked).
    #[error("data loader worker failed: {msg}")]
    Worker {
        /// The panic message, when there was one.
        msg: String,
    },
    /// A tensor operation failed.
    #[error("tensor error: {}", one_line(&.0.to_string()))]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Collapses a possibly multi-line message onto one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl DataError {
    /// An [`DataError::Io`] for `path`.
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A [`DataError::Format`] for `path`.
    pub(crate) fn format(path: &Path, msg: impl Into<String>) -> Self {
        DataError::Format {
            path: path.to_path_buf(),
            msg: one_line(&msg.into()),
        }
    }

    /// A [`DataError::Config`] for `setting`.
    pub(crate) fn config(setting: &str, msg: impl Into<String>) -> Self {
        DataError::Config {
            setting: setting.to_string(),
            msg: msg.into(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_name_the_culprit() {
        let e = DataError::format(Path::new("/x/y.gz"), "bad\nmagic");
        assert_eq!(e.to_string(), "/x/y.gz: bad magic");
        let e = DataError::NotFound {
            name: "mnist".into(),
            tried: vec!["/a".into(), "/b".into()],
            hint: "run it".into(),
        };
        assert_eq!(
            e.to_string(),
            "dataset `mnist` not found; tried /a, /b; run it"
        );
        let e = DataError::config("batch_size", "must be positive");
        assert_eq!(
            e.to_string(),
            "invalid setting `batch_size`: must be positive"
        );
    }
}
