//! Learning-rate schedule: linear warmup, then cosine decay (Loshchilov & Hutter 2017).

/// Linear warmup from 0 to `base_lr` over `warmup_steps`, then cosine decay to
/// `final_fraction * base_lr` at `total_steps`.
#[derive(Clone, Debug, PartialEq)]
pub struct WarmupCosine {
    /// Peak learning rate.
    pub base_lr: f64,
    /// Steps of linear warmup.
    pub warmup_steps: usize,
    /// Length of the whole schedule.
    pub total_steps: usize,
    /// Final learning rate as a fraction of `base_lr`.
    pub final_fraction: f64,
}

impl WarmupCosine {
    /// The learning rate used for the update at `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.base_lr * (self.final_fraction + (1.0 - self.final_fraction) * cosine)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = WarmupCosine {
            base_lr: 1.0,
            warmup_steps: 10,
            total_steps: 110,
            final_fraction: 0.0,
        };
        assert!((s.lr(0) - 0.1).abs() < 1e-12);
        assert!((s.lr(9) - 1.0).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(60) - 0.5).abs() < 1e-12);
        assert!(s.lr(109) < 0.001);
        assert!(s.lr(500).abs() < 1e-12);
        let mut prev = f64::MAX;
        for step in 10..110 {
            assert!(s.lr(step) <= prev);
            prev = s.lr(step);
        }
    }
}
