//! Wire types shared by the server, the CLI and the runner.
//!
//! `types` mirrors Ollama's `/api/*` JSON field for field, `options` turns the free-form
//! `options` map into typed, validated values, `duration` parses `keep_alive`, and `runner`
//! is the line-delimited JSON protocol between the server and its runner processes.

pub mod cache;
pub mod duration;
pub mod options;
pub mod quantize;
pub mod runner;
pub mod text;
pub mod types;

pub use options::{OptionError, Options};
pub use types::*;
