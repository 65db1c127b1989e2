//! Pull and push models over the OCI distribution ("registry v2") protocol, which Ollama's
//! registry, Hugging Face's `hf.co` and any Docker registry speak.
//!
//! - [`pull`]: manifest first (size-limited, parsed, digests validated), then each missing
//!   blob in parallel ranged parts written into a download file that survives interruption
//!   (its progress record lets the next pull resume), then every blob hashed and moved into
//!   place, and the manifest written last, atomically.
//! - [`push`]: `HEAD` each blob, mount it from another repository of the same registry when
//!   one of ours has it, otherwise upload it; then `PUT` the manifest.
//!
//! Architecture Invariant: nothing a registry sends becomes visible in the store before it
//! is verified; a failed or hostile transfer leaves the store's models and blobs as they were.

pub mod auth;
mod client;
mod pull;
mod push;

use std::sync::Arc;

pub use client::{error_chain, Options, Repo};
pub use pull::pull;
pub use push::push;

/// A progress line, as `/api/pull` and `/api/push` stream them.
pub type Progress = corral_api::ProgressResponse;

/// Where progress goes.
pub type Sink = Arc<dyn Fn(Progress) + Send + Sync>;

fn status(sink: &Sink, s: impl Into<String>) {
    sink(Progress {
        status: s.into(),
        ..Default::default()
    })
}

fn layer_progress(sink: &Sink, verb: &str, digest: &corral_store::Digest, total: u64, done: u64) {
    sink(Progress {
        status: format!("{verb} {}", digest.short()),
        digest: Some(digest.to_string()),
        total: Some(total),
        completed: Some(done),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Ollama's exact words, which clients match on.
    #[error("pull model manifest: file does not exist")]
    ManifestNotFound,
    #[error("{0}")]
    Unauthorized(String),
    /// The connection failed or broke; worth another try.
    #[error("{0}")]
    Transport(String),
    /// Nothing arrived for the stall timeout; worth another try.
    #[error("{0}")]
    Stalled(String),
    /// The registry sent something we refuse to store.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] corral_store::StoreError),
    #[error("{0}")]
    Other(String),
}

impl RegistryError {
    fn retryable(&self) -> bool {
        matches!(
            self,
            RegistryError::Transport(_) | RegistryError::Stalled(_)
        )
    }

    /// Whether the model (not the registry) was missing.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            RegistryError::ManifestNotFound
                | RegistryError::Store(corral_store::StoreError::NotFound(_))
        )
    }
}
