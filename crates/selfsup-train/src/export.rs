//! Exports the pretrained encoder as safetensors with torchvision's state-dict names.
use crate::checkpoint::varmap_tensors;
use crate::method::ENCODER_PREFIX;
use crate::{Result, TrainError};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use std::collections::HashMap;
use std::path::Path;

/// The encoder's tensors with the `encoder.` prefix removed, plus the
/// `num_batches_tracked` buffers torchvision's BatchNorm expects (set to `steps`).
///
/// # Errors
/// On tensor errors.
pub fn encoder_tensors(varmap: &VarMap, steps: usize) -> Result<HashMap<String, Tensor>> {
    let prefix = format!("{ENCODER_PREFIX}.");
    let mut out = HashMap::new();
    for (name, t) in varmap_tensors(varmap) {
        let Some(short) = name.strip_prefix(&prefix) else {
            continue;
        };
        if let Some(bn) = short.strip_suffix("running_mean") {
            out.insert(
                format!("{bn}num_batches_tracked"),
                Tensor::new(steps as i64, &Device::Cpu)?,
            );
        }
        out.insert(short.to_string(), t.to_device(&Device::Cpu)?);
    }
    Ok(out)
}

/// Writes [`encoder_tensors`] to `path` atomically (temporary file, then rename).
///
/// # Errors
/// If the file cannot be written.
pub fn export_encoder(varmap: &VarMap, steps: usize, path: &Path) -> Result<()> {
    let tensors = encoder_tensors(varmap, steps)?;
    if tensors.is_empty() {
        return Err(TrainError::config(
            "encoder",
            "the model has no encoder variables to export",
        ));
    }
    let tmp = path.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp).map_err(|e| TrainError::Checkpoint {
        path: tmp.clone(),
        msg: e.to_string(),
    })?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}
