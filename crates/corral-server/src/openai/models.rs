//! `/v1/models` and `/v1/models/{model}`: the store's manifests as OpenAI model objects.

use super::*;

fn model_object(e: &corral_store::ModelEntry) -> Value {
    json!({"id": e.name.display_short(), "object": "model", "created": e.modified.timestamp(),
           "owned_by": e.name.namespace})
}

/// `GET /v1/models`: the manifests alone say all OpenAI lists.
pub async fn models(State(st): State<AppState>) -> Response {
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.list()).await {
        Ok(list) => Json(json!({
            "object": "list",
            "data": list.iter().map(model_object).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /v1/models/{model}`: one manifest, found as names are everywhere (case-insensitively),
/// with `id` as the request wrote it (as Ollama answers, and as every answer names its model).
pub async fn model(State(st): State<AppState>, Path(name): Path<String>) -> Response {
    let not_found = || error(StatusCode::NOT_FOUND, format!("model '{name}' not found"));
    let Ok(want) = name.parse::<corral_store::Name>() else {
        return not_found();
    };
    let store = st.store.clone();
    match tokio::task::spawn_blocking(move || store.get(&want)).await {
        Ok(Ok(entry)) => {
            let mut object = model_object(&entry);
            object["id"] = json!(name);
            Json(object).into_response()
        }
        Ok(Err(corral_store::StoreError::NotFound(_))) => not_found(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
