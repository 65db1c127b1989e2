//! `POST /api/pull` and `POST /api/push`: a registry transfer streamed as NDJSON progress,
//! ending with `{"status":"success"}` or an in-band `{"error": ...}` line as Ollama sends.
//!
//! The transfer runs in its own task; when the client goes away, the task is aborted. A pull
//! stopped that way (or by a crash) keeps its download files, and the next pull resumes.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_api::TransferRequest;
use corral_registry::{Options, Progress, RegistryError, Sink};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use crate::error::ApiError;
use crate::json::JsonBody;
use crate::{models, AppState};

#[derive(Clone, Copy)]
enum Direction {
    Pull,
    Push,
}

pub async fn pull(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<TransferRequest>,
) -> Response {
    transfer(st, req, Direction::Pull).await
}

pub async fn push(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<TransferRequest>,
) -> Response {
    transfer(st, req, Direction::Push).await
}

/// Aborts a task (a transfer, a create) when the response body (and so the client) is gone.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn transfer(st: AppState, req: TransferRequest, dir: Direction) -> Response {
    let name = match models::parse_name(&req.model) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let options = Options {
        insecure: req.insecure,
        stall_timeout: st.config.registry_stall_timeout,
        ..Options::default()
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Progress, RegistryError>>();
    let progress_tx = tx.clone();
    let sink: Sink = Arc::new(move |p| {
        let _ = progress_tx.send(Ok(p));
    });
    let store = st.store.clone();
    let stop_tx = tx.clone();
    let mut task = tokio::spawn(async move {
        let result = match dir {
            Direction::Pull => corral_registry::pull(&store, &name, options, &sink)
                .await
                .map(|_| ()),
            Direction::Push => corral_registry::push(&store, &name, options, &sink).await,
        };
        if let Err(e) = result {
            tracing::warn!(model = %name, "{}: {e}", if matches!(dir, Direction::Pull) { "pull" } else { "push" });
            let _ = tx.send(Err(e));
        }
    });
    let guard = AbortOnDrop(task.abort_handle());
    // Shutdown ends the transfer at once, as it ends open answers, rather than waiting for a
    // download to finish (a pull resumes from its files next time). The watch ends with the
    // transfer, so the progress stream ends with it.
    let mut shutdown = st.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = &mut task => {}
            Ok(_) = shutdown.wait_for(|closing| *closing) => {
                task.abort();
                let _ = stop_tx.send(Err(RegistryError::Other("the server is shutting down".into())));
            }
        }
    });

    if !req.stream.unwrap_or(true) {
        let mut rx = rx;
        let _guard = guard;
        let mut last = None;
        while let Some(item) = rx.recv().await {
            match item {
                Ok(p) => last = Some(p),
                Err(e) => return error_answer(e).into_response(),
            }
        }
        return match last {
            Some(p) if p.status == "success" => Json(p).into_response(),
            _ => ApiError::internal("the transfer ended without success").into_response(),
        };
    }
    let lines = UnboundedReceiverStream::new(rx).map(move |item| {
        let _keep = &guard;
        let mut line = match item {
            Ok(p) => serde_json::to_vec(&p),
            Err(e) => serde_json::to_vec(&corral_api::ErrorResponse {
                error: e.to_string(),
            }),
        }
        .expect("progress serializes");
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(line)
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .expect("valid response")
}

fn error_answer(e: RegistryError) -> ApiError {
    let status = if e.is_not_found() {
        StatusCode::NOT_FOUND
    } else if matches!(e, RegistryError::Unauthorized(_)) {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    ApiError::new(status, e.to_string())
}
