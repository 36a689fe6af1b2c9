//! [`Communicator`] over MPI's `MPI_COMM_WORLD`, through rsmpi (the `mpi` crate).
//!
//! # Building
//! The `mpi` feature compiles `mpi-sys`, whose build script finds an MPI library with
//! `mpicc -show` (or pkg-config) and generates its bindings with bindgen, so it needs
//! an MPI implementation with headers (Debian/Ubuntu: `libopenmpi-dev`, or
//! `libmpich-dev`) and libclang (`libclang-dev`). Running needs `mpirun` (`openmpi-bin`
//! or `mpich`): `mpirun -np 4 <program>`; OpenMPI started as root also wants
//! `--allow-run-as-root`, and more ranks than cores `--oversubscribe`.
//!
//! # Timeouts
//! Every collective is MPI's non-blocking one (`MPI_Iallreduce`, `MPI_Iallgather`,
//! `MPI_Ibcast`, `MPI_Ibarrier`), polled with `MPI_Test` until it completes or the
//! timeout passes; then it returns [`DistError::Timeout`] and the communicator is
//! broken: MPI cannot cancel a collective, so the pending one is left to MPI, every
//! later collective fails at once, and the caller is expected to [`Communicator::abort`]
//! or exit. MPI's own errors (a lost connection, say) abort the job, as MPI's default
//! error handler does.
//!
//! Because a timed-out collective outlives the call, MPI works on heap buffers of its
//! own (kept for reuse) rather than on the caller's: each collective copies its data in
//! and its result out.
use crate::{check_root, Communicator, DistError, Result};
use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::request::{Request, StaticScope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator as _, CommunicatorCollectives as _, Root as _};
use mpi::Threading;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Polls that spin before the wait starts yielding the CPU.
const SPIN_POLLS: u32 = 100;
/// How long the wait yields between polls before it sleeps between them: MPI moves
/// data only while it is polled, so a collective that is merely large keeps its speed.
const YIELD_FOR: Duration = Duration::from_millis(100);
/// The sleep between polls once a collective has waited longer than [`YIELD_FOR`]
/// (typically for a slower rank): it leaves the CPU to that rank.
const SLEEP: Duration = Duration::from_millis(1);

/// One rank of the processes started together by `mpirun` (MPI's `MPI_COMM_WORLD`).
///
/// Owns MPI's initialisation: dropping it finalises MPI, which cannot be initialised
/// again in the process. Collectives take a lock, so that MPI is called by one thread
/// at a time (MPI's `MPI_THREAD_SERIALIZED`).
pub struct Mpi {
    /// `None` only while dropping a broken communicator (see [`Drop`]).
    universe: Option<Universe>,
    rank: usize,
    world_size: usize,
    timeout: Duration,
    chunk_elems: usize,
    state: Mutex<State>,
}

/// What the lock guards besides the MPI calls themselves.
#[derive(Default)]
struct State {
    /// The collective that timed out, once one has: the group is unusable then.
    broken: Option<&'static str>,
    f32: Staging<f32>,
    f64: Staging<f64>,
}

/// A send and a receive buffer for MPI.
type Buffers<T> = (Box<[T]>, Box<[T]>);

/// Heap buffers lent to MPI (send, receive), kept between collectives so that their
/// pages are not allocated and faulted in again on every call.
#[derive(Default)]
struct Staging<T> {
    send: Box<[T]>,
    recv: Box<[T]>,
}

impl<T: Copy + Default> Staging<T> {
    /// The buffers, at least `send` and `recv` elements long; [`Staging::put`] returns them.
    fn take(&mut self, send: usize, recv: usize) -> Buffers<T> {
        let grow = |b: Box<[T]>, n: usize| {
            if b.len() >= n {
                b
            } else {
                drop(b);
                vec![T::default(); n].into_boxed_slice()
            }
        };
        (
            grow(std::mem::take(&mut self.send), send),
            grow(std::mem::take(&mut self.recv), recv),
        )
    }

    fn put(&mut self, (send, recv): Buffers<T>) {
        (self.send, self.recv) = (send, recv);
    }
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("timeout", &self.timeout)
            .field("chunk_elems", &self.chunk_elems)
            .finish_non_exhaustive()
    }
}

impl Mpi {
    /// Most elements one MPI call may move per rank: MPI counts are `i32`, and half
    /// their range leaves room for implementations that add to counts internally.
    pub const MAX_CHUNK_ELEMS: usize = (i32::MAX / 2) as usize;

    /// Elements per MPI call by default (32 MiB of `f32`, above
    /// [`BUCKET_ELEMS`](crate::tensor::BUCKET_ELEMS)): longer buffers go in several
    /// calls, which bounds the buffers this communicator keeps.
    pub const DEFAULT_CHUNK_ELEMS: usize = 8 * 1024 * 1024;

    /// Initialises MPI (thread level `MPI_THREAD_SERIALIZED`) and joins
    /// `MPI_COMM_WORLD`; every collective gives up after `timeout`.
    ///
    /// # Errors
    /// [`DistError::Backend`] if MPI was already initialised in this process (it can be
    /// only once, even after an earlier [`Mpi`] was dropped) or lacks the thread level.
    pub fn init(timeout: Duration) -> Result<Self> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| {
                DistError::Backend(
                    "MPI was already initialised in this process; it can be only once".into(),
                )
            })?;
        if threading < Threading::Serialized {
            return Err(DistError::Backend(format!(
                "the MPI library provides thread level {threading:?}, below the Serialized \
                 that this communicator needs"
            )));
        }
        let world = universe.world();
        let count = |v: i32, what: &str| {
            usize::try_from(v).map_err(|_| DistError::Backend(format!("MPI gave {what} {v}")))
        };
        let rank = count(world.rank(), "rank")?;
        let world_size = count(world.size(), "world size")?;
        Ok(Self {
            universe: Some(universe),
            rank,
            world_size,
            timeout,
            chunk_elems: Self::DEFAULT_CHUNK_ELEMS,
            state: Mutex::default(),
        })
    }

    /// How long a collective waits for the other ranks.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets how long a collective waits for the other ranks.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sets the most elements that one MPI call moves (clamped to
    /// `1..=`[`Mpi::MAX_CHUNK_ELEMS`]; [`Mpi::DEFAULT_CHUNK_ELEMS`] by default); longer
    /// buffers go in several calls. All ranks must use the same value.
    pub fn set_chunk_elems(&mut self, elems: usize) {
        self.chunk_elems = elems.clamp(1, Self::MAX_CHUNK_ELEMS);
    }

    fn world(&self) -> SimpleCommunicator {
        match &self.universe {
            Some(universe) => universe.world(),
            // Only `drop` takes the universe out.
            None => SimpleCommunicator::world(),
        }
    }

    /// Runs `f` holding the MPI lock, unless an earlier collective timed out.
    fn locked<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(op) = state.broken {
            return Err(DistError::Backend(format!(
                "rank {}: an earlier {op} timed out, so the ranks no longer agree on which \
                 collective comes next; abort the job",
                self.rank
            )));
        }
        let result = f(&mut state);
        if let Err(DistError::Timeout { op, .. }) = &result {
            state.broken = Some(op);
        }
        result
    }

    /// Polls `request` until it completes (`Ok`) or the timeout passes (`Err` with the
    /// request, still pending, and the seconds waited). Spins, then yields, then sleeps
    /// between polls, so that a fast collective is not slowed and a long wait does not
    /// hold a core.
    fn wait<D: ?Sized>(
        &self,
        mut request: Request<'static, D>,
    ) -> std::result::Result<(), (Request<'static, D>, f64)> {
        let start = Instant::now();
        let mut polls = 0_u32;
        loop {
            request = match request.test() {
                Ok(_status) => return Ok(()),
                Err(pending) => pending,
            };
            let waited = start.elapsed();
            if waited >= self.timeout {
                return Err((request, waited.as_secs_f64()));
            }
            polls = polls.saturating_add(1);
            if polls < SPIN_POLLS {
                std::hint::spin_loop();
            } else if waited < YIELD_FOR {
                std::thread::yield_now();
            } else {
                std::thread::sleep(SLEEP.min(self.timeout - waited));
            }
        }
    }

    /// The timeout error for `op`, whose request is still pending.
    fn timed_out<D: ?Sized>(
        &self,
        op: &'static str,
        request: Request<'static, D>,
        seconds: f64,
    ) -> DistError {
        // MPI cannot cancel a collective, waiting for it may take forever (the peer is
        // gone), and dropping an rsmpi request panics: so the request is leaked, MPI keeps
        // its handle (and its buffers, see `lend`), and the caller, told of the timeout,
        // aborts or exits. `locked` marks the communicator broken.
        std::mem::forget(request);
        DistError::Timeout {
            rank: self.rank,
            op,
            seconds,
        }
    }

    /// Runs the immediate collective that `start` begins on the first `send_len`
    /// elements of `send` and the first `recv_len` of `recv` (it gets the world and
    /// those), waits for it, and gives the buffers back. They are lent to MPI as
    /// `'static` because on a timeout MPI keeps them after this returns: they are then
    /// leaked with the request, never freed.
    #[allow(unsafe_code)]
    fn lend<T, F>(
        &self,
        op: &'static str,
        (send, send_len): (Box<[T]>, usize),
        (recv, recv_len): (Box<[T]>, usize),
        start: F,
    ) -> Result<Buffers<T>>
    where
        T: Equivalence + 'static,
        F: FnOnce(&SimpleCommunicator, &'static [T], &'static mut [T]) -> Request<'static, [T]>,
    {
        if send_len > send.len() || recv_len > recv.len() {
            return Err(DistError::Backend(format!(
                "internal error: {op} of {send_len} → {recv_len} elements on buffers of {} \
                 and {}",
                send.len(),
                recv.len()
            )));
        }
        let send = Box::into_raw(send);
        let recv = Box::into_raw(recv);
        // SAFETY: both pointers come from `Box::into_raw` just above: valid, aligned,
        // initialised, and not reachable from anything else. The references made here are
        // handed to MPI through `start` and live in its request only; the boxes are
        // rebuilt below only once the request has completed, and never otherwise.
        let (send_all, recv_all) = unsafe { (&*send, &mut *recv) };
        let request = start(
            &self.world(),
            &send_all[..send_len],
            &mut recv_all[..recv_len],
        );
        match self.wait(request) {
            // SAFETY: `MPI_Test` reported the request complete and consumed it, so MPI no
            // longer touches the buffers and no reference to them is left; each pointer
            // becomes a box again exactly once.
            Ok(()) => Ok(unsafe { (Box::from_raw(send), Box::from_raw(recv)) }),
            Err((request, seconds)) => Err(self.timed_out(op, request, seconds)),
        }
    }

    /// [`Communicator::all_reduce_sum`] for `f32` or `f64`, staged in `staging`'s buffers.
    fn reduce_sum<T: Equivalence + Copy + Default + 'static>(
        &self,
        buf: &mut [T],
        staging: impl Fn(&mut State) -> &mut Staging<T>,
    ) -> Result<()> {
        const OP: &str = "all-reduce";
        self.locked(|state| {
            self.agree_len(OP, buf.len())?;
            for chunk in buf.chunks_mut(self.chunk_elems) {
                let k = chunk.len();
                let (mut send, recv) = staging(state).take(k, k);
                send[..k].copy_from_slice(chunk);
                let (send, recv) = self.lend(OP, (send, k), (recv, k), |world, send, recv| {
                    world.immediate_all_reduce_into(StaticScope, send, recv, SystemOperation::sum())
                })?;
                chunk.copy_from_slice(&recv[..k]);
                staging(state).put((send, recv));
            }
            Ok(())
        })
    }

    /// Checks with one small all-reduce that every rank passes `len` elements to `op`,
    /// so that all ranks return the same [`DistError::Usage`] instead of running a
    /// mismatched collective (which MPI does not detect: it hangs or corrupts data).
    fn agree_len(&self, op: &'static str, len: usize) -> Result<()> {
        let len = len as u64;
        let send: Box<[u64]> = Box::new([len, u64::MAX - len]);
        let (_, max) = self.lend(op, (send, 2), (Box::new([0, 0]), 2), |world, send, recv| {
            world.immediate_all_reduce_into(StaticScope, send, recv, SystemOperation::max())
        })?;
        let (longest, shortest) = (max[0], u64::MAX - max[1]);
        if longest == shortest {
            Ok(())
        } else {
            Err(DistError::Usage(format!(
                "rank {}: {op} of {len} elements, but the ranks' buffers have between \
                 {shortest} and {longest}; they must all have the same length",
                self.rank
            )))
        }
    }
}

impl Drop for Mpi {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if state.broken.is_some() {
            // `MPI_Finalize` would wait for the other ranks, which may be gone: skip it.
            // MPI ends with the process, and `mpirun` reports the rank's exit.
            std::mem::forget(self.universe.take());
        }
    }
}

impl Communicator for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        self.reduce_sum(buf, |state| &mut state.f32)
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.reduce_sum(buf, |state| &mut state.f64)
    }

    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        const OP: &str = "all-gather";
        let (n, ranks) = (local.len(), self.world_size);
        let total = n.checked_mul(ranks).ok_or_else(|| {
            DistError::Usage(format!(
                "all-gather of {n} elements from {ranks} ranks overflows"
            ))
        })?;
        // Each call receives `ranks` times what it sends.
        let per_rank = (self.chunk_elems / ranks).max(1);
        self.locked(|state| {
            self.agree_len(OP, n)?;
            let mut out = vec![0.0; total];
            for (i, chunk) in local.chunks(per_rank).enumerate() {
                let (offset, k) = (i * per_rank, chunk.len());
                let (mut send, recv) = state.f32.take(k, k * ranks);
                send[..k].copy_from_slice(chunk);
                let (send, recv) =
                    self.lend(OP, (send, k), (recv, k * ranks), |world, send, recv| {
                        world.immediate_all_gather_into(StaticScope, send, recv)
                    })?;
                for (rank, part) in recv[..k * ranks].chunks_exact(k).enumerate() {
                    let at = rank * n + offset;
                    out[at..at + k].copy_from_slice(part);
                }
                state.f32.put((send, recv));
            }
            Ok(out)
        })
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        const OP: &str = "broadcast";
        check_root(root, self.world_size)?;
        let root = i32::try_from(root).map_err(|_| DistError::Usage(format!("root {root}")))?;
        self.locked(|state| {
            self.agree_len(OP, buf.len())?;
            for chunk in buf.chunks_mut(self.chunk_elems) {
                let k = chunk.len();
                let (send, mut recv) = state.f32.take(0, k);
                recv[..k].copy_from_slice(chunk);
                let (send, recv) = self.lend(OP, (send, 0), (recv, k), |world, _, buf| {
                    world
                        .process_at_rank(root)
                        .immediate_broadcast_into(StaticScope, buf)
                })?;
                chunk.copy_from_slice(&recv[..k]);
                state.f32.put((send, recv));
            }
            Ok(())
        })
    }

    fn barrier(&self) -> Result<()> {
        self.locked(|_| match self.wait(self.world().immediate_barrier()) {
            Ok(()) => Ok(()),
            Err((request, seconds)) => Err(self.timed_out("barrier", request, seconds)),
        })
    }

    /// Aborts every rank of the world with `MPI_Abort`: `mpirun` kills the others and
    /// exits with `code`.
    fn abort(&self, code: i32) -> ! {
        self.world().abort(code)
    }
}
