//! `cargo xtask bench --dist`: the all-reduce bandwidth of a ResNet-18-sized gradient
//! and the step-time overhead of data parallelism, on [`RANKS`] MPI ranks. Started
//! without a launcher, it starts itself under `mpirun`, each rank with its share of
//! the cores.
use crate::bench::threads;
use anyhow::{bail, Context, Result};
use std::process::Command;

/// Parameters of torchvision's ResNet-18 (ImageNet head): the gradient all-reduced.
#[cfg(feature = "mpi")]
const RESNET18_PARAMS: usize = 11_689_512;
/// Ranks the benchmark runs on.
const RANKS: usize = 2;
/// Images per rank in the timed SimCLR steps.
#[cfg(feature = "mpi")]
const BATCH: usize = 128;

/// Measures as a rank of an MPI launch, or launches the ranks.
pub fn run(steps: usize) -> Result<()> {
    let launched = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if launched {
        measure(steps.max(1))
    } else {
        launch(steps)
    }
}

/// Runs this binary's `bench --dist` under `mpirun -np RANKS`.
fn launch(steps: usize) -> Result<()> {
    let version = Command::new("mpirun").arg("--version").output();
    let open_mpi = match version {
        Ok(out) => String::from_utf8_lossy(&out.stdout).contains("Open MPI"),
        Err(_) => bail!("bench --dist: mpirun not found; install an MPI (e.g. openmpi-bin)"),
    };
    let mut cmd = Command::new("mpirun");
    if open_mpi {
        cmd.arg("--oversubscribe").env("OMPI_MCA_plm", "isolated");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        if root {
            cmd.arg("--allow-run-as-root");
        }
    }
    let exe = std::env::current_exe().context("bench --dist: locating this binary")?;
    let status = cmd
        .args(["-np", &RANKS.to_string()])
        .arg(exe)
        .args(["bench", "--dist", "--steps", &steps.to_string()])
        .env("RAYON_NUM_THREADS", (threads() / RANKS).max(1).to_string())
        .status()
        .context("bench --dist: starting mpirun")?;
    if !status.success() {
        bail!("bench --dist: mpirun exited with {status}");
    }
    Ok(())
}

#[cfg(not(feature = "mpi"))]
fn measure(_steps: usize) -> Result<()> {
    bail!("bench --dist: this binary was built without MPI; build it with `--features mpi`")
}

#[cfg(feature = "mpi")]
fn measure(steps: usize) -> Result<()> {
    use crate::bench::group_step_seconds;
    use selfsup::dist::{Communicator, Mpi, SingleProcess};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let comm: Arc<dyn Communicator> = Arc::new(Mpi::init(Duration::from_secs(300))?);
    let world = comm.world_size();
    let mut grad = vec![1f32; RESNET18_PARAMS];
    comm.all_reduce_mean(&mut grad)?; // warm-up
    let start = Instant::now();
    for _ in 0..steps {
        comm.all_reduce_mean(&mut grad)?;
    }
    let seconds = start.elapsed().as_secs_f64() / steps as f64;
    let gbytes = (4 * RESNET18_PARAMS) as f64 / 1e9;
    // Bus bandwidth: what each link carries in a ring all-reduce, 2 (n - 1) / n of the data.
    let bus = gbytes / seconds * 2.0 * (world - 1) as f64 / world as f64;
    // Every rank times a single-process step at once (the machine equally loaded),
    // then the data-parallel one.
    let single = group_step_seconds(Arc::new(SingleProcess), "small-cnn", 1, 28, BATCH, steps)?;
    comm.barrier()?;
    let parallel = group_step_seconds(comm.clone(), "small-cnn", 1, 28, BATCH, steps)?;
    if !comm.is_leader() {
        return Ok(());
    }
    println!(
        "| {world} ranks, {} threads each | time | rate |",
        crate::bench::threads()
    );
    println!("|---|---|---|");
    println!(
        "| all-reduce (mean) of {RESNET18_PARAMS} f32 (ResNet-18 gradient, {:.1} MB) | {:.1} ms | {:.2} GB/s algorithm, {bus:.2} GB/s bus |",
        gbytes * 1e3,
        seconds * 1e3,
        gbytes / seconds
    );
    println!(
        "| SimCLR small-cnn step, B={BATCH} per process, alone | {:.1} ms | {:.0} img/s per process |",
        single * 1e3,
        BATCH as f64 / single
    );
    println!(
        "| same step as one of {world} ranks (sync BN, gathered negatives, averaged gradients) | {:.1} ms | {:.0} img/s in all; overhead {:+.1}% |",
        parallel * 1e3,
        (world * BATCH) as f64 / parallel,
        (parallel / single - 1.0) * 100.0
    );
    let json = serde_json::json!({
        "ranks": world,
        "threads_per_rank": crate::bench::threads(),
        "allreduce_floats": RESNET18_PARAMS,
        "allreduce_seconds": seconds,
        "allreduce_algorithm_gb_per_s": gbytes / seconds,
        "allreduce_bus_gb_per_s": bus,
        "step_batch_per_rank": BATCH,
        "single_process_step_seconds": single,
        "data_parallel_step_seconds": parallel,
        "overhead": parallel / single - 1.0,
    });
    crate::bench::write_results("bench_dist.json", &json)
}
