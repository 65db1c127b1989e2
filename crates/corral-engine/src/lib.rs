//! The one crate that links llama.cpp (through `llama-cpp-2`).
//!
//! Architecture Invariant: no other crate depends on `llama-cpp-2` or `llama-cpp-sys-2`; the
//! server never depends on this crate, so a fault inside llama.cpp can only take down a runner.
//!
//! An [`Engine`] is one loaded model with one context, owned by one thread. It evaluates a
//! prompt in chunks no larger than `n_batch` (llama.cpp aborts the whole process when a single
//! decode gets more), reuses the longest prefix of the previous prompt still in the KV cache,
//! and samples with llama.cpp's sampler chain.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

/// What can go wrong in the engine. Messages name the cause for the user.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("llama.cpp backend failed to start: {0}")]
    Backend(String),
    #[error("failed to load model {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("failed to create context: {0}")]
    Context(String),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the input ({tokens} tokens) does not fit the context window (num_ctx {n_ctx})")]
    TooLong { tokens: usize, n_ctx: u32 },
    #[error("decode failed: {0}")]
    Decode(String),
    #[error("invalid grammar: {0}")]
    Grammar(String),
    #[error("embedding failed: {0}")]
    Embed(String),
    #[error("quantizing failed: {0}")]
    Quantize(String),
}

/// How to load the model.
#[derive(Debug, Clone)]
pub struct LoadParams {
    pub path: PathBuf,
    pub n_gpu_layers: u32,
    pub use_mmap: bool,
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_threads: u32,
    /// A LoRA adapter (GGUF) applied at full scale.
    pub lora: Option<PathBuf>,
    /// What the KV cache stores keys and values as.
    pub kv_cache_type: KvCacheType,
    pub flash_attention: FlashAttention,
    /// A draft model (same vocabulary) for speculative decoding.
    pub draft: Option<PathBuf>,
}

/// An event while generating.
pub enum Event<'a> {
    /// Prompt tokens evaluated so far, of the total to evaluate.
    Progress { evaluated: usize, total: usize },
    /// The bytes of one generated token (may be part of a UTF-8 character).
    Piece(&'a [u8]),
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model ended its turn.
    EndOfGeneration,
    /// `num_predict` or the context window was reached.
    Length,
    /// The caller stopped it (a stop sequence, a cancel).
    Stopped,
}

/// Counts and timings of one completion.
#[derive(Debug, Clone)]
pub struct Stats {
    pub finish: Finish,
    pub prompt_tokens: usize,
    /// Prompt tokens evaluated (the rest came from the cache).
    pub prompt_evaluated: usize,
    pub prompt_duration: Duration,
    pub generated: Vec<i32>,
    pub eval_duration: Duration,
    /// Speculative tokens proposed, and how many of them the model confirmed.
    pub draft_proposed: u64,
    pub draft_accepted: u64,
}

pub mod modules;
mod pick;
mod quantize;
pub mod rpc;
mod sampling;
mod sequence;
mod speculate;

pub use quantize::quantize;
pub use sequence::{Sequence, SlotId, StepEvent};

pub use corral_api::cache::{FlashAttention, KvCacheType};

fn kv_type(t: KvCacheType) -> llama_cpp_2::context::params::KvCacheType {
    use llama_cpp_2::context::params::KvCacheType as Ggml;
    match t {
        KvCacheType::F16 => Ggml::F16,
        KvCacheType::Q8_0 => Ggml::Q8_0,
        KvCacheType::Q4_0 => Ggml::Q4_0,
    }
}

pub use sampling::{json_schema_grammar, SamplingParams, TokenLogprobs, TokenProb};

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

fn backend() -> Result<&'static LlamaBackend, EngineError> {
    BACKEND
        .get_or_init(|| {
            // The modules first: llama.cpp would otherwise look in the build folder only.
            modules::load()?;
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Backend(e.clone()))
}

/// Send llama.cpp's own log lines to `tracing`.
pub fn log_to_tracing() {
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
}

/// The context a model (or its draft) runs with: `n_slots` slots of `n_ctx` tokens each.
fn context_params(p: &LoadParams, n_slots: u32) -> LlamaContextParams {
    let n_batch = p.n_batch.max(1);
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(p.n_ctx.max(16) * n_slots))
        .with_n_batch(n_batch)
        .with_n_ubatch(n_batch)
        .with_n_seq_max(n_slots)
        .with_n_threads(p.n_threads.max(1) as i32)
        .with_n_threads_batch(p.n_threads.max(1) as i32)
        // Keep the whole context for sliding-window layers too (Gemma 3), so a new
        // prompt can reuse any cached prefix instead of starting over; it costs KV memory
        // only on the sliding-window layers.
        .with_swa_full(true)
        .with_type_k(kv_type(p.kv_cache_type))
        .with_type_v(kv_type(p.kv_cache_type))
        .with_flash_attention_policy(match p.flash_attention {
            FlashAttention::Auto => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO,
            FlashAttention::On => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED,
            FlashAttention::Off => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED,
        })
        .with_no_perf(false)
}

/// One loaded model and its context, serving up to `n_slots` sequences in one batch per step.
pub struct Engine {
    model: &'static LlamaModel,
    ctx: LlamaContext<'static>,
    batch: LlamaBatch<'static>,
    n_batch: u32,
    /// Context window of each slot.
    n_ctx_slot: u32,
    /// Tokens whose keys and values are in the KV cache, per slot, in order.
    cached: Vec<Vec<LlamaToken>>,
    /// When each slot last began a sequence (a count of starts; 0: never).
    last_start: Vec<u64>,
    starts: u64,
    n_threads: u32,
    /// A second context in embedding mode, made on the first embedding request.
    embedder: Option<Embedder>,
    /// The draft model, when the model has one.
    drafter: Option<speculate::Drafter>,
}

/// Sequences one embedding decode packs together.
const EMBED_SEQS: u32 = 4;

struct Embedder {
    ctx: LlamaContext<'static>,
    batch: LlamaBatch<'static>,
    n_ctx: usize,
}

impl Engine {
    /// Load a model and create its context with `n_slots` sequences of `n_ctx` tokens each.
    pub fn load(p: &LoadParams) -> Result<Engine, EngineError> {
        Self::load_with_slots(p, 1, |_| {})
    }

    /// [`Engine::load`] with several slots; the KV cache holds `n_ctx` tokens for each.
    /// `on_progress` is called with the fraction loaded as the weights are read.
    pub fn load_with_slots(
        p: &LoadParams,
        n_slots: u32,
        mut on_progress: impl FnMut(f32) + 'static,
    ) -> Result<Engine, EngineError> {
        let backend = backend()?;
        let load_err = |reason: String| EngineError::Load {
            path: p.path.clone(),
            reason,
        };
        let params = LlamaModelParams::default()
            .with_n_gpu_layers(p.n_gpu_layers)
            .with_use_mmap(p.use_mmap)
            .with_progress_callback(move |f| {
                on_progress(f);
                true
            });
        let mut model = LlamaModel::load_from_file(backend, &p.path, &params)
            .map_err(|e| load_err(e.to_string()))?;
        let adapter = match &p.lora {
            Some(path) => Some(
                model
                    .lora_adapter_init(path)
                    .map_err(|e| EngineError::Load {
                        path: path.clone(),
                        reason: format!("not a LoRA adapter for this model: {e}"),
                    })?,
            ),
            None => None,
        };
        // A runner holds one model for its whole life, so the model is leaked to give the
        // context (which borrows it) a 'static lifetime; the OS frees both when the runner exits.
        let model: &'static LlamaModel = Box::leak(Box::new(model));
        let n_slots = n_slots.max(1);
        let cparams = context_params(p, n_slots);
        let mut ctx = model
            .new_context(backend, cparams)
            .map_err(|e| EngineError::Context(e.to_string()))?;
        if let Some(mut a) = adapter {
            ctx.lora_adapter_set(&mut a, 1.0)
                .map_err(|e| EngineError::Context(format!("apply LoRA adapter: {e}")))?;
            // The handle has no Drop: llama.cpp frees an adapter together with its model, which
            // lives as long as the runner.
            let _ = a;
        }
        let drafter = match &p.draft {
            Some(path) => Some(speculate::Drafter::load(path, p, n_slots, model)?),
            None => None,
        };
        let n_batch = ctx.n_batch();
        let n_ctx_slot = ctx.n_ctx() / n_slots;
        Ok(Engine {
            model,
            ctx,
            batch: LlamaBatch::new(n_batch as usize, n_slots as i32),
            n_batch,
            n_ctx_slot,
            cached: vec![Vec::new(); n_slots as usize],
            last_start: vec![0; n_slots as usize],
            starts: 0,
            n_threads: p.n_threads.max(1),
            embedder: None,
            drafter,
        })
    }

    fn embedder(&mut self) -> Result<&mut Embedder, EngineError> {
        if self.embedder.is_none() {
            let backend = backend()?;
            // The model's own pooling when its GGUF names one; mean pooling otherwise (a
            // generative model has none, and llama.cpp would then give no sequence vector).
            let arch = self.meta("general.architecture").unwrap_or_default();
            let pooling = if self.meta(&format!("{arch}.pooling_type")).is_some() {
                llama_cpp_2::context::params::LlamaPoolingType::Unspecified
            } else {
                llama_cpp_2::context::params::LlamaPoolingType::Mean
            };
            let n_ctx = self.n_ctx_slot.max(16);
            let cparams = LlamaContextParams::default()
                .with_embeddings(true)
                .with_pooling_type(pooling)
                .with_n_ctx(NonZeroU32::new(n_ctx))
                .with_n_batch(n_ctx)
                .with_n_ubatch(n_ctx)
                .with_n_seq_max(EMBED_SEQS)
                .with_kv_unified(true)
                .with_n_threads(self.n_threads as i32)
                .with_n_threads_batch(self.n_threads as i32);
            let ctx = self
                .model
                .new_context(backend, cparams)
                .map_err(|e| EngineError::Context(format!("embedding context: {e}")))?;
            let n_ctx = ctx.n_ctx() as usize;
            self.embedder = Some(Embedder {
                ctx,
                batch: LlamaBatch::new(n_ctx, EMBED_SEQS as i32),
                n_ctx,
            });
        }
        Ok(self.embedder.as_mut().expect("just made"))
    }

    /// The context window for embedding inputs, in tokens.
    pub fn embed_n_ctx(&self) -> u32 {
        self.n_ctx_slot
    }

    /// One pooled vector per tokenized input (not normalized). Inputs are packed several to
    /// a decode while they fit; each must fit the context on its own.
    pub fn embed(&mut self, inputs: &[Vec<i32>]) -> Result<Vec<Vec<f32>>, EngineError> {
        let e = self.embedder()?;
        let mut out = Vec::with_capacity(inputs.len());
        let mut i = 0;
        while i < inputs.len() {
            e.batch.clear();
            e.ctx.clear_kv_cache();
            let (mut seqs, mut used) = (0usize, 0usize);
            while i < inputs.len() && seqs < EMBED_SEQS as usize {
                let input = &inputs[i];
                if input.is_empty() {
                    return Err(EngineError::EmptyPrompt);
                }
                if input.len() > e.n_ctx {
                    return Err(EngineError::TooLong {
                        tokens: input.len(),
                        n_ctx: e.n_ctx as u32,
                    });
                }
                if used + input.len() > e.n_ctx {
                    break;
                }
                for (pos, &t) in input.iter().enumerate() {
                    e.batch
                        .add(LlamaToken(t), pos as i32, &[seqs as i32], true)
                        .map_err(|err| EngineError::Embed(err.to_string()))?;
                }
                used += input.len();
                seqs += 1;
                i += 1;
            }
            e.ctx
                .decode(&mut e.batch)
                .map_err(|err| EngineError::Decode(err.to_string()))?;
            for s in 0..seqs {
                let v = e
                    .ctx
                    .embeddings_seq_ith(s as i32)
                    .map_err(|err| EngineError::Embed(err.to_string()))?;
                out.push(v.to_vec());
            }
        }
        Ok(out)
    }

    /// The context window of one slot, in tokens.
    pub fn n_ctx(&self) -> u32 {
        self.n_ctx_slot
    }

    /// The vocabulary's fill-in-the-middle tokens (prefix, suffix, middle), if it has all three.
    pub fn fim_tokens(&self) -> Option<[i32; 3]> {
        let v = self.model.vocab();
        let ids = [v.fim_pre().0, v.fim_suf().0, v.fim_mid().0];
        ids.iter().all(|&t| t >= 0).then_some(ids)
    }

    /// Tokens a slot holds in the KV cache (its cells in use).
    pub fn slot_tokens(&self, slot: SlotId) -> usize {
        self.cached[slot].len()
    }

    /// How many sequences can run at once.
    pub fn n_slots(&self) -> usize {
        self.cached.len()
    }

    /// The context length the model was trained with.
    pub fn n_ctx_train(&self) -> u32 {
        self.model.n_ctx_train()
    }

    /// Whether llama.cpp takes `grammar` (GBNF, root rule `root`) for this model: it refuses
    /// some that parse, such as a left-recursive rule. Checked when a request arrives, so
    /// that such a request is refused then rather than failing when it gets a slot.
    pub fn check_grammar(&self, grammar: &str) -> Result<(), EngineError> {
        llama_cpp_2::sampling::LlamaSampler::grammar(self.model, grammar, "root")
            .map(drop)
            .map_err(|e| EngineError::Grammar(format!("{e:?}")))
    }

    /// Layers of the model as llama.cpp places them on devices: the GGUF's block count, which
    /// counts next-token-prediction layers too (`llama_model_n_layer` leaves them out). The
    /// output layer is one more.
    /// Tokens in the model's vocabulary: ids run from 0 to this, exclusive.
    pub fn n_vocab(&self) -> i32 {
        self.model.n_vocab()
    }

    pub fn n_layer(&self) -> u32 {
        self.meta("general.architecture")
            .and_then(|arch| self.meta(&format!("{arch}.block_count")))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| self.model.n_layer())
    }

    /// Bytes of the model's weights (and its draft's).
    pub fn model_size(&self) -> u64 {
        self.model.size() + self.drafter.as_ref().map_or(0, |d| d.size())
    }

    /// A metadata string of the GGUF, such as `tokenizer.chat_template`.
    pub fn meta(&self, key: &str) -> Option<String> {
        self.model.meta_val_str(key).ok()
    }

    /// The text of a special token as templates print it (`bos_token`, `eos_token`); empty
    /// for a vocabulary without one (BERT's has no EOS: llama.cpp says -1, and asking for the
    /// text of -1 throws a C++ exception, which would abort the process).
    pub fn bos_eos_text(&self) -> (String, String) {
        let v = self.model.vocab();
        let n = self.model.n_vocab();
        let text = |t: LlamaToken| match (0..n).contains(&t.0) {
            true => v
                .text(t)
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default(),
            false => String::new(),
        };
        (text(v.bos()), text(v.eos()))
    }

    /// Tokenize text; `add_special` adds BOS/EOS as the model wants, and special tokens written
    /// in the text (`<|im_start|>`) are always parsed as such.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Vec<i32> {
        let v = self.model.vocab();
        let mut toks = v.tokenize(text.as_bytes(), add_special, true);
        // A template that prints `bos_token` itself and a vocabulary that adds one would give two.
        if add_special && toks.len() >= 2 && toks[0] == v.bos() && toks[1] == v.bos() {
            toks.remove(0);
        }
        toks.into_iter().map(|t| t.0).collect()
    }

    /// The text of tokens, special ones written out as in the text they came from.
    pub fn detokenize(&self, tokens: &[i32]) -> String {
        let tokens: Vec<LlamaToken> = tokens.iter().map(|&t| LlamaToken(t)).collect();
        String::from_utf8_lossy(&self.model.vocab().detokenize(&tokens, false, true)).into_owned()
    }
}

/// A device llama.cpp can run on.
#[derive(Debug, Clone)]
pub struct Device {
    pub index: usize,
    pub name: String,
    pub description: String,
    pub backend: String,
    /// `cpu`, `gpu`, `igpu`, `accel` or `unknown`.
    pub kind: &'static str,
    pub memory_total: u64,
    pub memory_free: u64,
}

/// Every backend device of this build (the CPU included).
pub fn devices() -> Result<Vec<Device>, EngineError> {
    use llama_cpp_2::LlamaBackendDeviceType as T;
    backend()?;
    Ok(llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| Device {
            index: d.index,
            name: d.name,
            description: d.description,
            backend: d.backend,
            kind: match d.device_type {
                T::Cpu => "cpu",
                T::Gpu => "gpu",
                T::IntegratedGpu => "igpu",
                T::Accelerator => "accel",
                _ => "unknown",
            },
            memory_total: d.memory_total as u64,
            memory_free: d.memory_free as u64,
        })
        .collect())
}
