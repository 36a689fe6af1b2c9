//! A safe, bounds-checked wrapper around the `gemm` crate's `f32` product.
//!
//! `gemm::gemm` takes raw pointers and strides. This module is the crate's
//! only `unsafe` code: it checks that every element the product touches lies
//! inside the borrowed slices, and that the destination's elements are
//! distinct, before handing the pointers over.
#![allow(unsafe_code)]

use candle_core::{bail, Result};
use gemm::Parallelism;

/// How a product uses threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    /// On the calling thread only (for use inside parallel tasks).
    One,
    /// Split by `gemm` itself over rayon's pool, with this many threads
    /// (0: all of rayon's threads).
    Pool(usize),
}

/// A read-only strided matrix view: element `(i, j)` is
/// `data[i * rs + j * cs]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

/// The largest index a `rows x cols` view with these strides touches, or
/// `None` when it is empty or the index overflows.
fn last_index(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return None;
    }
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)
}

/// Whether a view fits in `len` elements (an empty view always fits).
fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    rows == 0 || cols == 0 || last_index(rows, cols, rs, cs).is_some_and(|i| i < len)
}

impl<'a> Mat<'a> {
    /// A strided view of `data`.
    ///
    /// # Errors
    ///
    /// Fails when the view reaches past the end of `data`.
    pub(crate) fn new(
        data: &'a [f32],
        (rows, cols): (usize, usize),
        (rs, cs): (usize, usize),
    ) -> Result<Self> {
        if !fits(data.len(), rows, cols, rs, cs) {
            bail!(
                "gemm: a {rows}x{cols} view with strides ({rs}, {cs}) does not fit {} values",
                data.len()
            )
        }
        Ok(Self {
            data,
            rows,
            cols,
            rs,
            cs,
        })
    }

    /// A row-major `rows x cols` view of the start of `data`.
    ///
    /// # Errors
    ///
    /// Fails when `data` is too short.
    pub(crate) fn rows(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, (rows, cols), (cols, 1))
    }

    /// The transposed view (no copy).
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// `dst (m x n, row-major with row stride ld) (+)= a (m x k) @ b (k x n)`.
///
/// With `accumulate` the product is added to `dst`; otherwise `dst` is
/// overwritten (and may hold anything before).
///
/// # Errors
///
/// Fails when the shapes disagree, `ld < n`, or `dst` is too short.
pub(crate) fn gemm(
    dst: &mut [f32],
    ld: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    accumulate: bool,
    threads: Threads,
) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        bail!("gemm: cannot multiply {m}x{k} by {}x{n}", b.rows)
    }
    // Row-major with ld >= n keeps destination elements distinct, which the
    // threaded product relies on.
    if ld < n || !fits(dst.len(), m, n, ld, 1) {
        bail!(
            "gemm: a {m}x{n} destination with row stride {ld} does not fit {} values",
            dst.len()
        )
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let parallelism = match threads {
        Threads::One => Parallelism::None,
        Threads::Pool(t) => Parallelism::Rayon(t),
    };
    let stride = |s: usize| {
        isize::try_from(s).map_err(|_| candle_core::Error::msg("gemm: stride too large"))
    };
    let (ld, a_rs, a_cs, b_rs, b_cs) = (
        stride(ld)?,
        stride(a.rs)?,
        stride(a.cs)?,
        stride(b.rs)?,
        stride(b.cs)?,
    );
    // SAFETY: `Mat::new` checked that every element of `a` and `b` lies in
    // its slice, and the check above that every element of the `m x n`
    // destination lies in `dst`, at distinct positions (ld >= n, column
    // stride 1). `dst` is borrowed mutably, so it aliases neither input.
    // `gemm` reads `dst` only when `read_dst` is set (it is then
    // initialised, being a `&mut [f32]`), and `f32` is a supported type.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ld,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// `c = a @ b` for row-major `f32` matrices, through the same `gemm` crate
/// and microkernels as this crate's convolution (and candle's CPU matmul).
///
/// `threads` is the thread count (`0`: all of rayon's threads, `1`: the
/// calling thread only). Useful to measure the machine's sgemm rate.
///
/// # Shapes
///
/// - `a`: `m * k` values, `b`: `k * n`, `c`: `m * n`.
///
/// # Errors
///
/// Fails when a slice is shorter than its shape.
pub fn sgemm(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
    threads: usize,
) -> Result<()> {
    let threads = if threads == 1 {
        Threads::One
    } else {
        Threads::Pool(threads)
    };
    gemm(
        c,
        n,
        Mat::rows(a, m, k)?,
        Mat::rows(b, k, n)?,
        false,
        threads,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn naive(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matches_naive_product_and_accumulates() -> Result<()> {
        let (m, k, n) = (7, 13, 5);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.5).collect();
        let mut c = vec![f32::NAN; m * n];
        for threads in [1, 0, 2] {
            sgemm(&a, &b, &mut c, (m, k, n), threads)?;
            assert_eq!(c, naive(&a, &b, (m, k, n)));
        }
        // Transposed views and accumulation: c += (b^T)^T-shaped product.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let bt_view = Mat::new(&bt, (n, k), (k, 1))?.t();
        gemm(&mut c, n, Mat::rows(&a, m, k)?, bt_view, true, Threads::One)?;
        let twice: Vec<f32> = naive(&a, &b, (m, k, n)).iter().map(|v| 2.0 * v).collect();
        assert_eq!(c, twice);
        Ok(())
    }

    #[test]
    fn rejects_views_that_do_not_fit() {
        let v = vec![0f32; 10];
        assert!(Mat::new(&v, (2, 5), (5, 1)).is_ok());
        assert!(Mat::new(&v, (2, 6), (5, 1)).is_err());
        assert!(Mat::new(&v, (0, 60), (5, 1)).is_ok());
        let mut c = vec![0f32; 5];
        assert!(sgemm(&v, &v, &mut c, (2, 5, 3), 1).is_err());
        assert!(sgemm(&v, &v, &mut c, (1, 2, 5), 1).is_ok());
        let a = Mat::rows(&v, 2, 5).unwrap();
        assert!(gemm(&mut c, 1, a, a.t(), false, Threads::One).is_err());
    }

    #[test]
    fn empty_inner_size_zeroes_the_destination() -> Result<()> {
        let mut c = vec![1f32; 6];
        sgemm(&[], &[], &mut c, (2, 0, 3), 1)?;
        assert_eq!(c, vec![0f32; 6]);
        Ok(())
    }
}
