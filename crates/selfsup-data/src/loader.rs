//! The seeded, resumable data loader.
//!
//! Randomness is keyed, never sequential: the order of epoch `e` comes from
//! `Rng::derive(seed, &[e])`, and sample `i` of batch `b` is augmented with
//! `Rng::derive(seed, &[e, b * batch_size + i, 1])`. Batches therefore do not
//! depend on thread scheduling, and an epoch can be resumed at any batch with
//! bit-identical results.
//!
//! In a data-parallel run ([`Loader::sharded`]) the `world` ranks split every
//! global batch of `world · batch_size` images in rank order, and sample keys
//! count positions in the global batch: a sample gets the same views whatever
//! the rank and world size.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::image::Image;
use crate::rng::Rng;
use crate::views::{Sample, ViewRecipe};

/// One batch of views.
#[derive(Debug)]
pub struct Batch {
    /// One tensor per view, each normalised with the dataset's mean/std.
    ///
    /// # Shapes
    /// Each `(N, C, H, W)`, `f32`, where `(C, H, W)` is that view's shape.
    pub views: Vec<Tensor>,
    /// The labels of the batch's images, if the dataset has labels.
    pub labels: Option<Vec<u32>>,
    /// The dataset indices of the batch's images, in batch order.
    pub indices: Vec<usize>,
    /// The recipe's free labels, when it has any ([`ViewRecipe::num_targets`] > 0).
    ///
    /// # Shapes
    /// `(N, num_targets)`, `u32`.
    pub targets: Option<Tensor>,
}

/// Shuffles, augments and batches a [`Dataset`] with a [`ViewRecipe`].
///
/// Incomplete last batches are dropped (`drop_last`), as contrastive losses
/// expect a fixed batch size.
#[derive(Clone)]
pub struct Loader {
    dataset: Arc<Dataset>,
    recipe: Arc<dyn ViewRecipe>,
    batch_size: usize,
    seed: u64,
    /// `(rank, world)`: which slice of each global batch this loader yields.
    shard: (usize, usize),
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("dataset", &self.dataset.name)
            .field("len", &self.dataset.len())
            .field("num_views", &self.recipe.num_views())
            .field("batch_size", &self.batch_size)
            .field("seed", &self.seed)
            .field("shard", &self.shard)
            .finish()
    }
}

/// A view's normalised values and their `(N, C, H, W)` shape.
type HostView = (Vec<f32>, (usize, usize, usize, usize));

/// CPU-side batch built by the background thread.
struct HostBatch {
    views: Vec<HostView>,
    labels: Option<Vec<u32>>,
    indices: Vec<usize>,
    targets: Vec<u32>,
}

impl HostBatch {
    /// Moves the batch's tensors to `device`.
    fn into_batch(self, device: &Device) -> Result<Batch> {
        let views = self
            .views
            .into_iter()
            .map(|(data, shape)| Tensor::from_vec(data, shape, device))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let n = self.indices.len();
        let targets = match self.targets.len() {
            0 => None,
            len => Some(Tensor::from_vec(self.targets, (n, len / n.max(1)), device)?),
        };
        Ok(Batch {
            views,
            labels: self.labels,
            indices: self.indices,
            targets,
        })
    }
}

impl Loader {
    /// A loader over `dataset`; incomplete last batches are dropped.
    ///
    /// # Errors
    /// [`DataError::Config`] if `batch_size` is 0 or larger than the dataset,
    /// if the dataset's mean/std do not have one entry per channel, or if the
    /// recipe's own [`ViewRecipe::validate`] fails.
    pub fn new(
        dataset: Arc<Dataset>,
        recipe: Arc<dyn ViewRecipe>,
        batch_size: usize,
        seed: u64,
    ) -> Result<Self> {
        if batch_size == 0 {
            return Err(DataError::config("batch_size", "must be at least 1"));
        }
        if batch_size > dataset.len() {
            return Err(DataError::config(
                "batch_size",
                format!(
                    "{batch_size} is larger than dataset {} ({} images)",
                    dataset.name,
                    dataset.len()
                ),
            ));
        }
        if dataset.mean.len() != dataset.channels || dataset.std.len() != dataset.channels {
            return Err(DataError::config(
                "dataset",
                format!(
                    "{} has {} channels but {} means and {} stds",
                    dataset.name,
                    dataset.channels,
                    dataset.mean.len(),
                    dataset.std.len()
                ),
            ));
        }
        if recipe.num_views() == 0 {
            return Err(DataError::config("views", "the recipe produces no views"));
        }
        recipe.validate()?;
        Ok(Self {
            dataset,
            recipe,
            batch_size,
            seed,
            shard: (0, 1),
        })
    }

    /// The loader of rank `rank` of `world` data-parallel ranks: batch `b` is slice
    /// `rank` of global batch `b`, which holds `world · batch_size` images of the
    /// epoch's order. Sample keys are positions in the global batch, so the union of
    /// all ranks' batches is exactly what one loader with `world · batch_size` yields.
    ///
    /// # Errors
    /// [`DataError::Config`] if `rank >= world` or the global batch is larger than
    /// the dataset.
    pub fn sharded(self, rank: usize, world: usize) -> Result<Self> {
        if rank >= world {
            return Err(DataError::config(
                "rank",
                format!("{rank} is not a rank of a group of {world}"),
            ));
        }
        let global = self.batch_size * world;
        if global > self.dataset.len() {
            return Err(DataError::config(
                "batch_size",
                format!(
                    "{world} ranks × {} is larger than dataset {} ({} images)",
                    self.batch_size,
                    self.dataset.name,
                    self.dataset.len()
                ),
            ));
        }
        Ok(Self {
            shard: (rank, world),
            ..self
        })
    }

    /// Full global batches per epoch (`len / (world · batch_size)`); incomplete
    /// last batches are dropped.
    pub fn batches_per_epoch(&self) -> usize {
        self.dataset.len() / (self.batch_size * self.shard.1)
    }

    /// The batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    /// The view recipe.
    pub fn recipe(&self) -> &Arc<dyn ViewRecipe> {
        &self.recipe
    }

    /// The shuffled order of epoch `epoch`: a permutation of `0..len` from
    /// `Rng::derive(seed, &[epoch])`.
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        Rng::derive(self.seed, &[epoch as u64]).permutation(self.dataset.len())
    }

    /// The batches of `epoch`, starting at batch `start` (for resuming).
    ///
    /// The views of each batch are built in parallel with rayon; the next
    /// batch is prepared on a background thread while the caller works on the
    /// current one. Shuffle order from `Rng::derive(seed, &[epoch])`; sample
    /// `i` of batch `b` uses `Rng::derive(seed, &[epoch, b * batch_size + i, 1])`,
    /// so `epoch(e, s, d)` yields exactly the tail of `epoch(e, 0, d)`.
    ///
    /// Dropping the iterator early stops the background thread.
    ///
    /// # Shapes
    /// Each view tensor is `(batch_size, C, H, W)`, `f32`, on `device`.
    ///
    /// # Errors
    /// Items are [`DataError::Config`] if `start > batches_per_epoch()` or the
    /// recipe returns views of inconsistent shape or channel count,
    /// [`DataError::Worker`] if the recipe panicked, and
    /// [`DataError::Candle`] if a tensor cannot be created on `device`. The
    /// iterator ends after the first error.
    pub fn epoch(
        &self,
        epoch: usize,
        start: usize,
        device: &Device,
    ) -> impl Iterator<Item = Result<Batch>> {
        let nb = self.batches_per_epoch();
        if start > nb {
            return EpochIter::failed(DataError::config(
                "start",
                format!("batch {start} is past the end of the epoch ({nb} batches)"),
            ));
        }
        let (tx, rx) = sync_channel::<Result<HostBatch>>(1);
        let this = self.clone();
        let handle = std::thread::Builder::new()
            .name(format!("selfsup-loader-e{epoch}"))
            .spawn(move || {
                let order = this.epoch_order(epoch);
                for b in start..nb {
                    let batch = this.build(&order, epoch, b);
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        break;
                    }
                }
            });
        match handle {
            Ok(handle) => EpochIter {
                rx: Some(rx),
                handle: Some(handle),
                device: device.clone(),
                remaining: nb - start,
                pending_error: None,
            },
            Err(e) => EpochIter::failed(DataError::Worker {
                msg: format!("cannot start the loader thread: {e}"),
            }),
        }
    }

    /// Builds batch `b` of an epoch whose order is `order`, on the CPU.
    fn build(&self, order: &[usize], epoch: usize, b: usize) -> Result<HostBatch> {
        let bs = self.batch_size;
        let (rank, world) = self.shard;
        let first = b * bs * world + rank * bs;
        let indices = order[first..first + bs].to_vec();
        let ds = &*self.dataset;
        let recipe = &*self.recipe;
        let samples: Vec<Sample> = indices
            .par_iter()
            .enumerate()
            .map(|(i, &idx)| {
                let mut rng = Rng::derive(self.seed, &[epoch as u64, (first + i) as u64, 1]);
                recipe.sample(&ds.image(idx), &mut rng)
            })
            .collect();
        let nt = recipe.num_targets();
        let mut targets = Vec::with_capacity(bs * nt);
        for s in &samples {
            if s.targets.len() != nt {
                return Err(DataError::config(
                    "views",
                    format!(
                        "the recipe promised {nt} targets per image but returned {}",
                        s.targets.len()
                    ),
                ));
            }
            targets.extend_from_slice(&s.targets);
        }
        let per_sample: Vec<Vec<Image>> = samples.into_iter().map(|s| s.views).collect();

        let nv = recipe.num_views();
        let mut views = Vec::with_capacity(nv);
        for v in 0..nv {
            let first = per_sample[0]
                .get(v)
                .ok_or_else(|| wrong_views(nv, per_sample[0].len()))?;
            let (c, h, w) = (first.channels, first.height, first.width);
            if c != ds.channels {
                return Err(DataError::config(
                    "views",
                    format!(
                        "view {v} has {c} channels but dataset {} has {}",
                        ds.name, ds.channels
                    ),
                ));
            }
            for s in &per_sample {
                let img = s.get(v).ok_or_else(|| wrong_views(nv, s.len()))?;
                if (img.channels, img.height, img.width) != (c, h, w) || img.data.len() != c * h * w
                {
                    return Err(DataError::config(
                        "views",
                        format!(
                            "view {v} shapes differ within a batch: {c}x{h}x{w} and {}x{}x{}",
                            img.channels, img.height, img.width
                        ),
                    ));
                }
            }
            let plane = h * w;
            let mut data = vec![0f32; bs * c * plane];
            data.par_chunks_mut(c * plane)
                .zip(per_sample.par_iter())
                .for_each(|(out, s)| {
                    for (ch, (o, src)) in out
                        .chunks_exact_mut(plane)
                        .zip(s[v].data.chunks_exact(plane))
                        .enumerate()
                    {
                        let (m, inv) = (ds.mean[ch], 1.0 / ds.std[ch]);
                        for (o, &p) in o.iter_mut().zip(src) {
                            *o = (p - m) * inv;
                        }
                    }
                });
            views.push((data, (bs, c, h, w)));
        }
        Ok(HostBatch {
            views,
            labels: ds.labels_of(&indices),
            indices,
            targets,
        })
    }
}

fn wrong_views(expected: usize, got: usize) -> DataError {
    DataError::config(
        "views",
        format!("the recipe promised {expected} views but returned {got}"),
    )
}

/// The iterator returned by [`Loader::epoch`].
struct EpochIter {
    rx: Option<Receiver<Result<HostBatch>>>,
    handle: Option<JoinHandle<()>>,
    device: Device,
    remaining: usize,
    pending_error: Option<DataError>,
}

impl EpochIter {
    fn failed(e: DataError) -> Self {
        Self {
            rx: None,
            handle: None,
            device: Device::Cpu,
            remaining: 0,
            pending_error: Some(e),
        }
    }

    fn worker_error(&mut self) -> DataError {
        let msg = match self.handle.take().map(JoinHandle::join) {
            Some(Err(payload)) => payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panicked".to_string()),
            _ => "stopped before the end of the epoch".to_string(),
        };
        DataError::Worker {
            msg: crate::error::one_line(&msg),
        }
    }
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if let Some(e) = self.pending_error.take() {
            return Some(Err(e));
        }
        if self.remaining == 0 {
            return None;
        }
        let received = self.rx.as_ref()?.recv();
        match received {
            Ok(Ok(host)) => {
                self.remaining -= 1;
                match host.into_batch(&self.device) {
                    Ok(batch) => Some(Ok(batch)),
                    Err(e) => {
                        self.remaining = 0;
                        Some(Err(e))
                    }
                }
            }
            Ok(Err(e)) => {
                self.remaining = 0;
                Some(Err(e))
            }
            Err(_) => {
                self.remaining = 0;
                Some(Err(self.worker_error()))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining + usize::from(self.pending_error.is_some());
        (n, Some(n))
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        // Closing the channel makes the producer's next send fail, so it stops
        // after at most the batch it is building.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::views::{Identity, SimclrViews};

    fn dataset(n: usize, c: usize) -> Arc<Dataset> {
        let side = 12;
        let mut r = Rng::new(77);
        let pixels: Vec<u8> = (0..n * c * side * side)
            .map(|_| r.below(256) as u8)
            .collect();
        let labels = (0..n as u32).map(|i| i % 3).collect();
        Arc::new(
            Dataset::new(
                "synthetic",
                c,
                side,
                side,
                pixels,
                Some(labels),
                3,
                vec![0.5; c],
                vec![0.25; c],
            )
            .unwrap(),
        )
    }

    fn simclr() -> Arc<dyn ViewRecipe> {
        let mut r = SimclrViews::for_size(10);
        r.blur_p = 0.5;
        Arc::new(r)
    }

    fn flat(b: &Batch) -> Vec<Vec<f32>> {
        b.views
            .iter()
            .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    }

    fn collect(l: &Loader, epoch: usize, start: usize) -> Vec<Batch> {
        l.epoch(epoch, start, &Device::Cpu)
            .map(|b| b.unwrap())
            .collect()
    }

    #[test]
    fn ranks_split_each_global_batch_with_the_views_one_loader_gives() {
        let whole = Loader::new(dataset(23, 3), simclr(), 6, 4).unwrap();
        let shards: Vec<Loader> = (0..3)
            .map(|r| {
                Loader::new(dataset(23, 3), simclr(), 2, 4)
                    .unwrap()
                    .sharded(r, 3)
                    .unwrap()
            })
            .collect();
        assert_eq!(shards[0].batches_per_epoch(), 3); // 23 / (3 · 2)
        let want = collect(&whole, 1, 1);
        let got: Vec<Vec<Batch>> = shards.iter().map(|l| collect(l, 1, 1)).collect();
        assert_eq!(want.len(), 2);
        for (b, w) in want.iter().enumerate() {
            let indices: Vec<usize> = got.iter().flat_map(|g| g[b].indices.clone()).collect();
            assert_eq!(indices, w.indices);
            for (view, wv) in w.views.iter().enumerate() {
                let parts: Vec<&Tensor> = got.iter().map(|g| &g[b].views[view]).collect();
                let joined = Tensor::cat(&parts, 0).unwrap();
                let diff = (joined - wv).unwrap().abs().unwrap().max_all().unwrap();
                assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
            }
        }
        let l = || Loader::new(dataset(23, 3), simclr(), 8, 4).unwrap();
        assert!(l().sharded(3, 3).is_err());
        assert!(
            l().sharded(0, 3).is_err(),
            "24 images per global batch > 23"
        );
    }

    #[test]
    fn batches_have_the_promised_shapes_and_cover_distinct_images() {
        let l = Loader::new(dataset(23, 3), simclr(), 5, 1).unwrap();
        assert_eq!(l.batches_per_epoch(), 4); // 23 / 5, the last 3 dropped
        let batches = collect(&l, 0, 0);
        assert_eq!(batches.len(), 4);
        let mut seen: Vec<usize> = Vec::new();
        for b in &batches {
            assert_eq!(b.views.len(), 2);
            for v in &b.views {
                assert_eq!(v.dims(), &[5, 3, 10, 10]);
                assert_eq!(v.dtype(), candle_core::DType::F32);
            }
            // Normalised [0,1] values with mean .5, std .25 lie in [-2, 2].
            assert!(flat(b).iter().flatten().all(|x| (-2.0..=2.0).contains(x)));
            let labels = b.labels.as_ref().unwrap();
            assert_eq!(
                labels,
                &b.indices.iter().map(|&i| i as u32 % 3).collect::<Vec<_>>()
            );
            seen.extend(&b.indices);
        }
        let n = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), n, "an image appeared twice in one epoch");
    }

    #[test]
    fn same_seed_same_batches_and_resume_is_bit_exact() {
        let ds = dataset(40, 1);
        let a = Loader::new(ds.clone(), simclr(), 8, 7).unwrap();
        let b = Loader::new(ds.clone(), simclr(), 8, 7).unwrap();
        let (ea, eb) = (collect(&a, 2, 0), collect(&b, 2, 0));
        assert_eq!(ea.len(), 5);
        for (x, y) in ea.iter().zip(&eb) {
            assert_eq!(x.indices, y.indices);
            assert_eq!(flat(x), flat(y));
        }
        // Starting at batch 3 yields exactly the tail of the full epoch.
        let tail = collect(&a, 2, 3);
        assert_eq!(tail.len(), 2);
        for (x, y) in tail.iter().zip(&ea[3..]) {
            assert_eq!(x.indices, y.indices);
            assert_eq!(flat(x), flat(y));
        }
        assert_eq!(collect(&a, 2, 5).len(), 0);
        let mut past = a.epoch(2, 6, &Device::Cpu);
        assert!(matches!(past.next(), Some(Err(DataError::Config { .. }))));
        assert!(past.next().is_none());

        // Another seed changes the augmentations.
        let c = Loader::new(ds, simclr(), 8, 8).unwrap();
        assert_ne!(flat(&collect(&c, 2, 0)[0]), flat(&ea[0]));
    }

    #[test]
    fn epochs_shuffle_differently() {
        let l = Loader::new(dataset(30, 1), Arc::new(Identity), 10, 3).unwrap();
        let order = |e| {
            collect(&l, e, 0)
                .into_iter()
                .flat_map(|b| b.indices)
                .collect::<Vec<_>>()
        };
        let (o0, o1) = (order(0), order(1));
        assert_ne!(o0, o1);
        assert_eq!(o0, l.epoch_order(0));
        let mut sorted = o1.clone();
        sorted.sort();
        assert_eq!(sorted, (0..30).collect::<Vec<_>>());
    }

    #[test]
    fn identity_views_equal_batch_tensor() {
        let ds = dataset(12, 3);
        let l = Loader::new(ds.clone(), Arc::new(Identity), 4, 0).unwrap();
        for b in collect(&l, 0, 0) {
            let want = ds.batch_tensor(&b.indices, &Device::Cpu).unwrap();
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (x, y) in flat(&b)[0].iter().zip(&want) {
                assert!((x - y).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn bad_settings_are_config_errors() {
        let ds = dataset(10, 1);
        for bs in [0, 11] {
            let e = Loader::new(ds.clone(), simclr(), bs, 0).unwrap_err();
            assert!(
                matches!(e, DataError::Config { ref setting, .. } if setting == "batch_size"),
                "{e}"
            );
        }
        assert!(Loader::new(ds.clone(), simclr(), 10, 0).is_ok());
        let mut bad = SimclrViews::for_size(10);
        bad.hflip_p = -1.0;
        assert!(Loader::new(ds, Arc::new(bad), 2, 0).is_err());
    }

    struct Panicky;
    impl ViewRecipe for Panicky {
        fn num_views(&self) -> usize {
            1
        }
        fn views(&self, _img: &Image, _rng: &mut Rng) -> Vec<Image> {
            panic!("boom in recipe")
        }
    }

    struct WrongChannels;
    impl ViewRecipe for WrongChannels {
        fn num_views(&self) -> usize {
            1
        }
        fn views(&self, img: &Image, _rng: &mut Rng) -> Vec<Image> {
            vec![Image::zeros(img.channels + 1, 2, 2)]
        }
    }

    /// One view, and as targets the image's first pixel and a promised count.
    struct Tagged(usize);
    impl ViewRecipe for Tagged {
        fn num_views(&self) -> usize {
            1
        }
        fn views(&self, img: &Image, rng: &mut Rng) -> Vec<Image> {
            self.sample(img, rng).views
        }
        fn num_targets(&self) -> usize {
            2
        }
        fn sample(&self, img: &Image, _rng: &mut Rng) -> Sample {
            let first = (img.data[0] * 255.0).round() as u32;
            Sample {
                views: vec![img.clone()],
                targets: vec![first; self.0],
            }
        }
    }

    #[test]
    fn targets_travel_with_their_images() {
        let ds = dataset(8, 1);
        let l = Loader::new(ds.clone(), Arc::new(Tagged(2)), 4, 3).unwrap();
        for batch in l.epoch(0, 0, &Device::Cpu) {
            let batch = batch.unwrap();
            let t = batch.targets.unwrap().to_vec2::<u32>().unwrap();
            assert_eq!(t.len(), 4);
            for (row, &idx) in t.iter().zip(&batch.indices) {
                let first = u32::from(ds.pixels[idx * 144]);
                assert_eq!(row, &vec![first, first]);
            }
        }
        assert!(Loader::new(ds.clone(), simclr(), 4, 0)
            .unwrap()
            .epoch(0, 0, &Device::Cpu)
            .all(|b| b.unwrap().targets.is_none()));
        let l = Loader::new(ds, Arc::new(Tagged(3)), 4, 0).unwrap();
        let e = l.epoch(0, 0, &Device::Cpu).next().unwrap().unwrap_err();
        assert!(e.to_string().contains("promised 2 targets"), "{e}");
    }

    #[test]
    fn recipe_failures_surface_as_errors() {
        let ds = dataset(8, 1);
        let l = Loader::new(ds.clone(), Arc::new(Panicky), 4, 0).unwrap();
        let items: Vec<_> = l.epoch(0, 0, &Device::Cpu).collect();
        assert_eq!(items.len(), 1);
        match &items[0] {
            Err(DataError::Worker { msg }) => assert!(msg.contains("boom in recipe"), "{msg}"),
            other => panic!("{other:?}"),
        }
        let l = Loader::new(ds.clone(), Arc::new(WrongChannels), 4, 0).unwrap();
        let e = l
            .epoch(0, 0, &Device::Cpu)
            .next()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("view 0 has 2 channels but dataset synthetic has 1"),
            "{e}"
        );

        // Dropping an iterator early does not hang.
        let l = Loader::new(ds, simclr(), 2, 0).unwrap();
        let mut it = l.epoch(0, 0, &Device::Cpu);
        assert!(it.next().unwrap().is_ok());
        drop(it);
    }
}
