//! glibc allocator settings for the training binary.
//!
//! Candle allocates a fresh buffer for every op's output. glibc serves
//! blocks above its mmap threshold (128 KiB at first) with `mmap` and
//! returns them on free, so every activation-sized buffer (tens of MB for a
//! small-cnn step) starts as untouched pages that the kernel must fault in
//! and zero, again each step. Raising the threshold to its 32 MiB maximum
//! and keeping freed memory at the top of the heap lets these buffers be
//! reused. Measured on the small-cnn SimCLR step in docs/benchmarks.md.
#![allow(unsafe_code)]

/// Keeps blocks up to 32 MiB on the heap and freed memory in the process.
/// A no-op outside glibc.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
