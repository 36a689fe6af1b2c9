//! Finding a dataset on disk.
//!
//! Lookup order (see the workspace's DESIGN.md, "Data on an offline machine"):
//! 1. the `data_dir` argument (`--data-dir`): the folder itself, then
//!    `data_dir/<name>`;
//! 2. `$SELFSUP_DATA/<name>`;
//! 3. `./data/<name>`;
//! 4. `/usr/share/datasets/<name>` (where Debian's `dataset-*` packages install).

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// The system-wide folder Debian's dataset packages install into.
pub const SYSTEM_DATA_DIR: &str = "/usr/share/datasets";

/// The folders looked at for `name`, in lookup order.
pub fn candidates(name: &str, data_dir: Option<&Path>) -> Vec<PathBuf> {
    let env = std::env::var_os("SELFSUP_DATA").map(PathBuf::from);
    candidates_with(name, data_dir, env.as_deref(), Path::new(SYSTEM_DATA_DIR))
}

fn candidates_with(
    name: &str,
    data_dir: Option<&Path>,
    env: Option<&Path>,
    system: &Path,
) -> Vec<PathBuf> {
    let mut out = Vec::with_capacity(5);
    if let Some(d) = data_dir {
        out.push(d.to_path_buf());
        out.push(d.join(name));
    }
    if let Some(e) = env {
        if !e.as_os_str().is_empty() {
            out.push(e.join(name));
        }
    }
    out.push(Path::new("data").join(name));
    out.push(system.join(name));
    out
}

/// True if `dir` holds every file in `required` (each as named, or with
/// `.gz` appended).
fn has_all(dir: &Path, required: &[&str]) -> bool {
    dir.is_dir()
        && required
            .iter()
            .all(|f| dir.join(f).is_file() || dir.join(format!("{f}.gz")).is_file())
}

/// How to get `name` when it is missing.
pub fn hint(name: &str) -> String {
    let mut h = format!("get it with `cargo xtask download {name}`");
    if name == "fashion-mnist" {
        h.push_str(" or `apt-get install dataset-fashion-mnist`");
    }
    h.push_str(", or point --data-dir or $SELFSUP_DATA at a copy");
    h
}

/// Finds the folder holding dataset `name`: the first candidate (see the
/// module docs) that contains every file in `required_files`. A required file
/// also counts as present when only its `.gz` version exists, since IDX files
/// are read either way.
///
/// # Errors
/// [`DataError::NotFound`], on one line, listing every folder tried and how
/// to get the data (`cargo xtask download <name>`, and for fashion-mnist
/// `apt-get install dataset-fashion-mnist`).
pub fn locate(name: &str, data_dir: Option<&Path>, required_files: &[&str]) -> Result<PathBuf> {
    let env = std::env::var_os("SELFSUP_DATA").map(PathBuf::from);
    locate_with(
        name,
        data_dir,
        required_files,
        env.as_deref(),
        Path::new(SYSTEM_DATA_DIR),
    )
}

fn locate_with(
    name: &str,
    data_dir: Option<&Path>,
    required_files: &[&str],
    env: Option<&Path>,
    system: &Path,
) -> Result<PathBuf> {
    let tried = candidates_with(name, data_dir, env, system);
    match tried.iter().find(|d| has_all(d, required_files)) {
        Some(d) => Ok(d.clone()),
        None => Err(DataError::NotFound {
            name: name.to_string(),
            tried,
            hint: hint(name),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn mk(dir: &Path, files: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        for f in files {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
    }

    #[test]
    fn lookup_order_is_data_dir_env_local_system() {
        let t = tempfile::tempdir().unwrap();
        let (arg, env, sys) = (
            t.path().join("arg"),
            t.path().join("env"),
            t.path().join("sys"),
        );
        let req = ["a.bin", "b"];
        let find = |d: Option<&Path>| locate_with("ds", d, &req, Some(&env), &sys);

        // Nothing anywhere: every place is listed, in order.
        let e = find(Some(&arg)).unwrap_err();
        match &e {
            DataError::NotFound { tried, .. } => assert_eq!(
                tried,
                &vec![
                    arg.clone(),
                    arg.join("ds"),
                    env.join("ds"),
                    PathBuf::from("data/ds"),
                    sys.join("ds")
                ]
            ),
            other => panic!("{other:?}"),
        }

        // The system dir is the last resort.
        mk(&sys.join("ds"), &["a.bin", "b.gz"]);
        assert_eq!(find(Some(&arg)).unwrap(), sys.join("ds"));
        // A partial copy in the env dir does not count ...
        mk(&env.join("ds"), &["a.bin"]);
        assert_eq!(find(None).unwrap(), sys.join("ds"));
        // ... a complete one wins over the system dir.
        mk(&env.join("ds"), &["b"]);
        assert_eq!(find(None).unwrap(), env.join("ds"));
        // data_dir/<name> beats the env dir, and data_dir itself beats that.
        mk(&arg.join("ds"), &["a.bin", "b"]);
        assert_eq!(find(Some(&arg)).unwrap(), arg.join("ds"));
        mk(&arg, &["a.bin", "b"]);
        assert_eq!(find(Some(&arg)).unwrap(), arg);
    }

    #[test]
    fn not_found_message_lists_paths_and_how_to_get_data() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sys");
        let e = locate_with(
            "fashion-mnist",
            None,
            &["x"],
            Some(&t.path().join("e")),
            &sys,
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.starts_with("dataset `fashion-mnist` not found; tried "),
            "{e}"
        );
        assert!(e.contains(
            &t.path()
                .join("e")
                .join("fashion-mnist")
                .display()
                .to_string()
        ));
        assert!(e.contains("data/fashion-mnist"), "{e}");
        assert!(e.contains(&sys.join("fashion-mnist").display().to_string()));
        assert!(e.contains("cargo xtask download fashion-mnist"), "{e}");
        assert!(e.contains("apt-get install dataset-fashion-mnist"), "{e}");
        let e = locate_with("cifar10", None, &["x"], None, &sys)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cargo xtask download cifar10") && !e.contains("apt-get"),
            "{e}"
        );
    }
}
