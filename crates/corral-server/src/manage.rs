//! Model management endpoints: version, tags, show, ps, blobs and create.

use std::io::Write;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use corral_api::{
    CreateRequest, ListModel, ListResponse, ProcessResponse, ShowRequest, ShowResponse,
    VersionResponse,
};
use corral_store::Digest;
use futures::StreamExt;

use crate::error::{ApiError, ApiResult};
use crate::json::JsonBody;
use crate::transfer::AbortOnDrop;
use crate::{models, AppState};

pub async fn root() -> &'static str {
    "Corral is running"
}

pub async fn version() -> Json<VersionResponse> {
    Json(VersionResponse {
        version: corral_api::OLLAMA_API_VERSION.to_string(),
        corral_version: Some(env!("CARGO_PKG_VERSION").to_string()),
    })
}

pub async fn tags(State(st): State<AppState>) -> ApiResult<Json<ListResponse>> {
    let store = st.store.clone();
    let models = tokio::task::spawn_blocking(move || {
        store
            .list()
            .into_iter()
            .map(|e| {
                let config = store
                    .read_blob(&e.manifest.config.digest)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
                let name = e.name.display_short();
                ListModel {
                    model: name.clone(),
                    name,
                    modified_at: e.modified,
                    size: e.manifest.total_size(),
                    digest: e.digest.hex().to_string(),
                    details: models::details(&config),
                }
            })
            .collect()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(ListResponse { models }))
}

pub async fn ps(State(st): State<AppState>) -> Json<ProcessResponse> {
    Json(ProcessResponse {
        models: st.scheduler.ps().await,
    })
}

pub async fn show(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<ShowRequest>,
) -> ApiResult<Json<ShowResponse>> {
    let store = st.store.clone();
    tokio::task::spawn_blocking(move || show_model(&store, &req))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map(Json)
}

fn show_model(store: &corral_store::Store, req: &ShowRequest) -> ApiResult<ShowResponse> {
    let mut m = models::load(store, &req.model)?;
    let info = if req.verbose {
        corral_gguf::read_with_arrays(&m.model_path).ok()
    } else {
        corral_gguf::read(&m.model_path).ok()
    };
    let template = m
        .template
        .clone()
        .or_else(|| {
            info.as_ref()
                .and_then(|i| i.chat_template().map(str::to_string))
        })
        .unwrap_or_else(|| corral_template::DEFAULT_TEMPLATE.to_string());
    let mut model_info = std::collections::BTreeMap::new();
    if let Some(i) = &info {
        for (k, v) in &i.metadata {
            if k == "tokenizer.chat_template" {
                continue;
            }
            // Long arrays (the vocabulary) are left out unless asked for, as Ollama does.
            let v = if v.get("array_length").is_some() && !req.verbose {
                serde_json::Value::Null
            } else {
                v.clone()
            };
            model_info.insert(k.clone(), v);
        }
        model_info.insert("general.parameter_count".into(), i.parameter_count.into());
    }
    // As Ollama: `parameters` are the model's own; a session's system message and options
    // (the request's) go into `system` and the `modelfile`.
    let parameters = parameters_text(&m.params);
    if let Some(s) = &req.system {
        m.system = Some(s.clone()).filter(|s| !s.is_empty());
    }
    if let Some(map) = &req.options {
        let (over, _) =
            corral_api::Options::from_map(map).map_err(|e| ApiError::bad_request(e.to_string()))?;
        m.params = m.params.merged(&over);
    }
    let modelfile = modelfile_text(&m);
    let tensors = match (&info, req.verbose) {
        (Some(i), true) => i
            .tensors
            .iter()
            .map(|t| corral_api::ShowTensor {
                name: t.name.clone(),
                ty: t.type_name().to_string(),
                shape: t.shape.clone(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let fim = info.as_ref().is_some_and(|i| i.fim_tokens().is_some());
    let embeds_only = info.as_ref().is_some_and(|i| i.embeds_only());
    let capabilities = models::capabilities(&template, fim, embeds_only);
    Ok(ShowResponse {
        license: m.license.join("\n"),
        modelfile,
        parameters,
        template,
        system: m.system.clone().unwrap_or_default(),
        details: m.details(),
        messages: m.messages.clone(),
        model_info,
        capabilities,
        modified_at: m.entry.modified,
        requires: m.config.requires.clone(),
        tensors,
    })
}

/// Parameters as `show` prints them: one `name value` line each, names padded.
fn parameters_text(p: &corral_api::Options) -> String {
    let mut lines = Vec::new();
    for (k, v) in p.to_map() {
        match v {
            serde_json::Value::Array(items) => {
                for i in items {
                    lines.push(format!("{k:<30} {}", i));
                }
            }
            other => lines.push(format!("{k:<30} {other}")),
        }
    }
    lines.join("\n")
}

fn modelfile_text(m: &models::Model) -> String {
    // Texts in """ (newlines and quotes kept), as before; a text that """ cannot hold falls
    // back to the parser's own quoting. Parameter strings in "..." while that reads back the
    // same (Ollama prints stops so), else in """.
    let triple = |s: &str| {
        if !s.contains("\"\"\"") && !s.ends_with('"') {
            format!("\"\"\"{s}\"\"\"")
        } else {
            corral_modelfile::quote(s)
        }
    };
    let mut out = format!(
        "# Modelfile generated by \"corral show\"\n# To build a new Modelfile based on this, replace FROM with:\n# FROM {}\n\nFROM {}\n",
        m.display_name(),
        m.model_path.display()
    );
    if let Some(a) = &m.adapter_path {
        out += &format!("ADAPTER {}\n", a.display());
    }
    if let Some(d) = &m.draft_path {
        out += &format!("DRAFT {}\n", d.display());
    }
    if !m.config.requires.is_empty() {
        out += &format!("REQUIRES {}\n", corral_modelfile::quote(&m.config.requires));
    }
    // Only a Modelfile TEMPLATE (Go syntax) is printed: the GGUF's own Jinja template comes
    // with the FROM file, and written out as TEMPLATE it would be read as a Go template.
    // Every value is quoted so that the parser reads it back the same (newlines, quotes).
    if let Some(t) = &m.template {
        out += &format!("TEMPLATE {}\n", triple(t));
    }
    if let Some(s) = &m.system {
        out += &format!("SYSTEM {}\n", triple(s));
    }
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) if !s.contains(['"', '\n', '\r']) && !s.is_empty() => {
            format!("\"{s}\"")
        }
        serde_json::Value::String(s) => triple(s),
        other => other.to_string(),
    };
    for (k, v) in m.params.to_map() {
        match v {
            serde_json::Value::Array(items) => {
                for i in items {
                    out += &format!("PARAMETER {k} {}\n", text(&i));
                }
            }
            other => out += &format!("PARAMETER {k} {}\n", text(&other)),
        }
    }
    for msg in &m.messages {
        out += &format!("MESSAGE {} {}\n", msg.role, triple(&msg.content));
    }
    for l in &m.license {
        out += &format!("LICENSE {}\n", triple(l));
    }
    out
}

fn parse_digest(d: &str) -> ApiResult<Digest> {
    d.parse()
        .map_err(|e: corral_store::DigestError| ApiError::bad_request(e.to_string()))
}

pub async fn head_blob(State(st): State<AppState>, Path(digest): Path<String>) -> StatusCode {
    match parse_digest(&digest) {
        Ok(d) if st.store.has_blob(&d) => StatusCode::OK,
        Ok(_) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// Receive a blob; it becomes visible only when its content matches the digest.
pub async fn post_blob(
    State(st): State<AppState>,
    Path(digest): Path<String>,
    body: Body,
) -> ApiResult<StatusCode> {
    let digest = parse_digest(&digest)?;
    if st.store.has_blob(&digest) {
        return Ok(StatusCode::OK);
    }
    let mut w = st.store.blob_writer(digest)?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("upload interrupted: {e}")))?;
        tokio::task::block_in_place(|| w.write_all(&chunk))
            .map_err(|e| ApiError::internal(format!("write blob: {e}")))?;
    }
    tokio::task::block_in_place(|| w.commit()).map_err(|e| match e {
        corral_store::StoreError::DigestMismatch { .. } => ApiError::bad_request(e.to_string()),
        other => ApiError::from(other),
    })?;
    Ok(StatusCode::CREATED)
}

pub async fn create(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<CreateRequest>,
) -> Response {
    let stream = req.stream.unwrap_or(true);
    // As a pull: the work runs in its own task, aborted when the client goes away (which
    // kills a quantizer and removes its file), and an error is the last item.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let errors = tx.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = crate::create::run(st, req, tx).await {
            let _ = errors.send(Err(e));
        }
    });
    let guard = AbortOnDrop(task.abort_handle());
    // An error before any line: the request was refused, with its status code.
    let first = match rx.recv().await {
        Some(Ok(p)) => p,
        Some(Err(e)) => return e.into_response(),
        None => return ApiError::internal("create ended without a word").into_response(),
    };
    if !stream {
        let _guard = guard;
        while let Some(item) = rx.recv().await {
            if let Err(e) = item {
                return e.into_response();
            }
        }
        return Json(serde_json::json!({ "status": "success" })).into_response();
    }
    let rest = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
    let lines = futures::stream::iter([Ok(first)])
        .chain(rest)
        .map(move |item| {
            let _keep = &guard;
            let mut line = match item {
                Ok(p) => serde_json::to_vec(&p),
                Err(e) => serde_json::to_vec(&corral_api::ErrorResponse { error: e.message }),
            }
            .expect("progress serializes");
            line.push(b'\n');
            Ok::<_, std::convert::Infallible>(line)
        });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response()
}

/// `POST /api/copy {"source": ..., "destination": ...}`.
pub async fn copy(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<corral_api::CopyRequest>,
) -> ApiResult<StatusCode> {
    if req.source.trim().is_empty() || req.destination.trim().is_empty() {
        return Err(ApiError::bad_request("source and destination are required"));
    }
    let from =
        models::parse_name(&req.source).map_err(|_| ApiError::model_not_found(&req.source))?;
    let to = models::parse_name(&req.destination)?;
    let store = st.store.clone();
    tokio::task::spawn_blocking(move || store.copy(&from, &to))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| match e {
            corral_store::StoreError::NotFound(_) => ApiError::model_not_found(&req.source),
            other => other.into(),
        })?;
    Ok(StatusCode::OK)
}

/// `DELETE /api/delete {"model": ...}`: unload it, remove the name, prune unshared blobs.
pub async fn delete(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<corral_api::DeleteRequest>,
) -> ApiResult<StatusCode> {
    if req.model.trim().is_empty() {
        return Err(ApiError::bad_request("model is required"));
    }
    // A name that cannot be one is told so, as Ollama's delete tells it (a 400).
    let name = models::parse_name(&req.model).map_err(|_| {
        let shown = crate::json::shown(&req.model, 80);
        ApiError::bad_request(format!("name {shown:?} is invalid"))
    })?;
    let entry = st
        .store
        .get(&name)
        .map_err(|_| ApiError::model_not_found(&req.model))?;
    st.scheduler.unload(&entry.name.display_short()).await;
    let store = st.store.clone();
    tokio::task::spawn_blocking(move || store.delete(&entry.name))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(StatusCode::OK)
}
