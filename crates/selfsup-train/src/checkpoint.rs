//! Atomic checkpoints: model, optimizer and method state as safetensors, progress as JSON.
//!
//! Layout inside the run folder:
//! ```text
//! checkpoints/step-00000200/{model,optimizer,method}.safetensors, state.json
//! checkpoints/latest          # names the newest complete checkpoint
//! ```
//! A checkpoint is written into a temporary folder that is renamed into place, and
//! `latest` is replaced by rename only after that, so a crash at any moment leaves
//! the previous checkpoint intact and `latest` pointing at a complete one.
use crate::config::TrainConfig;
use crate::{Result, TrainError};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Progress recorded next to the tensors.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointState {
    /// Optimizer steps completed.
    pub step: usize,
    /// The run's settings. All randomness is derived from `config.seed` and the
    /// position in the data (epoch, sample), so seed and step are the whole RNG state.
    pub config: TrainConfig,
    /// Wall-clock training seconds so far.
    pub train_seconds: f64,
}

/// Everything a checkpoint holds, loaded into memory.
pub struct Checkpoint {
    /// Progress and settings.
    pub state: CheckpointState,
    /// Every variable of the model, BN running statistics included.
    pub model: HashMap<String, Tensor>,
    /// Optimizer buffers.
    pub optimizer: HashMap<String, Tensor>,
    /// Method state outside the optimizer (banks, queues).
    pub method: HashMap<String, Tensor>,
}

/// Writes a file by way of a temporary name in the same folder and a rename.
///
/// # Errors
/// If writing or renaming fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_sibling(path);
    std::fs::write(&tmp, bytes).map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

fn tmp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    candle_core::safetensors::save(tensors, path).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            msg: "file is missing".into(),
        });
    }
    candle_core::safetensors::load(path, device).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// Every variable in `varmap`, by name.
pub fn varmap_tensors(varmap: &VarMap) -> HashMap<String, Tensor> {
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

/// Sets every variable of `varmap` from `tensors`, which must hold each of them with the right shape.
///
/// # Errors
/// A [`TrainError::Checkpoint`] naming `source` and the first missing or misshapen tensor.
pub fn load_into_varmap(
    varmap: &VarMap,
    tensors: &HashMap<String, Tensor>,
    source: &Path,
) -> Result<()> {
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let bad = |msg: String| TrainError::Checkpoint {
        path: source.to_path_buf(),
        msg,
    };
    for (name, var) in data.iter() {
        let t = tensors
            .get(name)
            .ok_or_else(|| bad(format!("has no tensor {name}")))?;
        if t.dims() != var.dims() {
            return Err(bad(format!(
                "{name} has shape {:?}, the model expects {:?}",
                t.dims(),
                var.dims()
            )));
        }
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?.copy()?)?;
    }
    Ok(())
}

/// The checkpoints folder of a run.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Writes a checkpoint for `state.step`, points `latest` at it, and removes older ones.
///
/// # Errors
/// If any file cannot be written.
pub fn save_checkpoint(run_dir: &Path, ckpt: &Checkpoint) -> Result<PathBuf> {
    let dir = checkpoints_dir(run_dir);
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    let name = format!("step-{:08}", ckpt.state.step);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    save_tensors(&ckpt.model, &tmp.join("model.safetensors"))?;
    save_tensors(&ckpt.optimizer, &tmp.join("optimizer.safetensors"))?;
    save_tensors(&ckpt.method, &tmp.join("method.safetensors"))?;
    let json = serde_json::to_string_pretty(&ckpt.state)
        .map_err(|e| TrainError::config("checkpoint", e.to_string()))?;
    std::fs::write(tmp.join("state.json"), json)
        .map_err(|e| TrainError::io(tmp.join("state.json"), e))?;
    let final_dir = dir.join(&name);
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    write_atomic(&dir.join("latest"), name.as_bytes())?;
    prune(&dir, &name)?;
    Ok(final_dir)
}

/// Removes every `step-*` folder and stale temporary folder except `keep`.
fn prune(dir: &Path, keep: &str) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = (name.starts_with("step-") || name.starts_with(".step-")) && name != keep;
        if stale && entry.path().is_dir() {
            std::fs::remove_dir_all(entry.path()).map_err(|e| TrainError::io(entry.path(), e))?;
        }
    }
    Ok(())
}

/// The newest complete checkpoint folder of a run, if any.
///
/// # Errors
/// If `latest` exists but cannot be read or names a missing folder.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    let latest = checkpoints_dir(run_dir).join("latest");
    let name = match std::fs::read_to_string(&latest) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TrainError::io(&latest, e)),
    };
    let path = checkpoints_dir(run_dir).join(name.trim());
    if !path.is_dir() {
        return Err(TrainError::Checkpoint {
            path,
            msg: format!("named by {} but missing", latest.display()),
        });
    }
    Ok(Some(path))
}

/// Loads a checkpoint folder written by [`save_checkpoint`].
///
/// # Errors
/// A [`TrainError::Checkpoint`] naming the unreadable or missing file.
pub fn load_checkpoint(dir: &Path, device: &Device) -> Result<Checkpoint> {
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
    let state: CheckpointState =
        serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
            path: state_path.clone(),
            msg: format!("unreadable state: {e}"),
        })?;
    Ok(Checkpoint {
        state,
        model: load_tensors(&dir.join("model.safetensors"), device)?,
        optimizer: load_tensors(&dir.join("optimizer.safetensors"), device)?,
        method: load_tensors(&dir.join("method.safetensors"), device)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use candle_core::DType;

    fn ckpt(step: usize) -> Checkpoint {
        let t = Tensor::full(step as f32, (2, 3), &Device::Cpu).unwrap();
        Checkpoint {
            state: CheckpointState {
                step,
                config: TrainConfig::default(),
                train_seconds: 1.5,
            },
            model: HashMap::from([("w".to_string(), t.clone())]),
            optimizer: HashMap::from([("w.momentum".to_string(), t)]),
            method: HashMap::new(),
        }
    }

    #[test]
    fn save_load_latest_and_prune() {
        let run = tempfile::tempdir().unwrap();
        assert!(latest_checkpoint(run.path()).unwrap().is_none());
        save_checkpoint(run.path(), &ckpt(10)).unwrap();
        let second = save_checkpoint(run.path(), &ckpt(20)).unwrap();
        assert_eq!(latest_checkpoint(run.path()).unwrap().unwrap(), second);
        let loaded = load_checkpoint(&second, &Device::Cpu).unwrap();
        assert_eq!(loaded.state.step, 20);
        assert_eq!(loaded.model["w"].to_vec2::<f32>().unwrap()[1][2], 20.0);
        let dirs: Vec<_> = std::fs::read_dir(checkpoints_dir(run.path()))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(dirs.len(), 2, "one checkpoint folder plus `latest`");
    }

    #[test]
    fn varmap_roundtrip_and_shape_mismatch() {
        let vm = VarMap::new();
        vm.get(
            (2, 2),
            "a",
            candle_nn::Init::Const(3.0),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let mut tensors = varmap_tensors(&vm);
        load_into_varmap(&vm, &tensors, Path::new("x")).unwrap();
        tensors.insert(
            "a".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        );
        let err = load_into_varmap(&vm, &tensors, Path::new("ckpt"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ckpt") && err.contains("shape"), "{err}");
        let err = load_into_varmap(&vm, &HashMap::new(), Path::new("ckpt"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no tensor a"), "{err}");
    }

    #[test]
    fn corrupt_checkpoint_is_a_clean_error() {
        let run = tempfile::tempdir().unwrap();
        let dir = save_checkpoint(run.path(), &ckpt(5)).unwrap();
        std::fs::write(dir.join("model.safetensors"), b"garbage").unwrap();
        let err = load_checkpoint(&dir, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("model.safetensors"), "{err}");
    }
}
