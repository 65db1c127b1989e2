//! A JSON body extractor whose rejections are Ollama-style `{"error": ...}` answers that name
//! the problem (axum's own `Json` answers in plain text).

use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Like `axum::Json`, with errors as `{"error": "..."}` and status 400.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("failed to read request body: {e}")))?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request("missing request body"));
        }
        // serde would read a JSON array as a struct's fields in order (`["smol"]` as a show
        // request); Ollama's decoder, as any client expects, takes only an object.
        if is_array(&body) {
            return Err(ApiError::bad_request(ARRAY_BODY));
        }
        let first = match serde_json::from_slice(&body) {
            Ok(t) => return Ok(JsonBody(t)),
            Err(e) => e,
        };
        // Only a body that fails is read again as a tree, to settle Ollama's older `name`
        // beside `model` (a duplicate field to serde): the usual body is parsed once.
        let retry = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|mut v| {
                older_name(&mut v);
                serde_json::from_value(v).ok()
            });
        retry
            .map(JsonBody)
            .ok_or_else(|| ApiError::bad_request(format!("invalid JSON in request body: {first}")))
    }
}

/// What a JSON array body is told (every route takes an object).
pub(crate) const ARRAY_BODY: &str =
    "invalid JSON in request body: expected an object, got an array";

/// Whether a body is a JSON array: serde would read one as a struct's fields in order
/// (`["smol"]` as a show request), where Ollama's decoder, as any client expects, takes only an
/// object.
pub(crate) fn is_array(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// A text from a request as an error shows it: past `max` characters, its start and `...`.
pub(crate) fn shown(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// Ollama's older `name` field, which its Go client still sends beside `model` (as `""`
/// when unset, since the field has no `omitempty`): `model` when that is empty or missing,
/// else dropped, as Ollama reads them. Left as it was, serde would see the two as one field
/// given twice.
fn older_name(value: &mut serde_json::Value) {
    let Some(obj) = value.as_object_mut() else {
        return;
    };
    let Some(name) = obj.remove("name") else {
        return;
    };
    let model_empty = match obj.get("model") {
        None | Some(serde_json::Value::Null) => true,
        Some(serde_json::Value::String(m)) => m.is_empty(),
        Some(_) => false,
    };
    if model_empty {
        obj.insert("model".into(), name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_older_name_fills_in_for_an_empty_model() {
        for (given, want) in [
            (
                serde_json::json!({"model": "a", "name": ""}),
                serde_json::json!({"model": "a"}),
            ),
            (
                serde_json::json!({"model": "", "name": "b"}),
                serde_json::json!({"model": "b"}),
            ),
            (
                serde_json::json!({"name": "c"}),
                serde_json::json!({"model": "c"}),
            ),
            (
                serde_json::json!({"model": "d"}),
                serde_json::json!({"model": "d"}),
            ),
        ] {
            let mut v = given.clone();
            older_name(&mut v);
            assert_eq!(v, want, "{given}");
        }
    }
}
