//! Data for selfsup: decoding, datasets, augmentations, view recipes and a
//! seeded, resumable loader.
//!
//! This is the bottom layer of the workspace: it knows nothing of models. It
//! provides
//!
//! - **readers** for IDX (MNIST, Fashion-MNIST; raw or `.gz`), the CIFAR-10 /
//!   CIFAR-100 binary format, and folders of `.jpg`/`.png` images (flat =
//!   unlabelled, or one subfolder per class) — [`idx`], [`cifar`], [`folder`];
//! - **video** clips: files decoded by the `ffmpeg` CLI or folders of extracted
//!   frames, cut into clips with a held-out time span ([`clips`]), and the
//!   generated Moving Fashion-MNIST ([`moving_fmnist`]);
//! - an in-memory [`Dataset`] (`u8` CHW pixels, labels, normalisation
//!   constants) and [`load`], which finds a dataset by name in the lookup
//!   order `--data-dir`, `$SELFSUP_DATA/<name>`, `./data/<name>`,
//!   `/usr/share/datasets/<name>` ([`mod@locate`]);
//! - verified **downloads** from the official sources (SHA-256 checked,
//!   written through a temporary file and renamed) — [`mod@download`];
//! - torchvision-style **augmentations** (`RandomResizedCrop`, flip,
//!   `ColorJitter`, grayscale, Gaussian blur, solarize) — [`augment`];
//! - **view recipes**, such as the SimCLR pair of views (Chen et al. 2020) —
//!   [`views`];
//! - a seeded [`Loader`] whose batches depend only on (seed, epoch, position),
//!   never on thread scheduling, so training resumes bit-exactly mid-epoch;
//! - [`Rng`], the seedable, serialisable generator all randomness flows from.
//!
//! Errors are a [`DataError`] whose `Display` is one line naming the file, URL
//! or setting at fault.
//!
//! # Features
//! - `cuda`, `metal`: forwarded to candle-core (batches are created on the
//!   `Device` the caller passes).
//! - `hub`: the `hub` module, a second source through candle-datasets'
//!   Hugging Face Hub loaders (fashion-mnist, mnist, cifar10).
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//! use selfsup_data::{load, Loader, SimclrViews, Split};
//!
//! # fn main() -> selfsup_data::Result<()> {
//! let train = Arc::new(load("fashion-mnist", Split::Train, None)?);
//! let loader = Loader::new(train, Arc::new(SimclrViews::for_size(28)), 256, 0)?;
//! for batch in loader.epoch(0, 0, &candle_core::Device::Cpu) {
//!     let batch = batch?;
//!     assert_eq!(batch.views[0].dims(), &[256, 1, 28, 28]);
//! }
//! # Ok(())
//! # }
//! ```

pub mod augment;
pub mod cifar;
pub mod clips;
pub mod dataset;
pub mod download;
pub mod error;
pub mod folder;
#[cfg(feature = "hub")]
pub mod hub;
pub mod idx;
pub mod image;
pub mod image_grid;
pub mod loader;
pub mod locate;
pub mod moving_fmnist;
pub mod pretext;
pub mod rng;
pub mod video;
pub mod views;

pub use augment::ColorJitter;
pub use clips::VideoOptions;
pub use dataset::{load, load_with, Dataset, Split};
pub use download::{download, download_dataset};
pub use error::{DataError, Result};
pub use image::Image;
pub use loader::{Batch, Loader};
pub use locate::locate;
pub use rng::Rng;
pub use video::Video;
pub use views::{Identity, Sample, SimclrViews, ViewRecipe};
