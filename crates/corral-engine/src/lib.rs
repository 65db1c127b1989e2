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
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
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
}

pub mod modules;
mod sampling;

pub use corral_api::cache::{FlashAttention, KvCacheType};

fn kv_type(t: KvCacheType) -> llama_cpp_2::context::params::KvCacheType {
    use llama_cpp_2::context::params::KvCacheType as Ggml;
    match t {
        KvCacheType::F16 => Ggml::F16,
        KvCacheType::Q8_0 => Ggml::Q8_0,
        KvCacheType::Q4_0 => Ggml::Q4_0,
    }
}

use sampling::{build_sampler, token_logprobs};
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

/// How many sequences (slots) one context serves at once.
pub type SlotId = usize;

/// One completion being evaluated or generated in a slot.
pub struct Sequence {
    slot: SlotId,
    /// Prompt tokens not yet evaluated.
    pending: Vec<LlamaToken>,
    prompt_tokens: usize,
    prompt_evaluated: usize,
    sampler: LlamaSampler,
    num_predict: Option<u32>,
    num_keep: usize,
    /// Whether a full context is shifted (else the answer ends).
    shift: bool,
    /// Alternatives to report with each token's log probability; `None`: none reported.
    logprobs: Option<usize>,
    /// Context shifts so far.
    shifts: u32,
    /// Index of this sequence's logits in the last batch, once it has some to sample.
    logits_idx: Option<i32>,
    /// The last sampled token, to be fed in the next step.
    to_feed: Option<LlamaToken>,
    generated: Vec<i32>,
    started: Instant,
    prompt_done: Option<Instant>,
    finish: Option<Finish>,
}

impl Sequence {
    /// The slot this sequence runs in.
    pub fn slot(&self) -> SlotId {
        self.slot
    }

    /// Whether it has ended (its [`Stats`] are ready).
    pub fn finished(&self) -> bool {
        self.finish.is_some()
    }

    /// End it now (a stop sequence or a cancel): no more tokens are generated.
    pub fn stop(&mut self) {
        if self.finish.is_none() {
            self.finish = Some(Finish::Stopped);
        }
    }

    /// Counts and timings so far.
    pub fn stats(&self) -> Stats {
        let prompt_done = self.prompt_done.unwrap_or_else(Instant::now);
        Stats {
            finish: self.finish.unwrap_or(Finish::Stopped),
            prompt_tokens: self.prompt_tokens,
            prompt_evaluated: self.prompt_evaluated,
            prompt_duration: prompt_done - self.started,
            generated: self.generated.clone(),
            eval_duration: self.prompt_done.map_or(Duration::ZERO, |d| d.elapsed()),
        }
    }
}

/// What one step produced for one sequence.
pub enum StepEvent {
    /// Prompt tokens evaluated so far, of the total to evaluate.
    Progress { evaluated: usize, total: usize },
    /// The bytes of one generated token (may be part of a UTF-8 character).
    Piece(Vec<u8>),
    /// The log probabilities of the token whose `Piece` follows, when asked for.
    Logprobs(TokenLogprobs),
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
    n_threads: u32,
    /// A second context in embedding mode, made on the first embedding request.
    embedder: Option<Embedder>,
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
        let n_batch = p.n_batch.max(1);
        let cparams = LlamaContextParams::default()
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
            .with_no_perf(false);
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
        let n_batch = ctx.n_batch();
        let n_ctx_slot = ctx.n_ctx() / n_slots;
        Ok(Engine {
            model,
            ctx,
            batch: LlamaBatch::new(n_batch as usize, n_slots as i32),
            n_batch,
            n_ctx_slot,
            cached: vec![Vec::new(); n_slots as usize],
            n_threads: p.n_threads.max(1),
            embedder: None,
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

    /// Bytes of the model's weights.
    pub fn model_size(&self) -> u64 {
        self.model.size()
    }

    /// A metadata string of the GGUF, such as `tokenizer.chat_template`.
    pub fn meta(&self, key: &str) -> Option<String> {
        self.model.meta_val_str(key).ok()
    }

    /// The text of a special token as templates print it (`bos_token`, `eos_token`).
    pub fn bos_eos_text(&self) -> (String, String) {
        let v = self.model.vocab();
        let text = |t: LlamaToken| {
            v.text(t)
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default()
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

    /// Of the `free` slots, the one whose cache shares the longest prefix with `prompt`.
    pub fn best_slot(&self, free: &[SlotId], prompt: &[i32]) -> Option<SlotId> {
        free.iter().copied().max_by_key(|&s| {
            let common = self.cached[s]
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a.0 == **b)
                .count();
            (common, std::cmp::Reverse(s))
        })
    }

    /// Begin a completion in `slot`, reusing the longest prefix of `prompt` its cache holds.
    pub fn start(
        &mut self,
        slot: SlotId,
        prompt: &[i32],
        sp: &SamplingParams,
    ) -> Result<Sequence, EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        if prompt.len() >= self.n_ctx_slot as usize {
            return Err(EngineError::TooLong {
                tokens: prompt.len(),
                n_ctx: self.n_ctx_slot,
            });
        }
        let prompt: Vec<LlamaToken> = prompt.iter().map(|&t| LlamaToken(t)).collect();
        let cached = &mut self.cached[slot];
        // At least the last prompt token is evaluated, to get logits to sample from.
        let mut keep = cached
            .iter()
            .zip(&prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        if self
            .ctx
            .kv_cache_seq_rm(slot as i32, Some(keep as u32), None)
            .is_err()
        {
            // Some caches (sliding-window attention) cannot drop a tail: start this slot over.
            let _ = self.ctx.kv_cache_seq_rm(slot as i32, None, None);
            keep = 0;
        }
        cached.truncate(keep);
        let mut sampler = build_sampler(sp, self.model)?;
        // Penalties look at recent history, prompt included, as llama.cpp's server does. A
        // grammar must see only the answer, so with one the penalties start from the answer.
        if sp.grammar.is_none() {
            sampler.accept_many(
                prompt
                    .iter()
                    .rev()
                    .take(sp.repeat_last_n.max(0) as usize)
                    .rev(),
            );
        }
        Ok(Sequence {
            slot,
            pending: prompt[keep..].to_vec(),
            prompt_tokens: prompt.len(),
            prompt_evaluated: 0,
            sampler,
            num_predict: sp.num_predict,
            num_keep: sp.num_keep as usize,
            shift: sp.shift,
            logprobs: sp.logprobs.map(|n| n as usize),
            shifts: 0,
            logits_idx: None,
            to_feed: None,
            generated: Vec::new(),
            started: Instant::now(),
            prompt_done: None,
            finish: None,
        })
    }

    /// One step for every unfinished sequence: a single llama.cpp decode that carries each
    /// generating sequence's last token and as much pending prompt as still fits in `n_batch`
    /// (so a long prompt is evaluated in chunks between other sequences' tokens), then one
    /// sampled token for each sequence that has logits. Events are returned per sequence.
    pub fn step(&mut self, seqs: &mut [&mut Sequence]) -> Result<Vec<Vec<StepEvent>>, EngineError> {
        let mut events: Vec<Vec<StepEvent>> = seqs.iter().map(|_| Vec::new()).collect();
        // First sample from logits of the previous step, so tokens stream as early as possible.
        let vocab = self.model.vocab();
        for (i, s) in seqs.iter_mut().enumerate() {
            let Some(idx) = s.logits_idx.take() else {
                continue;
            };
            if s.finish.is_some() {
                continue;
            }
            let full = self.cached[s.slot].len() >= self.n_ctx_slot as usize;
            // Without num_predict an answer may be one context long; with it, as long as asked.
            let limit = s.num_predict.unwrap_or(self.n_ctx_slot) as usize;
            if s.generated.len() >= limit
                || (full && (!s.shift || (s.num_predict.is_none() && s.shifts > 0)))
            {
                s.finish = Some(Finish::Length);
                continue;
            }
            let tok = s.sampler.sample(&self.ctx, idx);
            if vocab.is_eog(tok) {
                s.finish = Some(Finish::EndOfGeneration);
                continue;
            }
            s.generated.push(tok.0);
            if let Some(n) = s.logprobs {
                let logits = self.ctx.get_logits_ith(idx);
                events[i].push(StepEvent::Logprobs(token_logprobs(logits, tok.0, n, |t| {
                    vocab.token_to_piece(LlamaToken(t), false, None)
                })));
            }
            events[i].push(StepEvent::Piece(vocab.token_to_piece(tok, false, None)));
            if full {
                self.shift(s, tok);
            } else {
                s.to_feed = Some(tok);
            }
        }
        Ok(events)
    }

    /// Context shift for a sequence whose slot is full: keep its first `num_keep` tokens, drop
    /// the oldest half of the rest, and evaluate the kept tail again (followed by `next`, the
    /// token just sampled) as if it were prompt. Re-evaluating instead of moving cache entries
    /// works for every kind of KV cache (sliding-window and recurrent ones cannot be shifted).
    fn shift(&mut self, s: &mut Sequence, next: LlamaToken) {
        let cached = &mut self.cached[s.slot];
        let len = cached.len();
        let keep = s.num_keep.min(len / 2);
        let discard = (len - keep) / 2;
        tracing::warn!(
            slot = s.slot,
            n_ctx = self.n_ctx_slot,
            keep,
            discard,
            "context full: shifting (dropping the oldest half after num_keep)"
        );
        let mut tail: Vec<LlamaToken> = cached[keep + discard..].to_vec();
        tail.push(next);
        let kept = if self
            .ctx
            .kv_cache_seq_rm(s.slot as i32, Some(keep as u32), None)
            .is_ok()
        {
            keep
        } else {
            let _ = self.ctx.kv_cache_seq_rm(s.slot as i32, None, None);
            0
        };
        let mut pending: Vec<LlamaToken> = cached[kept..keep].to_vec();
        pending.extend(tail);
        cached.truncate(kept);
        s.pending = pending;
        s.shifts += 1;
    }

    /// Feed the batch for the sequences still running: call after [`Engine::step`] has handed
    /// out its pieces and the caller has had a chance to stop sequences (stop words, cancels).
    pub fn advance(
        &mut self,
        seqs: &mut [&mut Sequence],
    ) -> Result<Vec<Vec<StepEvent>>, EngineError> {
        let mut events: Vec<Vec<StepEvent>> = seqs.iter().map(|_| Vec::new()).collect();
        self.batch.clear();
        let mut used = 0usize;
        let cap = self.n_batch as usize;
        // Generating sequences first: one token each.
        let mut fed: Vec<(usize, usize)> = Vec::new(); // (seq index, batch index)
        for (i, s) in seqs.iter_mut().enumerate() {
            if s.finish.is_some() {
                s.to_feed = None;
                continue;
            }
            let Some(tok) = s.to_feed.take() else {
                continue;
            };
            if used == cap {
                s.to_feed = Some(tok);
                continue;
            }
            let pos = self.cached[s.slot].len() as i32;
            self.batch
                .add(tok, pos, &[s.slot as i32], true)
                .map_err(|e| EngineError::Decode(e.to_string()))?;
            self.cached[s.slot].push(tok);
            fed.push((i, used));
            used += 1;
        }
        // Then prompt chunks, in order, in what is left of the batch.
        for (i, s) in seqs.iter_mut().enumerate() {
            if s.finish.is_some() || s.pending.is_empty() || used == cap {
                continue;
            }
            let n = s.pending.len().min(cap - used);
            let last_of_prompt = n == s.pending.len();
            let chunk: Vec<LlamaToken> = s.pending.drain(..n).collect();
            for (j, &tok) in chunk.iter().enumerate() {
                let pos = self.cached[s.slot].len() as i32;
                let logits = last_of_prompt && j == n - 1;
                self.batch
                    .add(tok, pos, &[s.slot as i32], logits)
                    .map_err(|e| EngineError::Decode(e.to_string()))?;
                self.cached[s.slot].push(tok);
                if logits {
                    fed.push((i, used + j));
                }
            }
            used += n;
            if s.prompt_done.is_none() {
                s.prompt_evaluated += n;
            }
            events[i].push(StepEvent::Progress {
                evaluated: s.prompt_evaluated,
                total: s.prompt_evaluated + s.pending.len(),
            });
        }
        if used == 0 {
            return Ok(events);
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            // The cache may now hold part of a batch: forget every slot rather than trust it.
            self.ctx.clear_kv_cache();
            self.cached.iter_mut().for_each(Vec::clear);
            return Err(EngineError::Decode(e.to_string()));
        }
        for (i, idx) in fed {
            let s = &mut seqs[i];
            if s.prompt_done.is_none() {
                s.prompt_done = Some(Instant::now());
            }
            s.logits_idx = Some(idx as i32);
        }
        Ok(events)
    }

    /// Evaluate `prompt` in slot 0 and generate until the model ends its turn, `num_predict`
    /// or the context is reached, or `on_event` breaks. (One sequence at a time; the runner
    /// uses [`Engine::start`], [`Engine::step`] and [`Engine::advance`] to batch several.)
    pub fn generate(
        &mut self,
        prompt: &[i32],
        sp: &SamplingParams,
        mut on_event: impl FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<Stats, EngineError> {
        let mut seq = self.start(0, prompt, sp)?;
        loop {
            for ev in self.step(&mut [&mut seq])?.remove(0) {
                if let StepEvent::Piece(bytes) = ev {
                    if on_event(Event::Piece(&bytes)).is_break() {
                        seq.stop();
                    }
                }
            }
            if seq.finished() {
                return Ok(seq.stats());
            }
            for ev in self.advance(&mut [&mut seq])?.remove(0) {
                if let StepEvent::Progress { evaluated, total } = ev {
                    if on_event(Event::Progress { evaluated, total }).is_break() {
                        seq.stop();
                    }
                }
            }
            if seq.finished() {
                return Ok(seq.stats());
            }
        }
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
