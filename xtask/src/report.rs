//! `eval.json` and the summary table.
use anyhow::Result;
use selfsup::train::{checkpoint::write_atomic, EvalReport, TrainConfig};
use std::path::Path;

/// The contents of a run's `eval.json`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct EvalFile {
    pub method: String,
    pub dataset: String,
    pub encoder: String,
    pub epochs: f64,
    pub steps: usize,
    /// Top-1 of the linear probe on the test split, percent (none for unlabelled data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_probe_top1: Option<f64>,
    /// Top-1 of weighted kNN (k = 200) on the test split, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knn_top1: Option<f64>,
    /// The pretext task's own top-1 on the test split, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretext_top1: Option<f64>,
    /// The pretext task's reconstruction MSE on the test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretext_mse: Option<f64>,
    /// The method's trivial reference predictor on the same test samples (next-frame:
    /// copying the last frame), in the pretext measure's unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretext_baseline: Option<f64>,
    pub train_seconds: f64,
}

impl EvalFile {
    pub fn new(
        cfg: &TrainConfig,
        steps: usize,
        per_epoch: usize,
        train_seconds: f64,
        r: &EvalReport,
    ) -> Self {
        Self {
            method: cfg.method.clone(),
            dataset: cfg.dataset.clone(),
            encoder: cfg.encoder.clone(),
            epochs: if per_epoch == 0 {
                0.0
            } else {
                steps as f64 / per_epoch as f64
            },
            steps,
            linear_probe_top1: r.linear_probe_top1,
            knn_top1: r.knn_top1,
            pretext_top1: r.pretext_top1,
            pretext_mse: r.pretext_mse,
            pretext_baseline: r.pretext_baseline,
            train_seconds,
        }
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        write_atomic(
            &dir.join("eval.json"),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )?;
        Ok(())
    }
}

/// A percentage, or "n/a" for a probe that was not run.
pub fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.2}%"))
}

/// A difference of two percentages, or "n/a".
fn gain(run: Option<f64>, base: Option<f64>) -> String {
    match (run, base) {
        (Some(r), Some(b)) => format!("{:+.2}", r - b),
        _ => "n/a".into(),
    }
}

pub fn print_summary(run: &EvalFile, baseline: &EvalReport) {
    println!();
    println!(
        "| encoder on {} | linear probe top-1 | kNN top-1 |",
        run.dataset
    );
    println!("|---|---|---|");
    println!(
        "| {} {} ({} steps, {:.1} epochs, {:.0} s) | {} | {} |",
        run.method,
        run.encoder,
        run.steps,
        run.epochs,
        run.train_seconds,
        percent(run.linear_probe_top1),
        percent(run.knn_top1)
    );
    println!(
        "| random-init {} | {} | {} |",
        run.encoder,
        percent(baseline.linear_probe_top1),
        percent(baseline.knn_top1)
    );
    println!(
        "| gain over random init | {} | {} |",
        gain(run.linear_probe_top1, baseline.linear_probe_top1),
        gain(run.knn_top1, baseline.knn_top1)
    );
    if let Some(top1) = run.pretext_top1 {
        println!(
            "\npretext task ({}) on the test split: top-1 {top1:.2}%",
            run.method
        );
    }
    if let Some(mse) = run.pretext_mse {
        println!(
            "\npretext task ({}) on the test split: MSE {mse:.4}",
            run.method
        );
    }
    if let Some(base) = run.pretext_baseline {
        println!("trivial baseline on the same test samples: {base:.4}");
    }
}
