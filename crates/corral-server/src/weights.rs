//! New weights made by a runner child: `create --quantize` (llama.cpp's quantizer, `corral
//! runner --quantize`) and `create` from a Hugging Face folder (the safetensors converter,
//! `corral runner --convert`). Loading or rewriting a model's tensors is a child's work: the
//! server never holds a model. The child writes into a temp file in the store's blob folder;
//! the server checks it as a GGUF and hashes it into a blob, so a failed, killed or abandoned
//! child leaves nothing behind.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

use corral_api::quantize::QuantType;
use corral_api::runner::RunnerEvent;
use corral_api::ProgressResponse;
use corral_gguf::GgufInfo;
use corral_store::{Digest, Layer};
use tempfile::TempPath;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::{ApiError, ApiResult};

/// Lines of the child's log kept for the error message.
const TAIL_LINES: usize = 8;

type Progress = UnboundedSender<ApiResult<ProgressResponse>>;

/// Quantize the GGUF model `source` (a blob, or a converted model's temp file; of file type
/// `from`) to `to`, sending one progress line per tensor to `tx`. Returns the new model layer
/// and its GGUF. Dropped (the request's task aborted when its client goes away), it kills the
/// child and removes its file.
pub async fn quantize(
    st: &crate::AppState,
    source: &Path,
    from: &str,
    to: QuantType,
    tx: &Progress,
) -> ApiResult<(Layer, GgufInfo)> {
    let args = vec![
        "--model".into(),
        source.into(),
        "--quantize".into(),
        to.name.into(),
    ];
    let job = Job {
        status: format!("quantizing {from} model to {to}"),
        failed: format!("quantizing to {to} failed (the quantizer"),
    };
    let (out, info) = made_by_child(st, args, job, tx).await?;
    Ok((into_blob(st, out, "model").await?, info))
}

/// Convert the uploaded files of a Hugging Face model (plain name -> blob: config.json,
/// *.safetensors, tokenizer.json ...), or of a LoRA adapter for the GGUF model `base`, into a
/// GGUF file, sending one progress line per tensor to `tx`. Returns the file (a temp file in
/// the store's blob folder that becomes a blob through [`into_blob`] or is removed when
/// dropped) and its GGUF.
pub async fn convert(
    st: &crate::AppState,
    files: &BTreeMap<String, Digest>,
    base: Option<&Path>,
    tx: &Progress,
) -> ApiResult<(TempPath, GgufInfo)> {
    // The folder the converter reads: a link to each blob under the name it was sent with
    // (names were checked to be plain file names, or one plain folder and a file in it: a
    // sentence-transformers Pooling module's `1_Pooling/config.json`). Only links, so a folder
    // left by a killed server costs nothing; dropped, it goes.
    let store = st.store.clone();
    let files = files.clone();
    let dir = tokio::task::spawn_blocking(move || -> std::io::Result<tempfile::TempDir> {
        let dir = tempfile::Builder::new()
            .prefix("corral-convert-")
            .tempdir()?;
        for (name, digest) in &files {
            // Absolute, so that a store given as a relative path links from anywhere.
            let blob = std::path::absolute(store.blob_path(digest))?;
            let link = dir.path().join(name);
            if let Some(folder) = link.parent() {
                std::fs::create_dir_all(folder)?;
            }
            std::os::unix::fs::symlink(blob, link)?;
        }
        Ok(dir)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(format!("could not lay out the model's files: {e}")))?;
    let mut args: Vec<OsString> = vec!["--model".into(), dir.path().into(), "--convert".into()];
    let what = match base {
        Some(base) => {
            args.extend(["--base".into(), base.into()]);
            "adapter"
        }
        None => "model",
    };
    let job = Job {
        status: format!("converting {what}"),
        failed: format!("converting the {what} failed (the converter"),
    };
    made_by_child(st, args, job, tx).await
}

/// What a child job says: its progress status, and the start of its failure message.
struct Job {
    status: String,
    failed: String,
}

/// Run a runner child that writes a GGUF file, relaying its progress; returns the file, checked
/// to be a GGUF while still a temp file, so a bad one never becomes a blob.
async fn made_by_child(
    st: &crate::AppState,
    args: Vec<OsString>,
    job: Job,
    tx: &Progress,
) -> ApiResult<(TempPath, GgufInfo)> {
    let store = st.store.clone();
    let out = tokio::task::spawn_blocking(move || store.blob_temp())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let line = |completed: Option<u64>, total: Option<u64>| {
        Ok(ProgressResponse {
            status: job.status.clone(),
            digest: None,
            total,
            completed,
        })
    };
    let _ = tx.send(line(None, None));

    let mut c = st.config.runner.command();
    c.args(&args)
        .arg("--output")
        .arg(&out)
        .args(["--threads", &st.config.threads.to_string()])
        .stdin(Stdio::null());
    let mut child = corral_os::spawn_bound(c)
        .await
        .map_err(|e| ApiError::internal(format!("could not start a runner for this: {e}")))?;
    let stderr = child.stderr.take().expect("piped");
    let tail = tokio::spawn(async move {
        let mut tail = VecDeque::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            tracing::debug!(target: "corral::weights", "{l}");
            if !l.trim().is_empty() {
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(l);
            }
        }
        tail
    });
    // Returning early drops `child`, which kills it, and `out`, which removes its file.
    let mut events = BufReader::new(child.stdout.take().expect("piped")).lines();
    loop {
        match events.next_line().await {
            Ok(Some(l)) => match serde_json::from_str(&l) {
                Ok(RunnerEvent::Quantizing { done, total })
                | Ok(RunnerEvent::Converting { done, total }) => {
                    let _ = tx.send(line(Some(done.into()), Some(total.into())));
                }
                _ => {}
            },
            Ok(None) => break,
            Err(e) => return Err(ApiError::internal(format!("{}: {e}", job.status))),
        }
    }
    let exit = child
        .wait()
        .await
        .map_err(|e| ApiError::internal(format!("{}: {e}", job.status)))?;
    if !exit.success() {
        let tail = tail.await.unwrap_or_default();
        // The runner's own `Error: ...` line when it has one, a panic's message (the line
        // after Rust's "panicked at"), else the last line it logged.
        let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
        let panic = lines
            .windows(2)
            .find(|w| w[0].contains(" panicked at "))
            .map(|w| format!("a bug: {}", w[1]));
        let why = lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("Error: "))
            .map(str::to_string)
            .or(panic)
            .or(lines.last().map(|l| l.to_string()))
            .unwrap_or("no output".into());
        return Err(ApiError::internal(format!(
            "{} ended with {}): {why}",
            job.failed,
            corral_os::describe_exit(&exit)
        )));
    }
    tokio::task::spawn_blocking(move || {
        let info = corral_gguf::read(&out)
            .map_err(|e| ApiError::internal(format!("the new file is not a valid GGUF: {e}")))?;
        Ok((out, info))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

/// Hash a new file into the store as the layer of `kind` (`model`, `adapter`).
pub async fn into_blob(st: &crate::AppState, file: TempPath, kind: &str) -> ApiResult<Layer> {
    let (store, media_type) = (st.store.clone(), Layer::media_type_for(kind));
    tokio::task::spawn_blocking(move || Ok(store.put_blob_file(media_type, file)?))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
}
