//! Corral's model store, laid out as Ollama's so an existing Ollama store can be used as is:
//!
//! ```text
//! <root>/manifests/<host>/<namespace>/<model>/<tag>   Docker v2 manifest JSON
//! <root>/blobs/sha256-<hex>                           content-addressed layers and configs
//! ```
//!
//! Architecture Invariant: every path this crate opens is built from a validated [`Name`] or
//! [`Digest`], so no name or digest can address a file outside the root. Every file it writes
//! becomes visible only complete (temp file, fsync, rename), and blobs are hashed as they are
//! written and kept only when the hash matches the digest.

mod digest;
mod manifest;
mod name;
mod store;

pub use digest::{Digest, DigestError};
pub use manifest::{ConfigBlob, Layer, Manifest, RootFs, MEDIA_TYPE};
pub use name::{Name, NameError};
pub use store::{BlobWriter, ModelEntry, Store, StoreError, MAX_MANIFEST_BYTES};
