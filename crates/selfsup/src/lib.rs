//! selfsup: self-supervised representation learning on candle.
//!
//! This facade only re-exports the layered crates:
//! - [`data`]: datasets, augmentations, view recipes, the seeded loader ([`selfsup_data`]).
//! - [`encoders`]: SmallCnn and ResNet backbones with seeded init ([`selfsup_encoders`]).
//! - [`contrastive`]: NT-Xent, InfoNCE, projection heads ([`selfsup_contrastive`]).
//! - [`pretext`]: heads and losses of the pretext tasks ([`selfsup_pretext`]).
//! - [`generative`]: decoders, generators, discriminators and GAN losses ([`selfsup_generative`]).
//! - [`train`]: methods, trainer, optimizers, checkpoints, evaluation ([`selfsup_train`]).
//! - [`dist`]: collectives of data-parallel runs, over MPI or in one process ([`selfsup_dist`]).
//!
//! Features: `cuda` and `metal` forward to every crate; `hub` adds candle-datasets' hub
//! loaders; `mpi` adds the MPI communicator (needs an MPI library and libclang to build).
//!
//! The README follows; its Rust example is compiled as a doctest.
#![doc = include_str!("../../../README.md")]

pub use selfsup_contrastive as contrastive;
pub use selfsup_data as data;
pub use selfsup_dist as dist;
pub use selfsup_encoders as encoders;
pub use selfsup_generative as generative;
pub use selfsup_kernels as kernels;
pub use selfsup_pretext as pretext;
pub use selfsup_train as train;
