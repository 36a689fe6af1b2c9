//! The memory-bank and queue operations of NPID, PIRL and MoCo at Fashion-MNIST and
//! ImageNet sizes, set against the machine's measured memory bandwidth.
use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use rayon::prelude::*;
use selfsup::contrastive::{bank_bytes, info_nce, MemoryBank, Queue};
use selfsup::data::Rng;
use std::time::Instant;

/// Feature size and negatives of the benchmark (NPID's and MoCo's defaults).
const DIM: usize = 128;
const NEGATIVES: usize = 4096;
/// Images per step.
const BATCH: usize = 256;
/// Bank sizes: the Fashion-MNIST training split and ImageNet-1k's.
pub const BANK_SIZES: [usize; 2] = [60_000, 1_281_167];

#[derive(serde::Serialize)]
pub struct BankResult {
    op: String,
    slots: usize,
    ms_per_step: f64,
    bytes_per_step: f64,
    gb_per_s: f64,
}

/// Mean seconds of `f` over `reps` runs after one warm-up run.
fn time<F: FnMut() -> Result<()>>(reps: usize, mut f: F) -> Result<f64> {
    f()?;
    let t = Instant::now();
    for _ in 0..reps {
        f()?;
    }
    Ok(t.elapsed().as_secs_f64() / reps as f64)
}

/// Copy bandwidth over a 512 MiB buffer on every thread, counting bytes read plus
/// bytes written, in GB/s.
pub fn memory_bandwidth() -> f64 {
    let len = 128 << 20;
    let src = vec![1.0f32; len];
    let mut dst = vec![0.0f32; len];
    let chunk = 1 << 16;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    2.0 * (len * 4) as f64 / best / 1e9
}

/// Times, per step of `BATCH` images, the bank update, the draw and gather of the K
/// negatives, the InfoNCE loss over them (forward and backward) and MoCo's enqueue,
/// for each bank size in `sizes`; prints a table and returns the rows.
pub fn bench_bank(sizes: &[usize], reps: usize, bandwidth: f64) -> Result<Vec<BankResult>> {
    let dev = Device::Cpu;
    let f32s = |n: usize| (n * DIM * 4) as f64;
    println!(
        "\n| bank op (D {DIM}, K {NEGATIVES}, batch {BATCH}) | slots | ms/step | MB moved | GB/s | % of {bandwidth:.1} GB/s copy |"
    );
    println!("|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for &n in sizes {
        let bank = MemoryBank::new(n, DIM, 0, &dev)?;
        let mut rng = Rng::new(1);
        let features = Tensor::randn(0f32, 1.0, (BATCH, DIM), &dev)?;
        let mut step = 0;
        let update = time(reps, || {
            let indices: Vec<usize> = (0..BATCH).map(|i| (step * BATCH + i * 7919) % n).collect();
            step += 1;
            Ok(bank.update(&indices, &features, 0.5)?)
        })?;
        let indices: Vec<usize> = (0..BATCH).collect();
        let gather = time(reps, || {
            bank.negatives(&indices, NEGATIVES, &mut rng)?;
            Ok(())
        })?;
        let negatives = bank.negatives(&indices, NEGATIVES, &mut rng)?;
        let positives = bank.get(&indices)?;
        let q = Var::from_tensor(&features)?;
        let loss = time(reps, || {
            info_nce(q.as_tensor(), &positives, &negatives, 0.07)?.backward()?;
            Ok(())
        })?;
        let mut queue = Queue::new(NEGATIVES, DIM, 0, &dev)?;
        let enqueue = time(reps, || Ok(queue.enqueue(&features)?))?;
        // Bytes each op must at least touch: update reads slots and features and writes
        // slots; the gather reads and writes K rows; the loss reads the K negatives and
        // writes and reads back the (B, K) logits and their gradient.
        let logits = (BATCH * NEGATIVES * 4) as f64;
        for (op, seconds, bytes) in [
            ("bank update", update, 3.0 * f32s(BATCH)),
            ("draw + gather K negatives", gather, 2.0 * f32s(NEGATIVES)),
            (
                "InfoNCE over K (fwd + bwd)",
                loss,
                2.0 * f32s(NEGATIVES) + 4.0 * logits,
            ),
            ("queue enqueue", enqueue, 2.0 * f32s(BATCH)),
        ] {
            let gb_per_s = bytes / seconds / 1e9;
            println!(
                "| {op} | {n} | {:.3} | {:.2} | {gb_per_s:.2} | {:.1}% |",
                seconds * 1e3,
                bytes / 1e6,
                100.0 * gb_per_s / bandwidth
            );
            rows.push(BankResult {
                op: op.into(),
                slots: n,
                ms_per_step: seconds * 1e3,
                bytes_per_step: bytes,
                gb_per_s,
            });
        }
        println!(
            "| (bank memory) | {n} | | {:.1} | | |",
            bank_bytes(n, DIM) as f64 / 1e6
        );
    }
    Ok(rows)
}
