//! `create --quantize`: the weights are quantized by a runner child (`corral runner
//! --quantize`), since loading a model's tensors is llama.cpp's work and the server never does
//! it. The child writes into a temp file in the store's blob folder; the server hashes that
//! into a blob, so a failed, killed or abandoned quantization leaves nothing behind.

use std::collections::VecDeque;
use std::process::Stdio;

use corral_api::quantize::QuantType;
use corral_api::runner::RunnerEvent;
use corral_api::ProgressResponse;
use corral_store::Layer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::{ApiError, ApiResult};

/// Lines of the child's log kept for the error message.
const TAIL_LINES: usize = 8;

/// Quantize the model blob `source` (of file type `from`) to `to`, sending one progress line
/// per tensor to `tx`. Returns the new model layer and its file type. Dropped (the request's
/// task aborted when its client goes away), it kills the child and removes its file.
pub async fn quantize(
    st: &crate::AppState,
    source: &Layer,
    from: &str,
    to: QuantType,
    tx: &UnboundedSender<ApiResult<ProgressResponse>>,
) -> ApiResult<(Layer, String)> {
    let store = st.store.clone();
    let out = tokio::task::spawn_blocking(move || store.blob_temp())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let status = format!("quantizing {from} model to {to}");
    let line = |completed: Option<u64>, total: Option<u64>| {
        Ok(ProgressResponse {
            status: status.clone(),
            digest: None,
            total,
            completed,
        })
    };
    let _ = tx.send(line(None, None));

    let mut c = st.config.runner.command();
    c.arg("--model")
        .arg(st.store.blob_path(&source.digest))
        .args(["--quantize", to.name, "--output"])
        .arg(&out)
        .args(["--threads", &st.config.threads.to_string()])
        .stdin(Stdio::null());
    let mut child = corral_os::spawn_bound(c)
        .await
        .map_err(|e| ApiError::internal(format!("could not start the quantizer: {e}")))?;
    let stderr = child.stderr.take().expect("piped");
    let tail = tokio::spawn(async move {
        let mut tail = VecDeque::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            tracing::debug!(target: "corral::quantize", "{l}");
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
            Ok(Some(l)) => {
                if let Ok(RunnerEvent::Quantizing { done, total }) = serde_json::from_str(&l) {
                    let _ = tx.send(line(Some(done.into()), Some(total.into())));
                }
            }
            Ok(None) => break,
            Err(e) => return Err(ApiError::internal(format!("quantizer output: {e}"))),
        }
    }
    let exit = child
        .wait()
        .await
        .map_err(|e| ApiError::internal(format!("quantizer: {e}")))?;
    if !exit.success() {
        let tail = tail.await.unwrap_or_default();
        // The runner's own `Error: ...` line when it has one, else the last it logged.
        let why = tail
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("Error: "))
            .or(tail.back().map(String::as_str))
            .unwrap_or("no output")
            .to_string();
        return Err(ApiError::internal(format!(
            "quantizing to {to} failed (the quantizer ended with {}): {why}",
            corral_os::describe_exit(&exit)
        )));
    }
    let store = st.store.clone();
    tokio::task::spawn_blocking(move || {
        // Checked while still a temp file, so a bad one never becomes a blob.
        let info = corral_gguf::read(&out).map_err(|e| {
            ApiError::internal(format!("the quantized model is not a valid GGUF: {e}"))
        })?;
        let layer = store.put_blob_file(Layer::media_type_for("model"), out)?;
        Ok((layer, info.file_type()))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}
