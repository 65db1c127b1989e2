//! Ollama's `/api/*` request and response bodies, with Ollama's field names.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A chat message as Ollama sends and receives it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    /// The OpenAI-style id of the tool call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A message with just a role and text.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            ..Default::default()
        }
    }
}

/// `POST /api/generate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<i32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default)]
    pub raw: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<Value>,
    /// `truncate`, `shift`, `logprobs`, `top_logprobs`.
    #[serde(flatten)]
    pub answer: AnswerOptions,
}

/// `POST /api/chat`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// A Corral extension, as OpenAI's: `"auto"` (default), `"none"`, `"required"`, or
    /// `{"type": "function", "function": {"name": ...}}`; a required call is enforced by a grammar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// A Corral extension, as OpenAI's: `false` keeps an answer to one tool call (the first),
    /// and ends the answer when that call is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<Value>,
    /// `truncate`, `shift`, `logprobs`, `top_logprobs`, `logit_bias`.
    #[serde(flatten)]
    pub answer: AnswerOptions,
}

/// Fields of generate and chat that shape the answer beyond sampling.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AnswerOptions {
    /// `false`: a prompt longer than the context is refused instead of cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
    /// `false`: an answer that fills the context ends (`done_reason: "length"`) instead of
    /// shifting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<bool>,
    /// Return each generated token's log probability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// With `logprobs`, this many most likely tokens at each position (0 to 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<i64>,
    /// Beyond Ollama, as OpenAI's field and llama-server's: token ids (as strings) mapped to
    /// a bias from -100 to 100 added to their logits; -100 bans a token, 100 forces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<serde_json::Value>,
    /// Ollama's `_debug_render_only`: answer with the prompt as the template renders it
    /// (`_debug_info.rendered_template`) instead of running the model on it.
    #[serde(
        default,
        rename = "_debug_render_only",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub debug_render_only: bool,
}

/// A token and its log probability, as Ollama 0.12.11 sends them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
    /// The token's own bytes (its text may be part of a UTF-8 character).
    #[serde(default)]
    pub bytes: Vec<u8>,
}

/// A generated token's log probability and the most likely tokens at its position.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Logprob {
    #[serde(flatten)]
    pub token: TokenLogprob,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_logprobs: Vec<TokenLogprob>,
}

/// Timing and token counts carried by the final object of a generate or chat stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total_duration: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub load_duration: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prompt_eval_count: u64,
    /// Beyond Ollama: of the prompt's tokens (`prompt_eval_count`, the whole prompt, as Ollama
    /// counts it), those reused from the cache rather than evaluated.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prompt_cached_count: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prompt_eval_duration: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub eval_count: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub eval_duration: u64,
    /// Beyond Ollama: prompt tokens dropped to fit the context (present only when some were).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prompt_truncated_tokens: u64,
    /// Beyond Ollama: tokens speculation proposed (a draft model or prompt lookup) and the
    /// share of them the model confirmed, as llama-server's `draft_n` and `draft_n_accepted`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub draft_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub draft_accepted_tokens: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One object of a `/api/generate` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GenerateResponse {
    pub model: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub response: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    /// Beyond Ollama: the stop sequence that ended the answer, when one did (Anthropic's
    /// `stop_sequence` comes from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<i32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<Logprob>>,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// One object of a `/api/chat` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatResponse {
    pub model: String,
    pub created_at: DateTime<Utc>,
    pub message: Message,
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    /// Beyond Ollama: the stop sequence that ended the answer, when one did (Anthropic's
    /// `stop_sequence` comes from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<Logprob>>,
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// `POST /api/create`, in the structured form Ollama's clients send since 0.5.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateRequest {
    /// `name` is the older field, which Ollama still reads.
    #[serde(alias = "name")]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// File name to blob digest, for `FROM <file>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapters: Option<BTreeMap<String, String>>,
    /// `DRAFT <model>`: a model in the store whose weights draft tokens for this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<String>,
    /// `DRAFT <file>`: file name to blob digest, as `files`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_files: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// A Modelfile's `REQUIRES` (the Ollama version the model needs), stored in its config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires: Option<String>,
    /// `quantization` is the older field, which Ollama still reads.
    #[serde(
        default,
        alias = "quantization",
        skip_serializing_if = "Option::is_none"
    )]
    pub quantize: Option<String>,
}

/// A progress line of create, pull or push.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProgressResponse {
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
}

/// `POST /api/show`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShowRequest {
    #[serde(default, alias = "name")]
    pub model: String,
    /// With the tensor table and the long metadata arrays.
    #[serde(default)]
    pub verbose: bool,
    /// A system message that replaces the model's in the answer (its `system` and
    /// `modelfile`), as a session that set one shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Options laid over the model's parameters in the answer's `modelfile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, Value>>,
}

/// A tensor as verbose `show` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShowTensor {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    /// Innermost first, as GGUF stores it.
    pub shape: Vec<u64>,
}

/// The `details` object of tags, ps and show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelDetails {
    #[serde(default)]
    pub parent_model: String,
    #[serde(default)]
    pub format: String,
    #[serde(default)]
    pub family: String,
    #[serde(default)]
    pub families: Option<Vec<String>>,
    #[serde(default)]
    pub parameter_size: String,
    #[serde(default)]
    pub quantization_level: String,
}

/// Answer of `POST /api/show`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShowResponse {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub license: String,
    #[serde(default)]
    pub modelfile: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parameters: String,
    #[serde(default)]
    pub template: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub system: String,
    pub details: ModelDetails,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<Message>,
    #[serde(default)]
    pub model_info: BTreeMap<String, Value>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    pub modified_at: DateTime<Utc>,
    /// The Ollama version the model needs (its Modelfile's `REQUIRES`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub requires: String,
    /// The weights' tensors, with `verbose`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tensors: Vec<ShowTensor>,
}

/// One entry of `GET /api/tags`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListModel {
    pub name: String,
    pub model: String,
    pub modified_at: DateTime<Utc>,
    pub size: u64,
    pub digest: String,
    pub details: ModelDetails,
}

/// `GET /api/tags`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListResponse {
    pub models: Vec<ListModel>,
}

/// One entry of `GET /api/ps`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessModel {
    pub name: String,
    pub model: String,
    pub size: u64,
    pub digest: String,
    pub details: ModelDetails,
    pub expires_at: DateTime<Utc>,
    pub size_vram: u64,
    /// The part of `size_vram` on other machines' devices (RPC workers; Corral's addition).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size_remote: u64,
    #[serde(default)]
    pub context_length: u32,
    /// Why the model runs other than asked (Corral's addition; Ollama clients ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `GET /api/ps`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessResponse {
    pub models: Vec<ProcessModel>,
}

/// The Ollama release whose API Corral answers as: `/api/version`'s `version`. Clients gate
/// features on it (VS Code's Copilot refuses a server below 0.6.4), so it is the API level
/// implemented, not Corral's own version; the Responses API is the newest part, as Ollama
/// 0.13.3 serves it.
pub const OLLAMA_API_VERSION: &str = "0.13.3";

/// `GET /api/version`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionResponse {
    /// [`OLLAMA_API_VERSION`].
    pub version: String,
    /// Corral's own version (beyond Ollama).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corral_version: Option<String>,
}

/// Every error body: `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: String,
}

/// `POST /api/copy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyRequest {
    pub source: String,
    pub destination: String,
}

/// `DELETE /api/delete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteRequest {
    #[serde(alias = "name")]
    pub model: String,
}

/// `POST /api/pull` and `POST /api/push`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TransferRequest {
    #[serde(default, alias = "name")]
    pub model: String,
    /// Plain HTTP to the registry.
    #[serde(default)]
    pub insecure: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

/// `POST /api/embed`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmbedRequest {
    #[serde(default, alias = "name")]
    pub model: String,
    /// A string or a list of strings.
    #[serde(default)]
    pub input: Value,
    /// Cut inputs longer than the context (default) instead of failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<bool>,
    /// Keep only the first `dimensions` values of each vector (then normalize again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
}

/// The answer of `POST /api/embed`: L2-normalized vectors.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmbedResponse {
    pub model: String,
    pub embeddings: Vec<Vec<f32>>,
    #[serde(default)]
    pub total_duration: u64,
    #[serde(default)]
    pub load_duration: u64,
    #[serde(default)]
    pub prompt_eval_count: u64,
}

/// `POST /api/embeddings` (the older endpoint).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    #[serde(default, alias = "name")]
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Value>,
}

/// The answer of `POST /api/embeddings`: one vector, as the model pools it (not normalized).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EmbeddingsResponse {
    pub embedding: Vec<f64>,
}
