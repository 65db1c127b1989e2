//! `pull`: manifest, then blobs in resumable parallel parts, then verification.

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use corral_store::{Digest, Layer, Manifest, Name, Store, MAX_MANIFEST_BYTES};
use futures::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::client::{error_chain, read_limited, Options, Repo};
use crate::{layer_progress, status, RegistryError, Sink};

/// Manifest types we ask for: Docker v2 (what Ollama serves) and OCI.
const ACCEPTS: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";

/// Largest blob a manifest may name (1 TiB): a bigger size is a hostile manifest.
const MAX_BLOB_SIZE: u64 = 1 << 40;

/// Most layers a manifest may have.
const MAX_LAYERS: usize = 256;

/// One download per blob at a time, across concurrent pulls.
static DOWNLOADS: LazyLock<std::sync::Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

/// Pull `name` into `store`. Returns the manifest's digest (the model's ID).
pub async fn pull(
    store: &Store,
    name: &Name,
    options: Options,
    sink: &Sink,
) -> Result<Digest, RegistryError> {
    status(sink, "pulling manifest");
    let repo = Arc::new(Repo::new(name, options, false)?);
    let url = repo.url(&format!("manifests/{}", name.tag));
    let resp = repo
        .send("pull model manifest", |c| {
            c.get(url.clone()).header(ACCEPT, ACCEPTS)
        })
        .await?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Err(RegistryError::ManifestNotFound);
    }
    if !resp.status().is_success() {
        return Err(repo.unexpected("pull model manifest", resp).await);
    }
    let bytes = read_limited(resp, MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| RegistryError::Invalid(format!("pull model manifest: {e}")))?;
    let manifest = parse_manifest(&bytes)?;
    if manifest.layer("model").is_none() {
        return Err(RegistryError::Invalid(
            "pull model manifest: the manifest has no model layer (application/vnd.ollama.image.model)".into(),
        ));
    }

    let blobs = manifest.unique_blobs();
    let mut fetched = Vec::new();
    // Held until the blobs are in place, so a concurrent pull cannot restart a download
    // that is being verified.
    let mut guards = Vec::new();
    for layer in &blobs {
        if store.has_blob(&layer.digest) {
            layer_progress(sink, "pulling", &layer.digest, layer.size, layer.size);
            continue;
        }
        let lock = DOWNLOADS
            .lock()
            .expect("downloads lock")
            .entry(layer.digest.clone())
            .or_default()
            .clone();
        guards.push(lock.lock_owned().await);
        if store.has_blob(&layer.digest) {
            layer_progress(sink, "pulling", &layer.digest, layer.size, layer.size);
            continue;
        }
        download(&repo, store, layer, sink).await?;
        fetched.push((*layer).clone());
    }

    // Every download is hashed before any is moved into place, so a bad one leaves no blob.
    status(sink, "verifying sha256 digest");
    for layer in &fetched {
        let (s, d) = (store.clone(), layer.digest.clone());
        tokio::task::spawn_blocking(move || s.verify_download(&d))
            .await
            .map_err(|e| RegistryError::Other(e.to_string()))?
            .map_err(|e| match e {
                corral_store::StoreError::DigestMismatch { expected, actual } => {
                    RegistryError::Invalid(format!(
                        "digest mismatch: the registry sent bytes for {expected} that hash to {actual}; the download was discarded"
                    ))
                }
                other => other.into(),
            })?;
    }
    // A model layer must be a GGUF that reads through to its last tensor, as `create` checks
    // its files: otherwise the model would pull fine and fail at its first load.
    for layer in fetched
        .iter()
        .filter(|l| l.kind() == "model" || l.kind() == "adapter")
    {
        let path = store.download_path(&layer.digest);
        let read = tokio::task::spawn_blocking(move || corral_gguf::read(&path))
            .await
            .map_err(|e| RegistryError::Other(e.to_string()))?;
        if let Err(e) = read {
            let _ = std::fs::remove_file(store.download_path(&layer.digest));
            return Err(RegistryError::Invalid(format!(
                "the registry's {} layer {} is not a complete GGUF file: {e}",
                layer.kind(),
                layer.digest
            )));
        }
    }
    for layer in &fetched {
        store.commit_download(&layer.digest)?;
    }
    drop(guards);
    status(sink, "writing manifest");
    let digest = store.put_manifest_raw(name, &bytes)?;
    status(sink, "success");
    Ok(digest)
}

/// Parse and check a manifest from a registry: valid digests (never a path), sane sizes.
fn parse_manifest(bytes: &[u8]) -> Result<Manifest, RegistryError> {
    let bad = |why: String| {
        RegistryError::Invalid(format!(
            "pull model manifest: the registry sent an invalid manifest: {why}"
        ))
    };
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if m.layers.is_empty() {
        return Err(bad("it has no layers".into()));
    }
    if m.layers.len() > MAX_LAYERS {
        return Err(bad(format!(
            "{} layers (at most {MAX_LAYERS})",
            m.layers.len()
        )));
    }
    for l in m.layers.iter().chain(std::iter::once(&m.config)) {
        if l.size > MAX_BLOB_SIZE {
            return Err(bad(format!("blob {} claims {} bytes", l.digest, l.size)));
        }
    }
    Ok(m)
}

/// The progress record of a download, kept beside it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct DownloadState {
    size: u64,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Part {
    offset: u64,
    size: u64,
    /// Bytes from `offset` already written.
    done: u64,
}

impl DownloadState {
    fn fresh(size: u64, o: &Options) -> Self {
        let n = size
            .div_ceil(o.part_size.max(1))
            .clamp(1, o.max_parts.max(1));
        let each = size.div_ceil(n).max(1);
        let mut parts = Vec::new();
        let mut offset = 0;
        while offset < size {
            let len = each.min(size - offset);
            parts.push(Part {
                offset,
                size: len,
                done: 0,
            });
            offset += len;
        }
        DownloadState { size, parts }
    }

    /// A record read back is trusted only if its parts tile the blob exactly.
    fn valid(&self, size: u64) -> bool {
        let mut at = 0;
        for p in &self.parts {
            if p.offset != at || p.done > p.size {
                return false;
            }
            at += p.size;
        }
        self.size == size && at == size
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> RegistryError {
    move |e| RegistryError::Other(format!("{what}: {e}"))
}

/// Fetch one blob into its download file, resuming what an earlier pull left.
async fn download(
    repo: &Arc<Repo>,
    store: &Store,
    layer: &Layer,
    sink: &Sink,
) -> Result<(), RegistryError> {
    let path = store.download_path(&layer.digest);
    let state_path = store.download_state_path(&layer.digest);
    let resumed = std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<DownloadState>(&b).ok())
        .filter(|s| s.valid(layer.size))
        .filter(|_| std::fs::metadata(&path).is_ok_and(|m| m.len() == layer.size));
    let state = match resumed {
        Some(s) => {
            let done: u64 = s.parts.iter().map(|p| p.done).sum();
            tracing::info!(digest = %layer.digest, done, total = layer.size, "resuming download");
            s
        }
        None => {
            let f =
                std::fs::File::create(&path).map_err(io(format!("create {}", path.display())))?;
            f.set_len(layer.size)
                .map_err(io(format!("size {}", path.display())))?;
            let s = DownloadState::fresh(layer.size, &repo.options);
            save_state(&path, &state_path, &s)?;
            s
        }
    };
    let done: Arc<Vec<AtomicU64>> =
        Arc::new(state.parts.iter().map(|p| AtomicU64::new(p.done)).collect());
    let snapshot = |done: &[AtomicU64]| DownloadState {
        size: state.size,
        parts: state
            .parts
            .iter()
            .zip(done)
            .map(|(p, d)| Part {
                done: d.load(Ordering::Relaxed),
                ..p.clone()
            })
            .collect(),
    };
    let completed =
        |done: &[AtomicU64]| done.iter().map(|d| d.load(Ordering::Relaxed)).sum::<u64>();
    layer_progress(sink, "pulling", &layer.digest, layer.size, completed(&done));

    let mut parts = tokio::task::JoinSet::new();
    for (i, p) in state.parts.iter().enumerate() {
        if p.done < p.size {
            let job = PartJob {
                repo: repo.clone(),
                digest: layer.digest.clone(),
                path: path.clone(),
                offset: p.offset,
                size: p.size,
                done: done.clone(),
                index: i,
                blob_size: layer.size,
            };
            parts.spawn(job.run());
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut ticks = 0u32;
    let result = loop {
        tokio::select! {
            r = parts.join_next() => match r {
                None => break Ok(()),
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => break Err(e),
                Some(Err(e)) => break Err(RegistryError::Other(format!("download task: {e}"))),
            },
            _ = tick.tick() => {
                layer_progress(sink, "pulling", &layer.digest, layer.size, completed(&done));
                ticks += 1;
                if ticks.is_multiple_of(4) {
                    save_state(&path, &state_path, &snapshot(&done))?;
                }
            }
        }
    };
    parts.abort_all();
    // Whatever happened, record what is on disk so the next pull starts from there.
    save_state(&path, &state_path, &snapshot(&done))?;
    result?;
    layer_progress(sink, "pulling", &layer.digest, layer.size, layer.size);
    Ok(())
}

/// Flush the download's bytes, then record how far each part got, so the record never
/// claims bytes that are not on disk.
fn save_state(
    path: &PathBuf,
    state_path: &PathBuf,
    s: &DownloadState,
) -> Result<(), RegistryError> {
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
        let _ = f.sync_data();
    }
    let tmp = state_path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(s).expect("state serializes"))
        .and_then(|()| std::fs::rename(&tmp, state_path))
        .map_err(io(format!("write {}", state_path.display())))
}

/// One ranged part of a blob, retried from where it stopped.
struct PartJob {
    repo: Arc<Repo>,
    digest: Digest,
    path: PathBuf,
    offset: u64,
    size: u64,
    done: Arc<Vec<AtomicU64>>,
    index: usize,
    blob_size: u64,
}

impl PartJob {
    async fn run(self) -> Result<(), RegistryError> {
        let mut failures = 0;
        loop {
            let before = self.done[self.index].load(Ordering::Relaxed);
            if before >= self.size {
                return Ok(());
            }
            match self.fetch(before).await {
                Ok(()) => {}
                Err(e) if e.retryable() => {
                    if self.done[self.index].load(Ordering::Relaxed) > before {
                        failures = 0;
                    }
                    failures += 1;
                    if failures >= self.repo.options.tries {
                        return Err(RegistryError::Transport(format!(
                            "pull {}: gave up after {failures} tries: {e}",
                            self.digest
                        )));
                    }
                    tracing::warn!(digest = %self.digest, part = self.index, "retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(failures))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Fetch from `offset + done` to the end of the part.
    async fn fetch(&self, done: u64) -> Result<(), RegistryError> {
        let start = self.offset + done;
        let end = self.offset + self.size - 1;
        let url = self.repo.url(&format!("blobs/{}", self.digest));
        let what = format!("pull {}", self.digest);
        let resp = self
            .repo
            .send(&what, |c| {
                c.get(url.clone())
                    .header(RANGE, format!("bytes={start}-{end}"))
            })
            .await?;
        let st = resp.status();
        if st.is_server_error() || st == StatusCode::TOO_MANY_REQUESTS {
            return Err(RegistryError::Transport(format!(
                "{what}: the registry answered {st}"
            )));
        }
        if st == StatusCode::NOT_FOUND {
            return Err(RegistryError::Other(format!(
                "{what}: the registry does not have this blob"
            )));
        }
        // A registry that ignores ranges may answer 200 with the whole blob: fine for a
        // blob fetched as one part from its start.
        let whole = st == StatusCode::OK && start == 0 && self.size == self.blob_size;
        if st == StatusCode::PARTIAL_CONTENT {
            let range = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !range.starts_with(&format!("bytes {start}-")) {
                return Err(RegistryError::Invalid(format!(
                    "{what}: asked for bytes {start}-{end}, the registry sent {range:?}"
                )));
            }
        } else if !whole {
            if st.is_success() {
                return Err(RegistryError::Invalid(format!(
                    "{what}: the registry ignored the byte range asked for"
                )));
            }
            return Err(self.repo.unexpected(&what, resp).await);
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(io(format!("open {}", self.path.display())))?;
        file.seek(SeekFrom::Start(start))
            .map_err(io(format!("seek {}", self.path.display())))?;
        let mut pos = start;
        let mut body = resp.bytes_stream();
        let stall = self.repo.options.stall_timeout;
        loop {
            let next = tokio::time::timeout(stall, body.next())
                .await
                .map_err(|_| {
                    RegistryError::Stalled(format!("{what}: nothing arrived for {stall:?}"))
                })?;
            let Some(chunk) = next else { break };
            let chunk = chunk
                .map_err(|e| RegistryError::Transport(format!("{what}: {}", error_chain(&e))))?;
            if pos + chunk.len() as u64 > end + 1 {
                return Err(RegistryError::Invalid(format!(
                    "{what}: the registry sent more bytes than the manifest's size ({} bytes)",
                    self.blob_size
                )));
            }
            file.write_all(&chunk)
                .map_err(io(format!("write {}", self.path.display())))?;
            pos += chunk.len() as u64;
            self.done[self.index].fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        if pos <= end {
            return Err(RegistryError::Transport(format!(
                "{what}: the transfer stopped at byte {pos} of {}",
                end + 1
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_tile_the_blob() {
        let o = Options {
            part_size: 10,
            max_parts: 4,
            ..Options::default()
        };
        for size in [1u64, 9, 10, 11, 39, 40, 41, 1000] {
            let s = DownloadState::fresh(size, &o);
            assert!(s.valid(size), "{size}: {s:?}");
            assert!(s.parts.len() as u64 <= o.max_parts);
            assert_eq!(s.parts.iter().map(|p| p.size).sum::<u64>(), size);
        }
        assert_eq!(DownloadState::fresh(25, &o).parts.len(), 3);
        assert_eq!(DownloadState::fresh(1000, &o).parts.len(), 4);
        let mut s = DownloadState::fresh(25, &o);
        assert!(!s.valid(26), "a record for another size is not trusted");
        s.parts[1].done = s.parts[1].size + 1;
        assert!(!s.valid(25), "a part done beyond its size is not trusted");
        let mut s = DownloadState::fresh(25, &o);
        s.parts[2].offset += 1;
        assert!(!s.valid(25), "parts with a gap are not trusted");
    }

    #[test]
    fn hostile_manifests_are_refused() {
        let d = "sha256:".to_string() + &"a".repeat(64);
        let ok = format!(
            r#"{{"schemaVersion":2,"mediaType":"m","config":{{"mediaType":"c","digest":"{d}","size":2}},"layers":[{{"mediaType":"l","digest":"{d}","size":3}}]}}"#
        );
        assert!(parse_manifest(ok.as_bytes()).is_ok());
        for (bad, why) in [
            (ok.replacen(&d, "sha256:../../etc/passwd", 1), "digest"),
            (
                ok.replace(r#""size":3"#, r#""size":1099511627777"#),
                "claims",
            ),
            (
                ok.replace(r#"[{"mediaType":"l","digest":""#, r#"[],"x":[{"a":""#),
                "no layers",
            ),
            ("[]".to_string(), "invalid manifest"),
        ] {
            let e = parse_manifest(bad.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
