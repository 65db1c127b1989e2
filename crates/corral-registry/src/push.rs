//! `push`: each blob the registry lacks (mounted from a sibling repository when possible,
//! uploaded otherwise), then the manifest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral_store::{Digest, Layer, Manifest, Name, Store};
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;

use crate::client::{Options, Repo};
use crate::{layer_progress, status, RegistryError, Sink};

/// Push `name` from `store` to the registry its name names.
pub async fn push(
    store: &Store,
    name: &Name,
    options: Options,
    sink: &Sink,
) -> Result<(), RegistryError> {
    status(sink, "retrieving manifest");
    let (_, raw) = store.read_manifest_raw(name)?;
    let manifest: Manifest = serde_json::from_slice(&raw)
        .map_err(|e| RegistryError::Other(format!("stored manifest of {name}: {e}")))?;
    let repo = Repo::new(name, options, true)?;
    // Registries take only lower-case repository names (the distribution spec's rule): one
    // with capitals would fail later as a bare "404 Not Found".
    if repo.path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(RegistryError::Invalid(format!(
            "push {}: registries take only lower-case repository names",
            repo.path
        )));
    }

    // Other repositories of the same registry that hold a blob: the registry can mount it
    // from there instead of receiving it again.
    let mut siblings: HashMap<Digest, String> = HashMap::new();
    for e in store.list() {
        let path = format!("{}/{}", e.name.namespace, e.name.model);
        if e.name.host.eq_ignore_ascii_case(&name.host) && path != repo.path {
            for d in e.manifest.digests() {
                siblings.entry(d.clone()).or_insert_with(|| path.clone());
            }
        }
    }

    let blobs = manifest.unique_blobs();
    for layer in blobs {
        push_blob(&repo, store, layer, siblings.get(&layer.digest), sink).await?;
    }

    status(sink, "pushing manifest");
    let url = repo.url(&format!("manifests/{}", name.tag));
    let resp = repo
        .send("push manifest", |c| {
            c.put(url.clone())
                .header(CONTENT_TYPE, manifest.media_type.clone())
                .body(raw.clone())
        })
        .await?;
    if !resp.status().is_success() {
        return Err(repo.unexpected("push manifest", resp).await);
    }
    status(sink, "success");
    Ok(())
}

async fn push_blob(
    repo: &Repo,
    store: &Store,
    layer: &Layer,
    mount_from: Option<&String>,
    sink: &Sink,
) -> Result<(), RegistryError> {
    let d = &layer.digest;
    let what = format!("push {d}");
    let head = repo.url(&format!("blobs/{d}"));
    let resp = repo.send(&what, |c| c.head(head.clone())).await?;
    if resp.status().is_success() {
        layer_progress(sink, "pushing", d, layer.size, layer.size);
        return Ok(());
    }
    layer_progress(sink, "pushing", d, layer.size, 0);

    let mut location = None;
    if let Some(from) = mount_from {
        let url = repo.url(&format!("blobs/uploads/?mount={d}&from={from}"));
        let resp = repo.send(&what, |c| c.post(url.clone())).await?;
        match resp.status() {
            StatusCode::CREATED => {
                tracing::info!(digest = %d, from = %from, "blob mounted");
                layer_progress(sink, "pushing", d, layer.size, layer.size);
                return Ok(());
            }
            StatusCode::ACCEPTED => location = resp.headers().get(LOCATION).cloned(),
            _ => return Err(repo.unexpected(&what, resp).await),
        }
    }
    // An upload cut off (a dropped connection, a stall) starts again with a new upload
    // session, as a whole blob: up to five tries.
    let mut tries = 1;
    loop {
        match upload(repo, store, layer, location.take(), sink).await {
            Err(e) if e.retryable() && tries < UPLOAD_TRIES => {
                tracing::warn!(digest = %d, tries, "retrying the upload: {e}");
                tokio::time::sleep(Duration::from_secs(tries)).await;
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Tries of one blob's upload.
const UPLOAD_TRIES: u64 = 5;

/// Upload one blob whole: at `location` (an upload session already open), else in a new
/// one.
async fn upload(
    repo: &Repo,
    store: &Store,
    layer: &Layer,
    location: Option<reqwest::header::HeaderValue>,
    sink: &Sink,
) -> Result<(), RegistryError> {
    let d = &layer.digest;
    let what = format!("push {d}");
    let location = match location {
        Some(l) => l,
        None => {
            let url = repo.url("blobs/uploads/");
            let resp = repo.send(&what, |c| c.post(url.clone())).await?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(repo.unexpected(&what, resp).await);
            }
            resp.headers().get(LOCATION).cloned().ok_or_else(|| {
                RegistryError::Other(format!("{what}: the registry gave no upload location"))
            })?
        }
    };
    let location = location
        .to_str()
        .map_err(|_| RegistryError::Other(format!("{what}: unreadable upload location")))?;
    let mut url = repo.resolve(location)?;
    url.query_pairs_mut().append_pair("digest", &d.to_string());

    let path = store.blob_path(d);
    let size = std::fs::metadata(&path)
        .map_err(|e| RegistryError::Other(format!("{what}: {}: {e}", path.display())))?
        .len();
    let sent = Arc::new(AtomicU64::new(0));
    let upload = repo.send(&what, |c| {
        sent.store(0, Ordering::Relaxed);
        let counter = sent.clone();
        let path = path.clone();
        // The file is opened when the body is first polled, so a rebuilt request reads it
        // again from the start.
        let body = futures::stream::once(async move { tokio::fs::File::open(path).await })
            .map(|f| f.map(|f| tokio_util::io::ReaderStream::with_capacity(f, 256 << 10)))
            .try_flatten()
            .inspect_ok(move |b: &bytes::Bytes| {
                counter.fetch_add(b.len() as u64, Ordering::Relaxed);
            });
        c.put(url.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(body))
    });
    tokio::pin!(upload);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let resp = loop {
        tokio::select! {
            r = &mut upload => break r?,
            _ = tick.tick() => layer_progress(sink, "pushing", d, layer.size, sent.load(Ordering::Relaxed)),
        }
    };
    if resp.status() != StatusCode::CREATED {
        return Err(repo.unexpected(&what, resp).await);
    }
    layer_progress(sink, "pushing", d, layer.size, layer.size);
    Ok(())
}
