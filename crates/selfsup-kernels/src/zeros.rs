//! Activation-sized output buffers, zeroed in parallel.

use rayon::prelude::*;

/// Below this many values a buffer is zeroed on the calling thread.
const PARALLEL_FROM: usize = 1 << 16;

/// `len` zeros, written by all of rayon's threads for large buffers.
///
/// `vec![0f32; len]` zeroes on the calling thread alone (a `memset` of the
/// reused heap, or first-touch page faults of fresh memory), while the other
/// threads wait: for the tens of MB of a CNN layer's output that showed as
/// several percent of a training step.
pub(crate) fn zeros(len: usize) -> Vec<f32> {
    if len < PARALLEL_FROM {
        return vec![0f32; len];
    }
    let mut v = Vec::with_capacity(len);
    v.par_extend(rayon::iter::repeat_n(0f32, len));
    v
}
