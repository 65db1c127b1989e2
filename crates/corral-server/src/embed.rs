//! `/api/embed` and the older `/api/embeddings`: vectors from the model's runner, which
//! embeds every input of a request in as few llama.cpp decodes as fit.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use corral_api::runner::RunnerEvent;
use corral_api::{EmbedRequest, EmbedResponse, EmbeddingsRequest, EmbeddingsResponse};

use crate::error::{ApiError, ApiResult};
use crate::inference::{acquire, options_and_keep_alive};
use crate::json::JsonBody;
use crate::{models, AppState};

/// The inputs of an embed request: a string or a list of strings.
pub(crate) fn inputs(v: &serde_json::Value) -> ApiResult<Vec<String>> {
    match v {
        serde_json::Value::Null => Ok(Vec::new()),
        // As Ollama: an empty string is no input (the model only loads).
        serde_json::Value::String(s) if s.is_empty() => Ok(Vec::new()),
        serde_json::Value::String(s) => Ok(vec![s.clone()]),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::bad_request(format!("invalid input: {i} is not a string"))
                })
            })
            .collect(),
        other => Err(ApiError::bad_request(format!(
            "invalid input type: {other}; expected a string or a list of strings"
        ))),
    }
}

/// Keep the first `dimensions` values (if asked), then scale to unit length.
pub(crate) fn normalize(mut v: Vec<f32>, dimensions: Option<u32>) -> Vec<f32> {
    if let Some(d) = dimensions {
        v.truncate(d as usize);
    }
    let norm = v
        .iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x = (*x as f64 / norm) as f32;
        }
    }
    v
}

/// Raw vectors for `inputs` from the model's runner, with the model's name as the request
/// gave it (answers echo it, as Ollama's do), the prompt token count and the load time.
pub(crate) async fn embed_raw(
    st: &AppState,
    model_name: &str,
    inputs: Vec<String>,
    truncate: bool,
    options: Option<&std::collections::BTreeMap<String, serde_json::Value>>,
    keep_alive: Option<&serde_json::Value>,
    endpoint: &'static str,
) -> ApiResult<(String, Vec<Vec<f32>>, u64, Duration)> {
    let model = models::load(&st.store, model_name)?;
    let (options, keep_alive) = options_and_keep_alive(st, &model, options, keep_alive)?;
    let mut tracker =
        (!inputs.is_empty()).then(|| st.metrics.track(&model.display_name(), endpoint));
    let lease = acquire(st, &model, &options, keep_alive).await?;
    let load = lease.load_duration.unwrap_or_default();
    let Some(tracker) = tracker.as_mut() else {
        return Ok((model_name.to_string(), Vec::new(), 0, load));
    };
    tracker.started();
    let n = inputs.len();
    let (id, mut rx) = lease
        .runner
        .embed(inputs, truncate)
        .await
        .map_err(ApiError::internal)?;
    // A client that goes away (its request dropped here) stops the embedding in the runner.
    let mut cancel = crate::inference::CancelOnDrop::new(lease.runner.clone(), id);
    // No token stream to watch here: allow the stall timeout for every few inputs. Past it,
    // the runner is asked whether it still reads: it may be busy with other embedding
    // requests queued before this one (it reads between their pieces), which is no stall.
    let limit = st.config.stall_timeout * (1 + n as u32 / 4);
    let answer = loop {
        match tokio::time::timeout(limit, rx.recv()).await {
            Err(_) if lease.runner.ping(st.config.stall_timeout).await => continue,
            other => break other,
        }
    };
    if matches!(answer, Ok(Some(_))) {
        cancel.disarm();
    }
    match answer {
        Ok(Some(RunnerEvent::Embeddings {
            embeddings,
            prompt_eval_count,
            ..
        })) if embeddings.len() == n => {
            tracker.embedded(prompt_eval_count);
            Ok((model_name.to_string(), embeddings, prompt_eval_count, load))
        }
        Ok(Some(RunnerEvent::Error {
            message, invalid, ..
        })) => {
            if invalid {
                Err(ApiError::bad_request(message))
            } else {
                Err(ApiError::internal(message))
            }
        }
        Ok(_) => Err(ApiError::internal(
            "the runner ended the request without an answer",
        )),
        Err(_) => {
            lease.runner.kill().await;
            Err(ApiError::internal(format!(
                "the model gave no embeddings within {}s and stopped answering; its runner was stopped and will be restarted",
                limit.as_secs()
            )))
        }
    }
}

/// `POST /api/embed`.
pub async fn embed(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<EmbedRequest>,
) -> ApiResult<Json<EmbedResponse>> {
    let started = Instant::now();
    if req.dimensions == Some(0) {
        return Err(ApiError::bad_request("dimensions must be greater than 0"));
    }
    let inputs = inputs(&req.input)?;
    let (model, vectors, count, load) = embed_raw(
        &st,
        &req.model,
        inputs,
        req.truncate.unwrap_or(true),
        req.options.as_ref(),
        req.keep_alive.as_ref(),
        "/api/embed",
    )
    .await?;
    Ok(Json(EmbedResponse {
        model,
        embeddings: vectors
            .into_iter()
            .map(|v| normalize(v, req.dimensions))
            .collect(),
        total_duration: started.elapsed().as_nanos() as u64,
        load_duration: load.as_nanos() as u64,
        prompt_eval_count: count,
    }))
}

/// `POST /api/embeddings`: one prompt, one vector as the model pools it (not normalized), as
/// Ollama's older endpoint answers. An empty prompt only loads the model.
pub async fn embeddings(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<EmbeddingsRequest>,
) -> ApiResult<Json<EmbeddingsResponse>> {
    let inputs = if req.prompt.is_empty() {
        Vec::new()
    } else {
        vec![req.prompt.clone()]
    };
    let (_, vectors, _, _) = embed_raw(
        &st,
        &req.model,
        inputs,
        true,
        req.options.as_ref(),
        req.keep_alive.as_ref(),
        "/api/embeddings",
    )
    .await?;
    Ok(Json(EmbeddingsResponse {
        embedding: vectors
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .map(f64::from)
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_cut_then_unit_length() {
        let v = normalize(vec![3.0, 4.0, 12.0], None);
        assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(normalize(vec![3.0, 4.0, 12.0], Some(2)), vec![0.6, 0.8]);
        assert_eq!(normalize(vec![0.0, 0.0], None), vec![0.0, 0.0]);
    }

    #[test]
    fn inputs_are_a_string_or_strings() {
        assert_eq!(inputs(&serde_json::json!("a")).unwrap(), vec!["a"]);
        assert_eq!(
            inputs(&serde_json::json!(["a", "b"])).unwrap(),
            vec!["a", "b"]
        );
        assert!(inputs(&serde_json::json!(null)).unwrap().is_empty());
        assert!(inputs(&serde_json::json!("")).unwrap().is_empty());
        assert!(inputs(&serde_json::json!([1]))
            .unwrap_err()
            .to_string()
            .contains("not a string"));
        assert!(inputs(&serde_json::json!(5)).is_err());
    }
}
