//! The private protocol between the server and a runner process: one JSON object per line,
//! requests on the runner's stdin, events on its stdout. The runner's stderr is its log.
//!
//! Every request carries an `id`; every event about a request carries the same `id`, so a
//! runner can serve several requests at once and the server can route each event to its client.

use serde::{Deserialize, Serialize};

use crate::{Message, Options};

/// What the server asks of a runner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunnerRequest {
    /// Render, tokenize, evaluate and stream a completion.
    Completion(Box<CompletionRequest>),
    /// Stop the request with this id at the next token; its `done` event follows.
    Cancel { id: u64 },
    /// A health check: answered with `Pong` as soon as the runner reads it.
    Ping { id: u64 },
    /// Embed each input: answered with `Embeddings` (or `Error`).
    Embed(EmbedJob),
}

/// Inputs to embed in one runner pass.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbedJob {
    pub id: u64,
    pub inputs: Vec<String>,
    /// Cut inputs longer than the context instead of failing.
    pub truncate: bool,
}

/// Where a model's thinking ends: the server splits the answer there, and a format or a
/// forced tool call constrains only what follows.
pub const THINK_END: &str = "</think>";

/// How the prompt is built from the request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Prompt {
    /// Text used as it is (`raw: true`).
    Raw { text: String },
    /// Fill in the middle between `prefix` and `suffix`: through a Go template that uses
    /// `.Suffix` when there is one, else from the vocabulary's FIM tokens.
    Infill {
        prefix: String,
        suffix: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        system: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<String>,
    },
    /// Messages rendered through the model's template.
    Chat {
        messages: Vec<Message>,
        /// A Modelfile `TEMPLATE` (Go text/template). `None`: the GGUF's own chat template.
        #[serde(default)]
        template: Option<String>,
        /// Tools the template renders (`.Tools`, `tools`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tools: Option<Vec<serde_json::Value>>,
        /// Thinking on or off, for templates that switch it (`.Think`, `enable_thinking`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        think: Option<bool>,
        /// The thinking level asked for (`low`, `medium`, `high`): `.ThinkLevel`,
        /// `reasoning_effort`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        think_level: Option<String>,
    },
}

/// One completion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletionRequest {
    pub id: u64,
    pub prompt: Prompt,
    /// Tokens of an earlier `/api/generate` answer to continue from.
    #[serde(default)]
    pub context: Vec<i32>,
    /// Sampling options, already merged (defaults, model parameters, request).
    pub options: Options,
    /// Return the token ids of prompt and answer in `done.context` (generate does).
    #[serde(default)]
    pub want_context: bool,
    /// Structured output: `"json"` or a JSON schema, enforced by a grammar while sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<serde_json::Value>,
    /// A tool call the answer must be: the JSON schema of the call, written as
    /// `<tool_call>{...}</tool_call>` under a grammar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_grammar: Option<serde_json::Value>,
    /// Cut a prompt longer than the context (keeping its start and its end); `false` refuses
    /// it instead.
    #[serde(default = "yes")]
    pub truncate: bool,
    /// Shift the context when the answer fills it; `false` ends the answer there.
    #[serde(default = "yes")]
    pub shift: bool,
    /// Bytes the server already cut from the prompt's texts (far beyond the context), for the
    /// count of dropped tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cut_bytes: u64,
    /// Log probabilities with each token, and this many alternatives (`None`: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    /// Added to these tokens' logits before sampling (OpenAI's `logit_bias`): sorted by
    /// token, each once, each bias within -100 to 100. The runner checks the ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logit_bias: Vec<(i32, f32)>,
    /// Only count the prompt's tokens: `Accepted` (with the count), then an empty `Done`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub count_only: bool,
    /// Only render the prompt (Ollama's `_debug_render_only`): `Accepted` with the text the
    /// template made, then an empty `Done`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub render_only: bool,
}

fn yes() -> bool {
    true
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why a completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoneReason {
    Stop,
    Length,
    Cancelled,
}

impl DoneReason {
    /// The `done_reason` string Ollama sends.
    pub fn as_str(self) -> &'static str {
        match self {
            DoneReason::Stop | DoneReason::Cancelled => "stop",
            DoneReason::Length => "length",
        }
    }
}

/// What a runner reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunnerEvent {
    /// Loading is under way (fraction done); keeps the load timeout from running out.
    Loading { progress: f32 },
    /// The model is loaded and the runner takes requests.
    Ready(ReadyInfo),
    /// A runner started with `--quantize` has written `done` of the model's `total` tensors.
    Quantizing { done: u32, total: u32 },
    /// A runner started with `--convert` has written `done` of the model's `total` tensors.
    Converting { done: u32, total: u32 },
    /// The request is valid and queued for a slot: its prompt is rendered and tokenized.
    Accepted {
        id: u64,
        /// Prompt tokens after truncation.
        prompt_tokens: u64,
        /// Prompt tokens dropped to fit the context (estimated for text the server cut).
        truncated: u64,
        /// With `render_only`: the prompt as rendered, after the text of `context`'s tokens.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rendered: Option<String>,
    },
    /// The request has a slot and is being evaluated.
    Started { id: u64 },
    /// KV cache cells held by running requests, of all the runner's cells; sent as it changes
    /// (at most a few times a second).
    Usage { kv_used: u64, kv_total: u64 },
    /// Prompt evaluation is under way (also a sign of life for stall detection).
    Progress { id: u64, evaluated: u64, total: u64 },
    /// A piece of the answer, with the log probabilities of the tokens it completes (when
    /// asked for).
    Token {
        id: u64,
        text: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        logprobs: Vec<crate::Logprob>,
    },
    /// The answer is complete.
    Done(DoneInfo),
    /// The request failed; the runner goes on serving. `invalid`: the request itself is at
    /// fault (a 400), not the runner.
    Error {
        id: u64,
        message: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        invalid: bool,
    },
    /// The answer to a `Ping`.
    Pong { id: u64 },
    /// The answer to an `Embed`: one pooled (not normalized) vector per input.
    Embeddings {
        id: u64,
        embeddings: Vec<Vec<f32>>,
        prompt_eval_count: u64,
    },
}

/// Facts about the loaded model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadyInfo {
    pub n_ctx: u32,
    pub n_ctx_train: u32,
    pub n_threads: u32,
    pub load_duration_ns: u64,
    /// Bytes of the model weights as loaded.
    pub model_size: u64,
    /// Repeating layers of the model (0 from a runner that did not say).
    #[serde(default)]
    pub n_layer: u32,
    /// Layers placed on devices other than the CPU (local GPUs and RPC workers), the output
    /// layer counted, as llama.cpp splits them.
    #[serde(default)]
    pub offloaded: u32,
    /// The RPC workers asked for: the layers each holds, or why it was left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerUse>,
}

/// How a runner uses one RPC worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerUse {
    /// `host:port`.
    pub endpoint: String,
    /// Layers placed on its devices (the output layer counts as one); 0 when left out.
    pub layers: u32,
    /// Why it was left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Counts and timings of a finished completion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoneInfo {
    pub id: u64,
    pub reason: DoneReason,
    /// Prompt tokens evaluated for this request.
    pub prompt_eval_count: u64,
    /// Prompt tokens taken from the slot's cache instead (not evaluated again).
    #[serde(default)]
    pub prompt_cached: u64,
    pub prompt_eval_duration_ns: u64,
    pub eval_count: u64,
    pub eval_duration_ns: u64,
    /// Prompt tokens dropped to fit the context.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prompt_truncated: u64,
    /// Speculative tokens proposed (by a draft model or prompt lookup) and confirmed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub draft_proposed: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub draft_accepted: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<i32>>,
    /// The stop sequence that ended the answer, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequence: Option<String>,
}
