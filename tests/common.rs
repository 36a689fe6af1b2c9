//! What the end-to-end tests of the `xtask` binary share.
use std::process::{Command, Output};

/// Runs `xtask` with `args`, without `$SELFSUP_DATA`.
pub fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env_remove("SELFSUP_DATA")
        .output()
        .unwrap()
}

/// Asserts a failed run (exit code 1) with exactly one line on stderr containing every
/// `needle`, and no panic.
pub fn assert_clean_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    for n in needles {
        assert!(
            lines[0].contains(n),
            "{:?} does not mention {n:?}",
            lines[0]
        );
    }
}
