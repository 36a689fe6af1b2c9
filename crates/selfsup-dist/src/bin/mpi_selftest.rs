//! Checks the MPI communicator's collectives; run under `mpirun` (the tests in
//! `tests/mpi.rs` do):
//!
//! ```text
//! cargo build -p selfsup-dist --features mpi --bin mpi-selftest
//! mpirun --allow-run-as-root --oversubscribe -np 3 target/debug/mpi-selftest
//! ```
//!
//! Modes (first argument):
//! - `check` (default): every collective with rank-dependent data, exact results
//!   checked; prints `rank R ok` and exits 0, or prints what differed and aborts the job
//!   with code 1.
//! - `die-after-first SECONDS`: after one all-reduce, rank 1 kills itself with SIGKILL;
//!   the other ranks all-reduce again with a timeout of SECONDS and, on the timeout,
//!   print it and exit with code 3 (if `mpirun` has not killed them first).
//! - `stall-after-first SECONDS`: after one all-reduce, rank 1 sleeps instead of calling
//!   collectives; the others time out, print it and abort the job with code 3.
//! - `bench`: times all-reduces of a few sizes against rsmpi's blocking all-reduce.
use mpi::collective::SystemOperation;
use mpi::traits::CommunicatorCollectives as _;
use selfsup_dist::{Communicator, DistError, Mpi};
use std::io::Write as _;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map_or("check", String::as_str);
    let seconds = |default: f64| -> Duration {
        let s = args.get(1).map_or(Ok(default), |s| s.parse::<f64>());
        match s {
            Ok(s) if s > 0.0 => Duration::from_secs_f64(s),
            _ => usage(),
        }
    };
    match mode {
        "check" => check(),
        "die-after-first" => lose_rank_1(seconds(5.0), true),
        "stall-after-first" => lose_rank_1(seconds(5.0), false),
        "bench" => bench(),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: collectives [check | die-after-first SECONDS | stall-after-first SECONDS | bench]"
    );
    std::process::exit(2)
}

fn init(timeout: Duration) -> Mpi {
    match Mpi::init(timeout) {
        Ok(comm) => comm,
        Err(e) => {
            eprintln!("MPI init failed: {e}");
            std::process::exit(1)
        }
    }
}

/// Collects what differs from the expected results.
struct Checker {
    rank: usize,
    failures: Vec<String>,
}

impl Checker {
    fn eq(&mut self, what: &str, got: &[f32], want: &[f32]) {
        if got != want {
            self.failures
                .push(format!("{what}: got {got:?}, want {want:?}"));
        }
    }

    /// `got` must be `Ok`; returns its value.
    fn ok<T: Default>(&mut self, what: &str, got: Result<T, DistError>) -> T {
        got.unwrap_or_else(|e| {
            self.failures.push(format!("{what}: {e}"));
            T::default()
        })
    }

    /// `got` must be a usage error.
    fn usage_err<T: std::fmt::Debug>(&mut self, what: &str, got: Result<T, DistError>) {
        match got {
            Err(DistError::Usage(_)) => {}
            other => self
                .failures
                .push(format!("{what}: want a usage error, got {other:?}")),
        }
    }

    fn finish(self, comm: &Mpi) {
        if self.failures.is_empty() {
            println!("rank {} ok", self.rank);
            return;
        }
        for f in &self.failures {
            println!("rank {} FAILED {f}", self.rank);
        }
        let _ = std::io::stdout().flush();
        // Other ranks may wait in a collective this one skipped: end them all.
        comm.abort(1)
    }
}

fn check() {
    let mut comm = init(Duration::from_secs(60));
    let (r, n) = (comm.rank(), comm.world_size());
    let mut c = Checker {
        rank: r,
        failures: Vec::new(),
    };
    match Mpi::init(Duration::from_secs(1)) {
        Err(DistError::Backend(_)) => {}
        other => c
            .failures
            .push(format!("second init: want a backend error, got {other:?}")),
    }
    if comm.is_leader() != (r == 0) {
        c.failures.push("is_leader".into());
    }
    // Once with whole buffers, once in chunks of 3 elements.
    for chunk in [None, Some(3)] {
        if let Some(elems) = chunk {
            comm.set_chunk_elems(elems);
        }
        let tag = if chunk.is_some() { " (chunked)" } else { "" };

        // Sum of ranks, plus a per-element offset: exact in f32.
        let len = 10;
        let mut buf: Vec<f32> = (0..len).map(|i| (r + 1000 * i) as f32).collect();
        let ranks = (n * (n - 1) / 2) as f32;
        let want: Vec<f32> = (0..len).map(|i| ranks + (1000 * i * n) as f32).collect();
        c.ok(
            &format!("all_reduce_sum{tag}"),
            comm.all_reduce_sum(&mut buf),
        );
        c.eq(&format!("all_reduce_sum{tag}"), &buf, &want);

        // In double precision: 2^-40 steps that f32 would lose, still exact.
        let tiny = 2f64.powi(-40);
        let mut buf: Vec<f64> = (0..5).map(|i| 1.0 + tiny * (r + i) as f64).collect();
        let want: Vec<f64> = (0..5)
            .map(|i| n as f64 + tiny * (ranks as f64 + (n * i) as f64))
            .collect();
        c.ok(
            &format!("all_reduce_sum_f64{tag}"),
            comm.all_reduce_sum_f64(&mut buf),
        );
        if buf != want {
            c.failures.push(format!(
                "all_reduce_sum_f64{tag}: got {buf:?}, want {want:?}"
            ));
        }

        // Mean of 2·rank is n - 1.
        let mut buf = vec![2.0 * r as f32; 4];
        c.ok(
            &format!("all_reduce_mean{tag}"),
            comm.all_reduce_mean(&mut buf),
        );
        if buf.iter().any(|v| (v - (n - 1) as f32).abs() > 1e-6) {
            c.failures
                .push(format!("all_reduce_mean{tag}: got {buf:?}, want {}", n - 1));
        }

        // Rank order.
        let local: Vec<f32> = (0..7).map(|j| (100 * r + j) as f32).collect();
        let want: Vec<f32> = (0..n)
            .flat_map(|q| (0..7).map(move |j| (100 * q + j) as f32))
            .collect();
        let got = c.ok(&format!("all_gather{tag}"), comm.all_gather(&local));
        c.eq(&format!("all_gather{tag}"), &got, &want);
        let got = c.ok(&format!("all_gather empty{tag}"), comm.all_gather(&[]));
        c.eq(&format!("all_gather empty{tag}"), &got, &[]);

        // From the last rank, not 0 when n > 1.
        let root = n - 1;
        let mut buf: Vec<f32> = (0..8).map(|j| (r * 10 + j) as f32 - 0.5).collect();
        let want: Vec<f32> = (0..8).map(|j| (root * 10 + j) as f32 - 0.5).collect();
        c.ok(&format!("broadcast{tag}"), comm.broadcast(&mut buf, root));
        c.eq(&format!("broadcast{tag}"), &buf, &want);
        c.ok(&format!("barrier{tag}"), comm.barrier());
    }
    comm.set_chunk_elems(usize::MAX);

    // Misuse: every rank gets the same usage error, and the group stays usable.
    c.usage_err("broadcast root out of range", comm.broadcast(&mut [1.0], n));
    if n > 1 {
        let mut buf = vec![1.0; 2 + r];
        c.usage_err(
            "all_reduce_sum of unequal lengths",
            comm.all_reduce_sum(&mut buf),
        );
        c.usage_err("all_gather of unequal lengths", comm.all_gather(&buf));
        c.usage_err("broadcast of unequal lengths", comm.broadcast(&mut buf, 0));
    }
    let mut buf = [r as f32];
    c.ok("all_reduce_sum after misuse", comm.all_reduce_sum(&mut buf));
    c.eq(
        "all_reduce_sum after misuse",
        &buf,
        &[(n * (n - 1) / 2) as f32],
    );
    c.finish(&comm);
    drop(comm);
    // MPI is finalised now, and cannot be initialised again.
    if Mpi::init(Duration::from_secs(1)).is_ok() {
        println!("rank {r} FAILED init after finalize succeeded");
        std::process::exit(1);
    }
}

/// After one all-reduce, rank 1 dies (`die`) or stops calling collectives; the others
/// all-reduce again and must time out.
fn lose_rank_1(timeout: Duration, die: bool) {
    let comm = init(timeout);
    let (r, n) = (comm.rank(), comm.world_size());
    if n < 2 {
        eprintln!("needs at least 2 ranks");
        std::process::exit(2);
    }
    let mut buf = [1.0];
    if let Err(e) = comm.all_reduce_sum(&mut buf) {
        println!("rank {r}: first all-reduce failed: {e}");
        std::process::exit(1);
    }
    if buf[0] != n as f32 {
        println!("rank {r}: first all-reduce gave {}, want {n}", buf[0]);
        std::process::exit(1);
    }
    println!("rank {r}: first all-reduce ok");
    let _ = std::io::stdout().flush();
    if r == 1 {
        if die {
            println!("rank 1: killing itself with SIGKILL");
            let _ = std::io::stdout().flush();
            let pid = std::process::id().to_string();
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
            // Only if `kill` is missing.
            std::process::abort();
        }
        std::thread::sleep(timeout * 20);
        println!("rank 1: woke up without being aborted");
        std::process::exit(1);
    }
    let start = Instant::now();
    match comm.all_reduce_sum(&mut buf) {
        Err(e @ DistError::Timeout { .. }) => {
            println!("{e} (after {:.1} s)", start.elapsed().as_secs_f64());
            // The communicator is broken now: the next collective fails at once.
            match comm.barrier() {
                Err(DistError::Backend(e)) => println!("then: {e}"),
                other => {
                    println!("rank {r}: barrier after a timeout gave {other:?}");
                    std::process::exit(1);
                }
            }
            let _ = std::io::stdout().flush();
            if die {
                std::process::exit(3);
            }
            comm.abort(3)
        }
        other => {
            println!("rank {r}: second all-reduce gave {other:?}, want a timeout");
            std::process::exit(1);
        }
    }
}

/// Mean seconds of `f` over `reps` runs.
fn time(reps: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..reps {
        f();
    }
    start.elapsed().as_secs_f64() / f64::from(reps)
}

fn bench() {
    let comm = init(Duration::from_secs(120));
    let world = mpi::topology::SimpleCommunicator::world();
    for (elems, reps) in [(1, 2000), (1024, 1000), (25 * 1024 * 1024 / 4, 10)] {
        let mut buf = vec![1.0_f32; elems];
        let ours = time(reps, || {
            if let Err(e) = comm.all_reduce_sum(&mut buf) {
                eprintln!("{e}");
                comm.abort(1)
            }
        });
        let mut out = vec![0.0_f32; elems];
        let blocking = time(reps, || {
            world.all_reduce_into(&buf[..], &mut out[..], SystemOperation::sum());
        });
        if comm.is_leader() {
            println!(
                "all-reduce of {elems} f32: {:.1} µs (blocking MPI_Allreduce: {:.1} µs)",
                ours * 1e6,
                blocking * 1e6
            );
        }
    }
}
