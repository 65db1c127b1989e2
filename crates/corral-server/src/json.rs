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
        from_body(&body)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON in request body: {e}")))
    }
}

/// Parse a request body as `T`, taking what Ollama's Go decoder takes. Only a body that fails
/// is read again, as a tree (the usual body is parsed once), with:
/// - text that serde refuses but Go reads as U+FFFD: bytes that are not UTF-8, and escapes of
///   lone UTF-16 surrogates (`"\ud83d"`, what a JavaScript client sends when it cuts a string
///   inside an emoji);
/// - `null` for a field of the request or of one of its messages read as the field left out,
///   as Go leaves a field it decodes `null` into empty (maps of values, such as `options`,
///   tool arguments and schemas, keep their `null`s: there they are data);
/// - Ollama's older `name` beside `model` ([`older_name`]).
///
/// When that fails too, the error is the first parse's.
pub(crate) fn from_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    let first = match serde_json::from_slice(body) {
        Ok(t) => return Ok(t),
        Err(e) => e,
    };
    serde_json::from_str::<serde_json::Value>(&go_text(body))
        .ok()
        .and_then(|mut v| {
            older_name(&mut v);
            fields_left_out_when_null(&mut v);
            serde_json::from_value(v).ok()
        })
        .ok_or(first)
}

/// The body as Go's decoder reads its strings: bytes that are not UTF-8, and `\u` escapes of
/// surrogates that are not a pair, become U+FFFD.
fn go_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_ref();
    let mut in_string = false;
    while let Some(c) = rest.chars().next() {
        if !in_string {
            in_string = c == '"';
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        match c {
            '"' => in_string = false,
            '\\' => {
                if let Some(unit) = escaped_unit(rest) {
                    let pair = escaped_unit(&rest[6..]).filter(|low| {
                        (0xD800..0xDC00).contains(&unit) && (0xDC00..0xE000).contains(low)
                    });
                    if pair.is_some() {
                        out.push_str(&rest[..12]);
                        rest = &rest[12..];
                    } else if (0xD800..0xE000).contains(&unit) {
                        out.push_str("\\ufffd");
                        rest = &rest[6..];
                    } else {
                        out.push_str(&rest[..6]);
                        rest = &rest[6..];
                    }
                    continue;
                }
                // Any other escape: the backslash and the character it escapes.
                out.push('\\');
                rest = &rest[1..];
                if let Some(e) = rest.chars().next() {
                    out.push(e);
                    rest = &rest[e.len_utf8()..];
                }
                continue;
            }
            _ => {}
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The UTF-16 unit of a `\uXXXX` escape at the start of `s`.
fn escaped_unit(s: &str) -> Option<u32> {
    let hex = s.strip_prefix("\\u")?.get(..4)?;
    u32::from_str_radix(hex, 16)
        .ok()
        .filter(|_| hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Leave out the fields given as `null` in the request and in each of its messages.
fn fields_left_out_when_null(value: &mut serde_json::Value) {
    fn strip(v: &mut serde_json::Value) {
        if let Some(obj) = v.as_object_mut() {
            obj.retain(|_, f| !f.is_null());
        }
    }
    strip(value);
    if let Some(messages) = value.get_mut("messages").and_then(|m| m.as_array_mut()) {
        messages.iter_mut().for_each(strip);
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
    fn text_go_reads_as_replacement_characters_is_read_so() {
        for (given, want) in [
            // Lone surrogates, high and low, at the end and before other text.
            (r#"{"p":"a\ud83d"}"#, "a\u{fffd}"),
            (r#"{"p":"\ude00b"}"#, "\u{fffd}b"),
            (r#"{"p":"\ud83d\u0041"}"#, "\u{fffd}A"),
            // A pair is one character; other escapes stay as they were (the lone surrogate at
            // the end makes the body go through the second reading).
            (
                r#"{"p":"\ud83d\ude00 \\ud83d \" \n \udc00"}"#,
                "\u{1f600} \\ud83d \" \n \u{fffd}",
            ),
        ] {
            let v: serde_json::Value = from_body(given.as_bytes()).unwrap();
            assert_eq!(v["p"], want, "{given}");
        }
        // Bytes that are not UTF-8.
        let v: serde_json::Value = from_body(b"{\"p\":\"a\xff\xfeb\"}").unwrap();
        assert_eq!(v["p"], "a\u{fffd}\u{fffd}b");
        // Outside strings nothing changes: bad JSON stays bad, with serde's own error.
        let e = from_body::<serde_json::Value>(br#"{"p": \ud83d}"#).unwrap_err();
        assert!(e.to_string().starts_with("expected value"), "{e}");
    }

    #[test]
    fn null_fields_of_the_request_and_its_messages_are_left_out() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Message {
            #[serde(default)]
            content: String,
        }
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Request {
            #[serde(default)]
            prompt: String,
            #[serde(default)]
            messages: Vec<Message>,
            #[serde(default)]
            options: serde_json::Map<String, serde_json::Value>,
        }
        let r: Request = from_body(br#"{"prompt": null, "messages": null}"#).unwrap();
        assert_eq!((r.prompt.as_str(), r.messages.len()), ("", 0));
        let r: Request =
            from_body(br#"{"messages": [{"content": null}], "options": {"stop": null}}"#).unwrap();
        assert_eq!(
            r.messages,
            [Message {
                content: String::new()
            }]
        );
        // Inside maps of values a null is data.
        assert_eq!(r.options["stop"], serde_json::Value::Null);
    }

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
