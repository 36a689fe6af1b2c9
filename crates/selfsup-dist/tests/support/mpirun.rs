//! Launching a program under `mpirun` from a test: Open MPI's flags for containers,
//! a wall-clock bound, and both output streams. Shared by the MPI tests of
//! selfsup-dist and of the command line (`tests/dist_cli.rs`).
//!
//! With Open MPI, each run gets `--allow-run-as-root` (containers and CI often run as
//! root) and `--oversubscribe` (more ranks than cores), and `OMPI_MCA_plm=isolated`:
//! every rank runs on this machine, and without it Open MPI 4 refuses to start where
//! neither `ssh` nor `rsh` is installed, as in minimal containers. No other setting is
//! needed for small messages (Docker's seccomp profile, which blocks the shared-memory
//! single copy, matters only for large ones:
//! `OMPI_MCA_btl_vader_single_copy_mechanism=none`).
use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Whether `mpirun` is Open MPI's (which the flags and some expected messages are).
pub fn open_mpi() -> bool {
    static OPEN_MPI: OnceLock<bool> = OnceLock::new();
    *OPEN_MPI.get_or_init(|| {
        let out = Command::new("mpirun").arg("--version").output();
        match out {
            Ok(out) => String::from_utf8_lossy(&out.stdout).contains("Open MPI"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "mpirun is not on PATH: install an MPI launcher, e.g. \
                 `apt-get install openmpi-bin libopenmpi-dev` (CI installs it)"
            ),
            Err(e) => panic!("cannot run `mpirun --version`: {e}"),
        }
    })
}

/// How one `mpirun` ended.
pub struct Run {
    /// `None` if it overran its bound and was killed.
    pub status: Option<ExitStatus>,
    /// Its stdout, then its stderr.
    pub output: String,
    /// Wall-clock time until it ended.
    pub elapsed: Duration,
}

impl Run {
    /// How it ended and what it printed, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "mpirun {} after {:.1} s; output:\n{}",
            self.status
                .map_or_else(|| "overran and was killed".into(), |s| s.to_string()),
            self.elapsed.as_secs_f64(),
            self.output
        )
    }
}

/// Runs `program` on `np` ranks with `args` (and `extra` mpirun flags), killing
/// `mpirun` and its ranks (its process group) if it runs longer than `bound`. One
/// launch at a time per test process: Open MPI's launchers race to create their
/// session folder (`/tmp/ompi.<host>.<uid>`), and one that loses fails in `orte_init`.
pub fn mpirun(program: &Path, np: usize, extra: &[&str], args: &[&str], bound: Duration) -> Run {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut cmd = Command::new("mpirun");
    if open_mpi() {
        cmd.args(["--allow-run-as-root", "--oversubscribe"])
            .env("OMPI_MCA_plm", "isolated");
    }
    cmd.args(extra)
        .args(["-np", &np.to_string()])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd.spawn().expect("start mpirun");
    // Drain both pipes while waiting, so that a full pipe cannot stall the job.
    let (tx, rx) = mpsc::channel();
    let drain = |mut pipe: Box<dyn Read + Send>, index: usize| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = tx.send((index, String::from_utf8_lossy(&bytes).into_owned()));
        });
    };
    drain(Box::new(child.stdout.take().unwrap()), 0);
    drain(Box::new(child.stderr.take().unwrap()), 1);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for mpirun") {
            break Some(status);
        }
        if start.elapsed() > bound {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = start.elapsed();
    let mut parts = [String::new(), String::new()];
    for _ in 0..2 {
        // A rank outside the process group could keep a pipe open: do not wait for it.
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok((index, text)) => parts[index] = text,
            Err(_) => parts[1].push_str("\n(a pipe stayed open after mpirun ended)\n"),
        }
    }
    Run {
        status,
        output: parts.concat(),
        elapsed,
    }
}
