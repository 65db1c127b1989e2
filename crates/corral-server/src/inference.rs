//! `/api/generate` and `/api/chat`: validate, pick the runner, stream its answer as NDJSON.

use std::convert::Infallible;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use corral_api::duration::KeepAlive;
use corral_api::options::{self as opt, Options};
use corral_api::runner::{CompletionRequest, DoneInfo, Prompt, RunnerEvent};
use corral_api::{
    ChatRequest, ChatResponse, GenerateRequest, GenerateResponse, Logprob, Message, Metrics,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{ApiError, ApiResult};
use crate::json::JsonBody;
use crate::metrics::Tracker;
use crate::models::{self, Model};
use crate::output::{OutputParser, Piece};
use crate::runner::LoadSpec;
use crate::scheduler::{AcquireError, Lease, ModelMeta};
use crate::AppState;

/// Which endpoint is answering, to shape each object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Generate,
    Chat,
}

/// A validated request, ready for a runner.
struct Job {
    kind: Kind,
    /// The route asked, for the metrics.
    endpoint: &'static str,
    model: Model,
    options: Options,
    keep_alive: KeepAlive,
    /// `None`: only load (or unload) the model.
    completion: Option<CompletionRequest>,
    stream: bool,
    started: Instant,
    /// Split thinking off the answer.
    think: bool,
    /// Parse tool calls out of the answer.
    tools: bool,
}

pub async fn generate(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<GenerateRequest>,
) -> Response {
    generate_at(st, req, "/api/generate").await
}

pub async fn chat(State(st): State<AppState>, JsonBody(req): JsonBody<ChatRequest>) -> Response {
    chat_at(st, req, "/api/chat").await
}

/// `/api/generate`'s work for a request that came to `endpoint` (OpenAI's routes map onto it).
pub(crate) async fn generate_at(
    st: AppState,
    req: GenerateRequest,
    endpoint: &'static str,
) -> Response {
    let started = Instant::now();
    let job = match prepare_generate(&st, req, started) {
        Ok(j) => j,
        Err(e) => return e.into_response(),
    };
    run(st, Job { endpoint, ..job }).await
}

/// `/api/chat`'s work for a request that came to `endpoint`.
pub(crate) async fn chat_at(st: AppState, req: ChatRequest, endpoint: &'static str) -> Response {
    let started = Instant::now();
    let job = match prepare_chat(&st, req, started) {
        Ok(j) => j,
        Err(e) => return e.into_response(),
    };
    run(st, Job { endpoint, ..job }).await
}

pub(crate) fn options_and_keep_alive(
    st: &AppState,
    model: &Model,
    options: Option<&std::collections::BTreeMap<String, serde_json::Value>>,
    keep_alive: Option<&serde_json::Value>,
) -> ApiResult<(Options, KeepAlive)> {
    let req_opts = match options {
        Some(map) => {
            let (o, unknown) =
                Options::from_map(map).map_err(|e| ApiError::bad_request(e.to_string()))?;
            for name in unknown {
                tracing::warn!(option = %name, "invalid option provided");
            }
            o
        }
        None => Options::default(),
    };
    let keep_alive = match keep_alive {
        Some(v) if !v.is_null() => {
            KeepAlive::from_json(v).map_err(|e| ApiError::bad_request(e.to_string()))?
        }
        _ => st.config.keep_alive,
    };
    let mut options = model.params.merged(&req_opts);
    options.num_ctx = Some(context_length(st, model, &options));
    Ok((options, keep_alive))
}

/// A model's context length: the options' `num_ctx`, else the server's default
/// (`CORRAL_CONTEXT_LENGTH`), else 4096; never more than the model was trained with.
fn context_length(st: &AppState, model: &Model, o: &Options) -> i64 {
    let wanted = o.num_ctx.unwrap_or_else(|| {
        st.config
            .context_length
            .map_or(opt::DEFAULT_NUM_CTX, i64::from)
    });
    let trained = gguf_info(st, model)
        .and_then(|i| i.context_length())
        .filter(|&t| t > 0);
    match trained {
        Some(t) if wanted as u64 > t => {
            tracing::warn!(
                model = %model.display_name(),
                requested = wanted,
                trained = t,
                "context length over the model's training length: using the training length"
            );
            t as i64
        }
        _ => wanted,
    }
}

fn prepare_generate(st: &AppState, req: GenerateRequest, started: Instant) -> ApiResult<Job> {
    let model = models::load(&st.store, &req.model)?;
    let (options, keep_alive) =
        options_and_keep_alive(st, &model, req.options.as_ref(), req.keep_alive.as_ref())?;
    let template = effective_template(st, &model, req.template.as_deref());
    let think = check_think(&model, &template, req.think.as_ref())?;
    let suffix = req.suffix.clone().filter(|s| !s.is_empty());
    let infill = match &suffix {
        Some(_) if req.raw => {
            return Err(ApiError::bad_request("raw mode does not support suffix"))
        }
        Some(_) => Some(check_insert(st, &model, &template)?),
        None => None,
    };
    let completion = if req.prompt.is_empty()
        && suffix.is_none()
        && req.context.as_ref().is_none_or(|c| c.is_empty())
    {
        None
    } else {
        let prompt = if let (Some(suffix), Some(go)) = (&suffix, infill) {
            Prompt::Infill {
                prefix: req.prompt.clone(),
                suffix: suffix.clone(),
                system: req.system.clone().or_else(|| model.system.clone()),
                template: go,
            }
        } else if req.raw {
            Prompt::Raw {
                text: req.prompt.clone(),
            }
        } else {
            let mut messages = Vec::new();
            if let Some(sys) = req.system.clone().or_else(|| model.system.clone()) {
                messages.push(Message::new("system", sys));
            }
            messages.push(Message::new("user", req.prompt.clone()));
            Prompt::Chat {
                messages,
                template: req.template.clone().or_else(|| model.template.clone()),
                tools: None,
                think,
            }
        };
        let truncate = req.answer.truncate.unwrap_or(true);
        let (prompt, cut_bytes) = bounded(prompt, &options, truncate)?;
        Some(CompletionRequest {
            id: 0,
            prompt,
            context: req.context.clone().unwrap_or_default(),
            options: options.clone(),
            want_context: !req.raw,
            format: check_format(req.format.as_ref())?,
            tool_grammar: None,
            truncate,
            shift: req.answer.shift.unwrap_or(true),
            cut_bytes,
            logprobs: check_logprobs(req.answer.logprobs, req.answer.top_logprobs)?,
            count_only: false,
        })
    };
    Ok(Job {
        kind: Kind::Generate,
        endpoint: "/api/generate",
        model,
        options,
        keep_alive,
        completion,
        stream: req.stream.unwrap_or(true),
        started,
        think: think == Some(true) && !req.raw,
        tools: false,
    })
}

fn prepare_chat(st: &AppState, req: ChatRequest, started: Instant) -> ApiResult<Job> {
    let model = models::load(&st.store, &req.model)?;
    let (options, keep_alive) =
        options_and_keep_alive(st, &model, req.options.as_ref(), req.keep_alive.as_ref())?;
    for m in &req.messages {
        if !["system", "user", "assistant", "tool"].contains(&m.role.as_str()) {
            return Err(ApiError::bad_request(format!(
                "invalid message role '{}': must be one of \"system\", \"user\", \"assistant\" or \"tool\"",
                m.role
            )));
        }
    }
    let template = effective_template(st, &model, None);
    let think = check_think(&model, &template, req.think.as_ref())?;
    // An empty list is what some clients send with every chat: no tools.
    let mut tools = req.tools.clone().filter(|t| !t.is_empty());
    if tools.is_some() && !models::supports_tools(&template) {
        return Err(ApiError::bad_request(format!(
            "{} does not support tools",
            model.display_name()
        )));
    }
    let tool_grammar = match (&tools, &req.tool_choice) {
        (Some(t), Some(choice)) => forced_call_schema(t, choice)?,
        _ => None,
    };
    if req.tool_choice.as_ref().and_then(|c| c.as_str()) == Some("none") {
        tools = None;
    }
    let completion = if req.messages.is_empty() {
        None
    } else {
        // As Ollama: the Modelfile's SYSTEM unless the request brings its own, then the
        // Modelfile's MESSAGEs, then the request's messages.
        let mut messages = Vec::new();
        if let Some(sys) = model
            .system
            .clone()
            .filter(|_| !req.messages.iter().any(|m| m.role == "system"))
        {
            messages.push(Message::new("system", sys));
        }
        messages.extend(model.messages.iter().cloned());
        messages.extend(req.messages.iter().cloned());
        let truncate = req.answer.truncate.unwrap_or(true);
        let (prompt, cut_bytes) = bounded(
            Prompt::Chat {
                messages,
                template: model.template.clone(),
                tools: tools.clone(),
                think,
            },
            &options,
            truncate,
        )?;
        Some(CompletionRequest {
            id: 0,
            prompt,
            context: Vec::new(),
            options: options.clone(),
            want_context: false,
            format: check_format(req.format.as_ref())?,
            tool_grammar,
            truncate,
            shift: req.answer.shift.unwrap_or(true),
            cut_bytes,
            logprobs: check_logprobs(req.answer.logprobs, req.answer.top_logprobs)?,
            count_only: false,
        })
    };
    Ok(Job {
        kind: Kind::Chat,
        endpoint: "/api/chat",
        model,
        options,
        keep_alive,
        completion,
        stream: req.stream.unwrap_or(true),
        started,
        think: think == Some(true),
        tools: tools.is_some(),
    })
}

/// How many tokens a chat's prompt takes for its model, as its template renders it. A prompt
/// longer than the context is counted whole: the tokens kept and those truncation drops.
pub(crate) async fn count_chat_tokens(st: &AppState, mut req: ChatRequest) -> ApiResult<u64> {
    req.answer.truncate = Some(true);
    let job = prepare_chat(st, req, Instant::now())?;
    let Some(mut completion) = job.completion.clone() else {
        return Ok(0);
    };
    completion.count_only = true;
    let lease = acquire(st, &job.model, &job.options, job.keep_alive).await?;
    let (_, mut events) = lease
        .runner
        .completion(completion)
        .await
        .map_err(ApiError::internal)?;
    match events.recv().await {
        Some(RunnerEvent::Accepted {
            prompt_tokens,
            truncated,
            ..
        }) => Ok(prompt_tokens + truncated),
        Some(RunnerEvent::Error {
            message, invalid, ..
        }) if invalid => Err(ApiError::bad_request(message)),
        Some(RunnerEvent::Error { message, .. }) => Err(ApiError::internal(message)),
        _ => Err(ApiError::internal(
            "the runner ended the request without an answer",
        )),
    }
}

/// Each text of a prompt cut to what could fit the context, before it is sent to the runner: a
/// 30 MB prompt for a 4096-token context is then half a megabyte on its way, not 30 MB copied
/// through every step (the runner truncates the tokens exactly afterwards). Returns the prompt
/// and the bytes cut; with `truncate: false` a text that certainly cannot fit is refused.
fn bounded(mut prompt: Prompt, options: &Options, truncate: bool) -> ApiResult<(Prompt, u64)> {
    let n_ctx = options.num_ctx_or_default().max(1) as usize;
    let keep = options.num_keep.unwrap_or(opt::DEFAULT_NUM_KEEP).max(0) as usize;
    let texts: Vec<&mut String> = match &mut prompt {
        Prompt::Raw { text } => vec![text],
        Prompt::Infill { prefix, suffix, .. } => vec![prefix, suffix],
        Prompt::Chat { messages, .. } => messages.iter_mut().map(|m| &mut m.content).collect(),
    };
    let mut cut = 0;
    for text in texts {
        if !truncate && corral_api::text::certainly_exceeds(text, n_ctx) {
            return Err(ApiError::bad_request(format!(
                "the input length exceeds the context length: far over {n_ctx} tokens ({} bytes), num_ctx {n_ctx}",
                text.len()
            )));
        }
        cut += corral_api::text::bound_to_context(text, n_ctx, keep);
    }
    if cut > 0 {
        tracing::warn!(
            bytes = cut,
            n_ctx,
            "prompt far longer than the context: cut before it is sent to the runner"
        );
    }
    Ok((prompt, cut as u64))
}

/// The template a model's prompts are rendered with: the request's, the Modelfile's, the
/// GGUF's own, or Ollama's default.
fn effective_template(st: &AppState, model: &Model, request: Option<&str>) -> String {
    request
        .map(str::to_string)
        .or_else(|| model.template.clone())
        .or_else(|| gguf_info(st, model).and_then(|i| i.chat_template().map(str::to_string)))
        .unwrap_or_else(|| corral_template::DEFAULT_TEMPLATE.to_string())
}

/// How a model fills in the middle: through its Go template when that uses `.Suffix`
/// (`Some(template)`), else from its vocabulary's FIM tokens (`None`); a model with neither
/// answers 400 `<model> does not support insert`, as Ollama's does.
fn check_insert(st: &AppState, model: &Model, template: &str) -> ApiResult<Option<String>> {
    if models::supports_insert(template) {
        return Ok(Some(template.to_string()));
    }
    if gguf_info(st, model).is_some_and(|i| i.fim_tokens().is_some()) {
        return Ok(None);
    }
    Err(ApiError::bad_request(format!(
        "{} does not support insert",
        model.display_name()
    )))
}

/// `think`: `true`/`false`, or a level (`"low"`, `"medium"`, `"high"`, which mean true). Asking
/// a model whose template cannot think is a 400, as with Ollama.
fn check_think(
    model: &Model,
    template: &str,
    think: Option<&serde_json::Value>,
) -> ApiResult<Option<bool>> {
    let on = match think {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) if ["low", "medium", "high"].contains(&s.as_str()) => {
            true
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
            "invalid think value: {other}; expected true, false, \"low\", \"medium\" or \"high\""
        )))
        }
    };
    if on && !models::supports_thinking(template) {
        return Err(ApiError::bad_request(format!(
            "\"{}\" does not support thinking",
            model.display_name()
        )));
    }
    Ok(Some(on))
}

/// For `tool_choice` `"required"` or a named function: the JSON schema of a call to one of the
/// allowed tools, which the runner enforces with a grammar. `"auto"`/`"none"`: nothing forced.
fn forced_call_schema(
    tools: &[serde_json::Value],
    choice: &serde_json::Value,
) -> ApiResult<Option<serde_json::Value>> {
    let wanted: Option<&str> = match choice {
        serde_json::Value::String(s) if s == "auto" || s == "none" => return Ok(None),
        serde_json::Value::String(s) if s == "required" => None,
        serde_json::Value::Object(_) => Some(choice["function"]["name"].as_str().ok_or_else(|| {
            ApiError::bad_request("tool_choice must name a function: {\"type\": \"function\", \"function\": {\"name\": ...}}")
        })?),
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid tool_choice: {other}; expected \"auto\", \"none\", \"required\" or a function"
            )))
        }
    };
    let options: Vec<serde_json::Value> = tools
        .iter()
        .filter_map(|t| {
            let f = &t["function"];
            let name = f["name"].as_str()?;
            if wanted.is_some_and(|w| w != name) {
                return None;
            }
            let params = match &f["parameters"] {
                p @ serde_json::Value::Object(_) => p.clone(),
                _ => serde_json::json!({"type": "object"}),
            };
            Some(serde_json::json!({
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": params},
                "required": ["name", "arguments"],
            }))
        })
        .collect();
    if options.is_empty() {
        return Err(ApiError::bad_request(format!(
            "tool_choice names a function that is not among the tools: {}",
            wanted.unwrap_or_default()
        )));
    }
    Ok(Some(serde_json::json!({ "anyOf": options })))
}

/// `logprobs` and `top_logprobs` (0 to 20, as Ollama): how many alternatives to report with
/// each token, or `None` for no log probabilities. `top_logprobs` alone asks for them too.
fn check_logprobs(logprobs: Option<bool>, top: Option<i64>) -> ApiResult<Option<u32>> {
    let top = top.unwrap_or(0);
    if !(0..=20).contains(&top) {
        return Err(ApiError::bad_request(
            "top_logprobs must be between 0 and 20",
        ));
    }
    Ok((logprobs == Some(true) || top > 0).then_some(top as u32))
}

/// `format` must be `"json"` or a JSON schema (an object); empty means none.
fn check_format(format: Option<&serde_json::Value>) -> ApiResult<Option<serde_json::Value>> {
    match format {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) if s == "json" => Ok(Some(serde_json::json!("json"))),
        Some(v @ serde_json::Value::Object(_)) => Ok(Some(v.clone())),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid format: {other}; expected \"json\" or a JSON schema"
        ))),
    }
}

fn load_spec(st: &AppState, model: &Model, o: &Options) -> ApiResult<LoadSpec> {
    // A model's own num_parallel (Modelfile or request) before the server's.
    let parallel = o
        .num_parallel
        .map_or(st.config.num_parallel, |n| n as u32)
        .max(1);
    let num_ctx = o.num_ctx.unwrap_or(opt::DEFAULT_NUM_CTX) as u64 * parallel as u64;
    let num_gpu = corral_devices::gpu_layers(
        st.devices.mode,
        o.num_gpu,
        !st.devices.gpus.is_empty(),
        || {
            let Some(info) = gguf_info(st, model) else {
                return 0;
            };
            let n_layers = info.block_count().max(1) as u32;
            let weights = model.entry.manifest.layer("model").map_or(0, |l| l.size);
            let cost = corral_devices::fit::ModelCost {
                n_layers,
                layer_bytes: weights / (n_layers as u64 + 1),
                kv_bytes_per_layer: info.kv_cache_bytes(num_ctx) / n_layers as u64,
                output_bytes: weights / (n_layers as u64 + 1),
            };
            let free: Vec<corral_devices::fit::GpuFree> = st
                .devices
                .gpus
                .iter()
                .map(|g| corral_devices::fit::GpuFree {
                    free: g.memory_free,
                })
                .collect();
            corral_devices::fit::fit_layers(&free, &cost)
        },
    )
    .map_err(ApiError::internal)?;
    Ok(LoadSpec {
        model_path: model.model_path.clone(),
        num_ctx: o.num_ctx.unwrap_or(opt::DEFAULT_NUM_CTX) as u32,
        num_batch: o.num_batch.unwrap_or(opt::DEFAULT_NUM_BATCH) as u32,
        num_thread: o
            .num_thread
            .filter(|n| *n > 0)
            .map_or(st.config.threads, |n| n as u32),
        num_gpu,
        use_mmap: o.use_mmap.unwrap_or(true),
        parallel,
        adapter: model.adapter_path.clone(),
    })
}

/// GGUF metadata of a model, read once per blob.
fn gguf_info(st: &AppState, model: &Model) -> Option<std::sync::Arc<corral_gguf::GgufInfo>> {
    let digest = model.entry.manifest.layer("model")?.digest.clone();
    if let Some(i) = st.gguf.lock().unwrap().get(&digest) {
        return Some(i.clone());
    }
    let info = std::sync::Arc::new(corral_gguf::read(&model.model_path).ok()?);
    st.gguf.lock().unwrap().insert(digest, info.clone());
    Some(info)
}

/// Memory a model needs loaded as `spec` says: its weights and its KV cache.
fn required_memory(st: &AppState, model: &Model, spec: &LoadSpec) -> u64 {
    let weights = model.entry.manifest.layer("model").map_or(0, |l| l.size);
    let kv = gguf_info(st, model).map_or(0, |i| {
        i.kv_cache_bytes(spec.num_ctx as u64 * spec.parallel as u64)
    });
    weights + kv
}

/// Load (or find loaded) the runner for a model with these options: the one path from a
/// validated request to a lease, shared by completions and embeddings.
pub(crate) async fn acquire(
    st: &AppState,
    model: &Model,
    options: &Options,
    keep_alive: KeepAlive,
) -> Result<Lease, ApiError> {
    let asked = Instant::now();
    let spec = load_spec(st, model, options)?;
    let meta = ModelMeta {
        name: model.display_name(),
        digest: model.entry.digest.hex().to_string(),
        details: model.details(),
        required_memory: required_memory(st, model, &spec),
        n_layers: gguf_info(st, model).map_or(0, |i| i.block_count() as u32),
    };
    match st.scheduler.acquire(meta, spec, keep_alive).await {
        // As Ollama, load_duration is the time until the runner was ready for this request:
        // the load when there was one, else the wait for the scheduler (never 0).
        Ok(mut l) => {
            let waited = asked.elapsed().max(std::time::Duration::from_nanos(1));
            l.load_duration = Some(l.load_duration.map_or(waited, |d| d.max(waited)));
            Ok(l)
        }
        Err(e @ AcquireError::Busy) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
        Err(AcquireError::Failed(e)) => Err(ApiError::internal(e)),
    }
}

async fn run(st: AppState, job: Job) -> Response {
    let name = job.model.display_name();
    let unload = job.keep_alive == KeepAlive::For(std::time::Duration::ZERO);
    if job.completion.is_none() && unload {
        // An empty prompt with keep_alive 0 unloads the model without loading it first.
        st.scheduler.unload(&name).await;
        let metrics = Metrics {
            total_duration: job.started.elapsed().as_nanos() as u64,
            ..Default::default()
        };
        return json_ok(final_object(&job, "unload", metrics, None, String::new()));
    }
    // Counted as waiting from here: the load, if any, then the queue for a slot.
    let mut tracker = job
        .completion
        .is_some()
        .then(|| st.metrics.track(&name, job.endpoint));
    let lease = match acquire(&st, &job.model, &job.options, job.keep_alive).await {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let (Some(completion), Some(tracker)) = (job.completion.clone(), tracker.take()) else {
        // An empty prompt loads the model.
        let load_duration = lease.load_duration.unwrap_or_default().as_nanos() as u64;
        let metrics = Metrics {
            load_duration,
            total_duration: job.started.elapsed().as_nanos() as u64,
            ..Default::default()
        };
        return json_ok(final_object(&job, "load", metrics, None, String::new()));
    };
    let (id, mut events) = match lease.runner.completion(completion).await {
        Ok(x) => x,
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let mut watch = Watch {
        stall: st.config.stall_timeout,
        shutdown: st.shutdown.clone(),
        started: false,
    };
    // The runner checks and tokenizes the prompt on arrival: a prompt it refuses (too long
    // with `truncate: false`, a bad schema) is an HTTP error, not a line inside a 200 stream.
    match watch.next(&lease, &mut events).await {
        Ok(Some(RunnerEvent::Accepted { .. })) => {}
        Ok(Some(RunnerEvent::Error {
            message, invalid, ..
        })) => {
            return if invalid {
                ApiError::bad_request(message)
            } else {
                ApiError::internal(message)
            }
            .into_response()
        }
        Ok(other) => {
            tracing::warn!(id, "unexpected first runner event: {other:?}");
            return ApiError::internal("the runner ended the request without an answer")
                .into_response();
        }
        Err(message) => {
            lease.runner.cancel(id).await;
            return ApiError::internal(message).into_response();
        }
    }
    let answer = Answer {
        job,
        lease,
        events,
        watch,
        tracker,
    };
    if answer.job.stream {
        stream_response(answer, id)
    } else {
        collect_response(answer).await
    }
}

/// A request the runner has accepted, and what follows its answer.
struct Answer {
    job: Job,
    lease: Lease,
    events: mpsc::UnboundedReceiver<RunnerEvent>,
    watch: Watch,
    tracker: Tracker,
}

/// Watches one request for stalls and for server shutdown.
struct Watch {
    stall: std::time::Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// Set once the runner has begun the request; queued requests wait without a stall clock.
    started: bool,
}

impl Watch {
    /// The next event, or an error message if the runner stalled or the server is stopping.
    async fn next(
        &mut self,
        lease: &Lease,
        events: &mut mpsc::UnboundedReceiver<RunnerEvent>,
    ) -> Result<Option<RunnerEvent>, String> {
        if *self.shutdown.borrow() {
            return Err("the server is shutting down".into());
        }
        let stall = async {
            if self.started {
                tokio::time::sleep(self.stall).await
            } else {
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            ev = events.recv() => {
                // Accepted means queued, not yet running: no stall clock for it.
                if !matches!(ev, Some(RunnerEvent::Accepted { .. })) {
                    self.started = true;
                }
                Ok(ev)
            }
            _ = stall => {
                // A runner that makes no progress is stuck: replace it rather than wait forever.
                lease.runner.kill().await;
                Err(format!(
                    "the model stopped making progress: no token for {}s; its runner was stopped and will be restarted",
                    self.stall.as_secs_f32()
                ))
            }
            _ = self.shutdown.changed() => Err("the server is shutting down".into()),
        }
    }
}

/// The answer as NDJSON, one object per piece, produced as the runner writes.
fn stream_response(answer: Answer, id: u64) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let Answer {
        job,
        lease,
        mut events,
        mut watch,
        mut tracker,
    } = answer;
    let mut parser = OutputParser::new(job.think, job.tools);
    // Log probabilities wait for the next object that carries text (the parsers may hold a
    // token's text back), or the final one.
    let mut logprobs: Vec<Logprob> = Vec::new();
    tokio::spawn(async move {
        loop {
            let ev = match watch.next(&lease, &mut events).await {
                Ok(Some(ev)) => ev,
                Ok(None) => {
                    let message = "the runner ended the request without an answer";
                    let _ = tx
                        .send(Ok(ndjson(&serde_json::json!({ "error": message }))))
                        .await;
                    return;
                }
                Err(message) => {
                    lease.runner.cancel(id).await;
                    let _ = tx
                        .send(Ok(ndjson(&serde_json::json!({ "error": message }))))
                        .await;
                    return;
                }
            };
            let lines: Vec<serde_json::Value> = match ev {
                RunnerEvent::Token {
                    text, logprobs: lp, ..
                } => {
                    tracker.token();
                    logprobs.extend(lp);
                    let pieces: Vec<Out> = if parser.active() {
                        parser.push(&text).into_iter().map(Out::from).collect()
                    } else if text.is_empty() {
                        Vec::new()
                    } else {
                        vec![Out::from(text)]
                    };
                    pieces
                        .into_iter()
                        .map(|mut o| {
                            o.logprobs = std::mem::take(&mut logprobs);
                            answer_object(&job, o, None)
                        })
                        .collect()
                }
                RunnerEvent::Done(d) => {
                    let mut lines: Vec<serde_json::Value> = parser
                        .finish()
                        .into_iter()
                        .map(|p| {
                            let mut o = Out::from(p);
                            o.logprobs = std::mem::take(&mut logprobs);
                            answer_object(&job, o, None)
                        })
                        .collect();
                    let (reason, metrics, ctx) = done_parts(&job, &lease, &d, &mut tracker);
                    let last = Out {
                        logprobs: std::mem::take(&mut logprobs),
                        ..Out::default()
                    };
                    lines.push(answer_object(&job, last, Some((reason, metrics, ctx))));
                    for line in lines {
                        if tx.send(Ok(ndjson(&line))).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                RunnerEvent::Error { message, .. } => {
                    let _ = tx
                        .send(Ok(ndjson(&serde_json::json!({ "error": message }))))
                        .await;
                    return;
                }
                RunnerEvent::Started { .. } => {
                    tracker.started();
                    continue;
                }
                RunnerEvent::Progress { .. }
                | RunnerEvent::Accepted { .. }
                | RunnerEvent::Usage { .. }
                | RunnerEvent::Ready(_)
                | RunnerEvent::Loading { .. }
                | RunnerEvent::Pong { .. }
                | RunnerEvent::Embeddings { .. } => continue,
            };
            for line in lines {
                if tx.send(Ok(ndjson(&line))).await.is_err() {
                    // The client went away: free the runner at its next token.
                    lease.runner.cancel(id).await;
                    return;
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .expect("valid response")
}

/// The answer as one object (`"stream": false`).
async fn collect_response(answer: Answer) -> Response {
    let Answer {
        job,
        lease,
        mut events,
        mut watch,
        mut tracker,
    } = answer;
    let mut parser = OutputParser::new(job.think, job.tools);
    let mut out = Out::default();
    loop {
        let ev = match watch.next(&lease, &mut events).await {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(message) => return ApiError::internal(message).into_response(),
        };
        match ev {
            RunnerEvent::Token {
                text: t, logprobs, ..
            } => {
                tracker.token();
                out.logprobs.extend(logprobs);
                if parser.active() {
                    for p in parser.push(&t) {
                        out.add(p);
                    }
                } else {
                    out.content.push_str(&t);
                }
            }
            RunnerEvent::Started { .. } => tracker.started(),
            RunnerEvent::Done(d) => {
                for p in parser.finish() {
                    out.add(p);
                }
                let (reason, metrics, ctx) = done_parts(&job, &lease, &d, &mut tracker);
                return json_ok(answer_object(&job, out, Some((reason, metrics, ctx))));
            }
            RunnerEvent::Error { message, .. } => {
                return ApiError::internal(message).into_response()
            }
            _ => {}
        }
    }
    ApiError::internal("runner closed the request without an answer").into_response()
}

fn done_parts(
    job: &Job,
    lease: &Lease,
    d: &DoneInfo,
    tracker: &mut Tracker,
) -> (&'static str, Metrics, Option<Vec<i32>>) {
    tracker.finished(
        d.prompt_eval_count,
        d.prompt_cached,
        d.eval_count,
        d.prompt_truncated,
    );
    let metrics = Metrics {
        total_duration: job.started.elapsed().as_nanos() as u64,
        load_duration: lease.load_duration.unwrap_or_default().as_nanos() as u64,
        prompt_eval_count: d.prompt_eval_count,
        prompt_cached_count: d.prompt_cached,
        prompt_eval_duration: d.prompt_eval_duration_ns,
        eval_count: d.eval_count,
        eval_duration: d.eval_duration_ns,
        prompt_truncated_tokens: d.prompt_truncated,
    };
    (d.reason.as_str(), metrics, d.context.clone())
}

/// What ends an answer: its reason, counts and timings, and generate's `context`.
type Ending = (&'static str, Metrics, Option<Vec<i32>>);

fn final_object(
    job: &Job,
    reason: &'static str,
    metrics: Metrics,
    context: Option<Vec<i32>>,
    text: String,
) -> serde_json::Value {
    answer_object(job, Out::from(text), Some((reason, metrics, context)))
}

/// The parts of an answer object: text, thinking, tool calls.
#[derive(Debug, Default)]
struct Out {
    content: String,
    thinking: Option<String>,
    tool_calls: Option<Vec<serde_json::Value>>,
    logprobs: Vec<Logprob>,
}

impl Out {
    fn add(&mut self, p: Piece) {
        match p {
            Piece::Content(t) => self.content.push_str(&t),
            Piece::Thinking(t) => self.thinking.get_or_insert_with(String::new).push_str(&t),
            Piece::ToolCalls(c) => self.tool_calls.get_or_insert_with(Vec::new).extend(c),
        }
    }
}

impl From<Piece> for Out {
    fn from(p: Piece) -> Self {
        let mut o = Out::default();
        o.add(p);
        o
    }
}

impl From<String> for Out {
    fn from(content: String) -> Self {
        Out {
            content,
            ..Default::default()
        }
    }
}

/// One object of an answer, shaped for the endpoint: a piece, or the final one with `ending`.
fn answer_object(job: &Job, out: Out, ending: Option<Ending>) -> serde_json::Value {
    let model = job.model.display_name();
    let done = ending.is_some();
    let (reason, metrics, context) = match ending {
        Some((r, m, c)) => (Some(r.to_string()), m, c),
        None => (None, Metrics::default(), None),
    };
    let logprobs = (!out.logprobs.is_empty()).then_some(out.logprobs);
    let v = match job.kind {
        Kind::Generate => serde_json::to_value(GenerateResponse {
            model,
            created_at: Utc::now(),
            response: out.content,
            thinking: out.thinking,
            done,
            done_reason: reason,
            context,
            logprobs,
            metrics,
        }),
        Kind::Chat => serde_json::to_value(ChatResponse {
            model,
            created_at: Utc::now(),
            message: Message {
                role: "assistant".into(),
                content: out.content,
                thinking: out.thinking,
                tool_calls: out.tool_calls,
                ..Default::default()
            },
            done,
            done_reason: reason,
            logprobs,
            metrics,
        }),
    };
    v.expect("responses serialize")
}

fn json_ok(v: serde_json::Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

fn ndjson(v: &impl serde::Serialize) -> Bytes {
    let mut line = serde_json::to_vec(v).expect("responses serialize");
    line.push(b'\n');
    Bytes::from(line)
}
