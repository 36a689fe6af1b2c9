//! `metrics.jsonl`: one JSON object per training step.
use crate::{Result, TrainError};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepMetrics {
    /// Steps completed, counting this one.
    pub step: usize,
    /// Epoch this step belongs to (0-based).
    pub epoch: usize,
    /// Training loss of this step.
    pub loss: f32,
    /// Loss of the side network's step ([`crate::Method::side_step`]: a GAN's other
    /// player), when the method has one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub side_loss: Option<f32>,
    /// Learning rate used for this step.
    pub lr: f64,
    /// Throughput of this step, in images (not views) per second.
    pub images_per_s: f64,
}

/// Appends [`StepMetrics`] to a JSON-lines file, flushing each line.
pub struct MetricsWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsWriter {
    /// Opens `path` for appending, first dropping lines beyond `keep_until_step`
    /// (the steps a resumed run is about to redo).
    ///
    /// # Errors
    /// If the file cannot be read or written.
    pub fn open(path: &Path, keep_until_step: usize) -> Result<Self> {
        let kept = read_metrics(path)?
            .into_iter()
            .filter(|m| m.step <= keep_until_step);
        let mut text = String::new();
        for m in kept {
            text.push_str(
                &serde_json::to_string(&m)
                    .map_err(|e| TrainError::config("metrics", e.to_string()))?,
            );
            text.push('\n');
        }
        std::fs::write(path, text).map_err(|e| TrainError::io(path, e))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| TrainError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one line.
    ///
    /// # Errors
    /// If the write fails.
    pub fn write(&mut self, m: &StepMetrics) -> Result<()> {
        let line =
            serde_json::to_string(m).map_err(|e| TrainError::config("metrics", e.to_string()))?;
        writeln!(self.file, "{line}").map_err(|e| TrainError::io(&self.path, e))
    }
}

/// Reads `metrics.jsonl`; a missing file is empty and a torn last line is ignored.
///
/// # Errors
/// If the file exists but cannot be read.
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(path, e)),
    };
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| TrainError::io(path, e))?;
        if let Ok(m) = serde_json::from_str(&line) {
            out.push(m);
        }
    }
    Ok(out)
}
