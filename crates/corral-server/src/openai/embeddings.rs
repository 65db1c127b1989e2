//! `/v1/embeddings`: inputs onto the native embedding path, vectors back as floats or
//! base64.

use super::*;

#[derive(Debug, Deserialize)]
struct EmbeddingRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(default)]
    options: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    keep_alive: Option<Value>,
}

/// A vector as OpenAI's base64 encoding: little-endian f32 bytes.
fn base64_f32(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub async fn embeddings(State(st): State<AppState>, body: Bytes) -> Response {
    let req: EmbeddingRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return bad(format!(
                "invalid encoding_format '{other}': expected \"float\" or \"base64\""
            ))
        }
    };
    if req.dimensions == Some(0) {
        return bad("dimensions must be greater than 0");
    }
    let inputs = match &req.input {
        Value::Array(a) if a.iter().any(|i| !i.is_string()) => {
            return bad(
                "input must be a string or a list of strings: token arrays are not supported",
            )
        }
        Value::Null => return bad("input is required"),
        v => match embed::inputs(v) {
            Ok(i) => i,
            Err(e) => return bad(e.message),
        },
    };
    if inputs.is_empty() {
        return bad("input is required");
    }
    let result = embed::embed_raw(
        &st,
        &req.model,
        inputs,
        true,
        req.options.as_ref(),
        req.keep_alive.as_ref(),
        "/v1/embeddings",
    )
    .await;
    let (model, vectors, count, _) = match result {
        Ok(r) => r,
        Err(e) => return error(e.status, e.message),
    };
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let v = embed::normalize(v, req.dimensions);
            let embedding = if base64 {
                json!(base64_f32(&v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "embedding": embedding, "index": i})
        })
        .collect();
    Json(json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": count, "total_tokens": count},
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors_are_little_endian_f32() {
        let s = base64_f32(&[1.0, -2.5]);
        let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        assert_eq!(bytes.len(), 8);
        assert_eq!(f32::from_le_bytes(bytes[4..8].try_into().unwrap()), -2.5);
    }
}
