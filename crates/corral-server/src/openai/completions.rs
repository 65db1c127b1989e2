//! `/v1/completions`: one prompt onto a native generate, and its answer back as
//! `text_completion` objects, with log probabilities in the legacy shape.

use super::*;

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    prompt: Value,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    keep_alive: Option<Value>,
    /// Log probabilities with this many alternatives.
    #[serde(default)]
    logprobs: Option<i64>,
    /// Answer with the prompt before the completion.
    #[serde(default)]
    echo: bool,
    #[serde(flatten)]
    sampling: Sampling,
}

pub async fn completions(State(st): State<AppState>, body: Bytes) -> Response {
    let req: CompletionRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let prompt = match &req.prompt {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        Value::Array(_) => {
            return bad("prompt must be a single string: batches of prompts are not supported")
        }
        Value::Null => return bad("prompt is required"),
        other => return bad(format!("invalid prompt: {other}")),
    };
    if req.echo && req.logprobs.is_some() {
        return bad("echo with logprobs is not supported: the prompt's own log probabilities are not computed");
    }
    // With `echo`, each choice's text starts with the prompt.
    let echoed = if req.echo {
        prompt.clone()
    } else {
        String::new()
    };
    let options = match req.sampling.options() {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let native = corral_api::GenerateRequest {
        model: req.model.clone(),
        prompt,
        suffix: req.suffix.clone(),
        stream: Some(req.stream),
        options: Some(options),
        keep_alive: req.keep_alive.clone(),
        answer: corral_api::AnswerOptions {
            logprobs: req.logprobs.map(|_| true),
            top_logprobs: req.logprobs,
            logit_bias: req.sampling.logit_bias.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let n = match choices::count(req.sampling.n) {
        Ok(n) => n,
        Err(e) => return e.into_response(),
    };
    let answers = choices::run(n, &native, |one| {
        inference::generate_at(st.clone(), one, "/v1/completions")
    })
    .await;
    let answers = match answers {
        Ok(a) => a,
        Err(e) => return e,
    };
    let id = new_id("cmpl");
    let created = now();
    if !req.stream {
        let whole = choices::whole(answers).await;
        let choices: Vec<Value> = whole
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let text = format!("{echoed}{}", v["response"].as_str().unwrap_or_default());
                json!({"text": text, "index": i,
                       "logprobs": completion_logprobs(v, &mut 0),
                       "finish_reason": finish_reason(v["done_reason"].as_str(), false)})
            })
            .collect();
        return Json(json!({
            "id": id, "object": "text_completion", "created": created, "model": whole[0]["model"],
            "system_fingerprint": "fp_corral",
            "choices": choices,
            "usage": choices::usage_of(&whole),
        }))
        .into_response();
    }
    let mut tally = req
        .stream_options
        .is_some_and(|o| o.include_usage)
        .then(|| choices::Tally::new(n));
    // Characters each choice has sent so far (the log probabilities' text offsets).
    let mut offsets = vec![0; n];
    // Whether each choice has sent its first chunk (which carries the echoed prompt).
    let mut started = vec![false; n];
    sse_from(choices::merge(answers), move |v| {
        let base = |choices: Value| {
            json!({"id": id, "object": "text_completion", "created": created, "model": v["model"],
                   "system_fingerprint": "fp_corral", "choices": choices})
        };
        let index = choices::index(v);
        let done = v["done"].as_bool().unwrap_or(false);
        let finish = done.then(|| finish_reason(v["done_reason"].as_str(), false));
        let mut unused = 0;
        let offset = offsets.get_mut(index as usize).unwrap_or(&mut unused);
        let first = started
            .get_mut(index as usize)
            .is_some_and(|s| !std::mem::replace(s, true));
        let text = v["response"].as_str().unwrap_or_default();
        let text = if first {
            format!("{echoed}{text}")
        } else {
            text.to_string()
        };
        with_usage(
            base,
            json!({"text": text, "index": index,
                   "logprobs": completion_logprobs(v, offset), "finish_reason": finish}),
            v,
            tally.as_mut(),
        )
    })
}

/// Native log probabilities in the legacy completions shape: parallel lists of tokens, their
/// log probabilities, the alternatives as `{token: logprob}` and each token's character
/// offset in the answer (`offset`: characters before this chunk; advanced past it).
fn completion_logprobs(v: &Value, offset: &mut usize) -> Value {
    let Some(lps) = v["logprobs"].as_array() else {
        return Value::Null;
    };
    let mut tokens = Vec::new();
    let mut values = Vec::new();
    let mut tops = Vec::new();
    let mut offsets = Vec::new();
    for lp in lps {
        let token = lp["token"].as_str().unwrap_or_default();
        tokens.push(json!(token));
        values.push(lp["logprob"].clone());
        let top: serde_json::Map<String, Value> = lp["top_logprobs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["token"].as_str().unwrap_or_default().to_string(),
                    t["logprob"].clone(),
                )
            })
            .collect();
        tops.push(Value::Object(top));
        offsets.push(json!(*offset));
        *offset += token.chars().count();
    }
    json!({"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets})
}
