//! `/api/generate` and `/api/chat`: validate, pick the runner, stream its answer as NDJSON.
//!
//! The path of a request, a file each: `prepare` (the request checked and turned into a
//! runner job: options, context length, template, prompt bounds, format, tools, thinking,
//! insert), `load` (the runner it needs: load settings, memory, the lease), this file (send it
//! and wait for the runner to accept it), `answer` (stream or collect what the runner writes,
//! watched for stalls, shaped for the endpoint).

mod answer;
mod load;
mod prepare;

pub(crate) use answer::CancelOnDrop;
use answer::{collect_response, final_object, json_ok, stream_response, Watch};
pub(crate) use load::acquire;
use load::gguf_info;
pub(crate) use prepare::options_and_keep_alive;
use prepare::{prepare_chat, prepare_generate};

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
    /// The model's name as the request gave it: answers echo it, as Ollama's do.
    requested: String,
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
    /// One tool call at most (`parallel_tool_calls: false`).
    single_call: bool,
}

impl Job {
    /// The parser for this job's answer: a forced call's answer is a call or nothing.
    fn parser(&self) -> OutputParser {
        let forced = self
            .completion
            .as_ref()
            .is_some_and(|c| c.tool_grammar.is_some());
        OutputParser::new(self.think, self.tools)
            .forced(forced)
            .single(self.single_call)
    }
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

/// How many tokens a chat's prompt takes for its model, as its template renders it. A prompt
/// longer than the context is counted whole: the tokens kept and those truncation drops.
pub(crate) async fn count_chat_tokens(st: &AppState, mut req: ChatRequest) -> ApiResult<u64> {
    req.answer.truncate = Some(true);
    let job = prepare_chat(st, req, Instant::now())?;
    let Some(mut completion) = job.completion.clone() else {
        return Ok(0);
    };
    completion.count_only = true;
    completion.render_only = false;
    completion.tool_grammar = None;
    let (tokens, truncated, _) = accepted_only(st, &job, completion).await?;
    Ok(tokens + truncated)
}

/// Ollama's `_debug_render_only`: the answer's first object, not done, with the prompt as the
/// model's template renders it in `_debug_info.rendered_template` (the model is loaded for
/// it, as in Ollama: its runner renders and tokenizes prompts).
async fn render_only(st: &AppState, job: &Job, completion: CompletionRequest) -> Response {
    match accepted_only(st, job, completion).await {
        Ok((_, _, rendered)) => {
            let mut v = answer::answer_object(job, answer::Out::default(), None);
            v["_debug_info"] =
                serde_json::json!({"rendered_template": rendered.unwrap_or_default()});
            json_ok(v)
        }
        Err(e) => e.into_response(),
    }
}

/// Send a completion that the runner only renders and tokenizes (`count_only` or
/// `render_only`): what its `Accepted` says (prompt tokens kept, tokens truncation drops, the
/// rendered prompt when asked for).
async fn accepted_only(
    st: &AppState,
    job: &Job,
    completion: CompletionRequest,
) -> ApiResult<(u64, u64, Option<String>)> {
    let lease = acquire(st, &job.model, &job.options, job.keep_alive).await?;
    let (_, mut events) = lease
        .runner
        .completion(completion)
        .await
        .map_err(ApiError::internal)?;
    let event = tokio::time::timeout(st.config.stall_timeout, events.recv())
        .await
        .map_err(|_| {
            ApiError::internal(format!(
                "the model did not read the prompt within {}s",
                st.config.stall_timeout.as_secs_f32()
            ))
        })?;
    match event {
        Some(RunnerEvent::Accepted {
            prompt_tokens,
            truncated,
            rendered,
            ..
        }) => Ok((prompt_tokens, truncated, rendered)),
        Some(RunnerEvent::Error {
            message, invalid, ..
        }) if invalid => Err(ApiError::bad_request(message)),
        Some(RunnerEvent::Error { message, .. }) => Err(ApiError::internal(message)),
        _ => Err(ApiError::internal(
            "the runner ended the request without an answer",
        )),
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
    if let Some(c) = job.completion.as_ref().filter(|c| c.render_only) {
        return render_only(&st, &job, c.clone()).await;
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
    // A client that goes away (or a handler dropped for any reason) frees the runner's slot.
    let cancel = CancelOnDrop::new(lease.runner.clone(), id);
    // The stall clock runs until the runner accepts the request (it prepares a request as it
    // reads it, between two steps), then stops while the request waits for a slot.
    let mut watch = Watch {
        stall: st.config.stall_timeout,
        shutdown: st.shutdown.clone(),
        started: true,
    };
    // The runner checks and tokenizes the prompt on arrival: a prompt it refuses (too long
    // with `truncate: false`, a bad schema) is an HTTP error, not a line inside a 200 stream.
    let prompt_tokens = match watch.next(&lease, &mut events).await {
        Ok(Some(RunnerEvent::Accepted { prompt_tokens, .. })) => {
            watch.started = false;
            prompt_tokens
        }
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
    };
    let answer = Answer {
        job,
        lease,
        events,
        watch,
        tracker,
        cancel,
    };
    let mut resp = if answer.job.stream {
        stream_response(answer, id)
    } else {
        collect_response(answer).await
    };
    resp.extensions_mut().insert(PromptTokens(prompt_tokens));
    resp
}

/// The prompt's size in tokens (cached ones included), known when the runner accepts the
/// request: a response extension, never sent, for routes whose stream announces it before the
/// first token (Anthropic's `message_start`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PromptTokens(pub u64);

/// A request the runner has accepted, and what follows its answer.
struct Answer {
    job: Job,
    lease: Lease,
    events: mpsc::UnboundedReceiver<RunnerEvent>,
    watch: Watch,
    tracker: Tracker,
    /// Cancels the request in the runner if the answer is dropped before its end.
    cancel: CancelOnDrop,
}
