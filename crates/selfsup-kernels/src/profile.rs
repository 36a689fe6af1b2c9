//! A cheap, global per-op timer.
//!
//! Off by default. While off, [`scope`] costs one relaxed atomic load and
//! records nothing. While on, every [`Scope`] guard adds its wall time and one
//! call to the total of its name when it is dropped.
//!
//! The kernels of this crate open a scope for each op (for example
//! `conv.fwd`, `conv.bwd.x`, `bn.fwd`) and for each piece of it (for example
//! `conv.fwd.im2col`, `conv.fwd.gemm`). Op-level scopes are opened on the
//! calling thread and measure wall time. Piece-level scopes run inside the
//! op's parallel tasks, so their totals add up the time of every worker
//! thread and can exceed the op's wall time.
//!
//! ```
//! use selfsup_kernels::profile;
//! profile::enable(true);
//! {
//!     let _t = profile::scope("my.step");
//!     // ... work ...
//! }
//! for (name, time, calls) in profile::take() {
//!     println!("{name:<20} {:>8.2} ms {calls:>6}", time.as_secs_f64() * 1e3);
//! }
//! profile::enable(false);
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<BTreeMap<&'static str, (Duration, u64)>> = Mutex::new(BTreeMap::new());
static FLOPS: Mutex<BTreeMap<&'static str, f64>> = Mutex::new(BTreeMap::new());

/// The totals, even if a panicking thread poisoned the lock (they are plain
/// sums, always in a valid state).
fn totals() -> MutexGuard<'static, BTreeMap<&'static str, (Duration, u64)>> {
    TOTALS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Turns the timer on or off. Totals gathered so far are kept.
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the timer is on.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Starts timing `name`; the time is added to its total when the returned
/// guard is dropped. Does nothing while the timer is off.
pub fn scope(name: &'static str) -> Scope {
    Scope {
        name,
        start: is_enabled().then(Instant::now),
    }
}

fn flops() -> MutexGuard<'static, BTreeMap<&'static str, f64>> {
    FLOPS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Counts `n` floating-point operations of the op `name` (while enabled), so that
/// its rate can be set against its time.
pub fn add_flops(name: &'static str, n: f64) {
    if is_enabled() {
        *flops().entry(name).or_default() += n;
    }
}

/// Returns the operation counts gathered since the last [`take`], by name, and
/// resets them. Call it before [`take`], which resets them too.
pub fn take_flops() -> BTreeMap<String, f64> {
    std::mem::take(&mut *flops())
        .into_iter()
        .map(|(name, n)| (name.to_string(), n))
        .collect()
}

/// Returns the totals gathered so far, `(name, wall time, calls)`, longest
/// first, and resets them and the operation counts.
pub fn take() -> Vec<(String, Duration, u64)> {
    flops().clear();
    let taken = std::mem::take(&mut *totals());
    let mut out: Vec<_> = taken
        .into_iter()
        .map(|(name, (time, calls))| (name.to_string(), time, calls))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// A running timer made by [`scope`]; it records when dropped.
#[must_use = "the time is recorded when the guard is dropped"]
#[derive(Debug)]
pub struct Scope {
    name: &'static str,
    start: Option<Instant>,
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some(start) = self.start {
            let elapsed = start.elapsed();
            let mut t = totals();
            let entry = t.entry(self.name).or_default();
            entry.0 += elapsed;
            entry.1 += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::test_util::rand;
    use candle_core::Var;

    #[test]
    fn records_only_while_enabled_and_covers_the_ops() -> candle_core::Result<()> {
        // The only test that switches the timer; others may add entries
        // concurrently, so only names this test produces are checked.
        let _ = scope("profile.test.off");
        enable(true);
        for _ in 0..3 {
            let _t = scope("profile.test.on");
            std::thread::sleep(Duration::from_millis(1));
        }
        let x = Var::from_tensor(&rand(&[2, 3, 6, 6], 1)?)?;
        let w = Var::from_tensor(&rand(&[4, 3, 3, 3], 2)?)?;
        let (gamma, beta) = (
            Var::from_tensor(&rand(&[4], 3)?)?,
            Var::from_tensor(&rand(&[4], 4)?)?,
        );
        let y = crate::conv2d(&x, &w, 1, 1)?;
        let y = crate::batch_norm_train(&y, &gamma, &beta, 1e-5)?.0;
        let y = crate::max_pool2d(&crate::relu(&y)?, 3, 2, 1)?;
        y.sqr()?.sum_all()?.backward()?;
        enable(false);
        let _ = scope("profile.test.off");
        let counted = take_flops();
        // 2·N·O·Ho·Wo·(C·kh·kw) per direction.
        let conv = 2.0 * 2.0 * 4.0 * 36.0 * 27.0;
        for name in ["conv.fwd", "conv.bwd.x", "conv.bwd.w"] {
            assert!(
                counted.get(name).is_some_and(|&n| n >= conv),
                "{name}: {counted:?}"
            );
        }
        let all = take();
        let on = all.iter().find(|e| e.0 == "profile.test.on");
        assert!(on.is_some_and(|e| e.2 == 3 && e.1 >= Duration::from_millis(3)));
        assert!(!all.iter().any(|e| e.0 == "profile.test.off"));
        assert!(all.windows(2).all(|w| w[0].1 >= w[1].1));
        for name in [
            "conv.fwd",
            "conv.fwd.im2col",
            "conv.fwd.gemm",
            "conv.bwd.x",
            "conv.bwd.x.gemm",
            "conv.bwd.x.col2im",
            "conv.bwd.w",
            "conv.bwd.w.im2col",
            "conv.bwd.w.gemm",
            "bn.stats",
            "bn.fwd",
            "bn.bwd.sums",
            "bn.bwd.x",
            "relu.fwd",
            "relu.bwd",
            "maxpool.fwd",
            "maxpool.bwd",
        ] {
            assert!(
                all.iter().any(|e| e.0 == name && e.2 > 0),
                "{name} not recorded"
            );
        }
        Ok(())
    }
}
