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
}

/// How to sample one completion.
#[derive(Debug, Clone)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub typical_p: f32,
    pub repeat_last_n: i32,
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// `None`: a random seed.
    pub seed: Option<u32>,
    /// `None`: until the end of the context.
    pub num_predict: Option<u32>,
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

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

fn backend() -> Result<&'static LlamaBackend, EngineError> {
    BACKEND
        .get_or_init(|| LlamaBackend::init().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| EngineError::Backend(e.clone()))
}

/// Send llama.cpp's own log lines to `tracing`.
pub fn log_to_tracing() {
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
}

/// One loaded model and its context.
pub struct Engine {
    model: &'static LlamaModel,
    ctx: LlamaContext<'static>,
    batch: LlamaBatch<'static>,
    n_batch: u32,
    /// Tokens whose keys and values are in the KV cache, in order.
    cached: Vec<LlamaToken>,
}

impl Engine {
    /// Load a model and create its context.
    pub fn load(p: &LoadParams) -> Result<Engine, EngineError> {
        let backend = backend()?;
        let load_err = |reason: String| EngineError::Load {
            path: p.path.clone(),
            reason,
        };
        let params = LlamaModelParams::default()
            .with_n_gpu_layers(p.n_gpu_layers)
            .with_use_mmap(p.use_mmap);
        let model = LlamaModel::load_from_file(backend, &p.path, &params)
            .map_err(|e| load_err(e.to_string()))?;
        // A runner holds one model for its whole life, so the model is leaked to give the
        // context (which borrows it) a 'static lifetime; the OS frees both when the runner exits.
        let model: &'static LlamaModel = Box::leak(Box::new(model));
        let n_batch = p.n_batch.max(1);
        let cparams = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(p.n_ctx.max(16)))
            .with_n_batch(n_batch)
            .with_n_ubatch(n_batch)
            .with_n_threads(p.n_threads.max(1) as i32)
            .with_n_threads_batch(p.n_threads.max(1) as i32)
            .with_no_perf(false);
        let ctx = model
            .new_context(backend, cparams)
            .map_err(|e| EngineError::Context(e.to_string()))?;
        let n_batch = ctx.n_batch();
        Ok(Engine {
            model,
            ctx,
            batch: LlamaBatch::new(n_batch as usize, 1),
            n_batch,
            cached: Vec::new(),
        })
    }

    /// The context window in tokens.
    pub fn n_ctx(&self) -> u32 {
        self.ctx.n_ctx()
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

    /// Turn generated tokens back into bytes.
    pub fn piece(&self, token: i32) -> Vec<u8> {
        self.model
            .vocab()
            .token_to_piece(LlamaToken(token), false, None)
    }

    /// Evaluate `prompt` (reusing what the cache already holds) and generate until the model
    /// ends its turn, `num_predict` or the context is reached, or `on_event` breaks.
    pub fn generate(
        &mut self,
        prompt: &[i32],
        sp: &SamplingParams,
        mut on_event: impl FnMut(Event<'_>) -> ControlFlow<()>,
    ) -> Result<Stats, EngineError> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let n_ctx = self.n_ctx() as usize;
        if prompt.len() >= n_ctx {
            return Err(EngineError::TooLong {
                tokens: prompt.len(),
                n_ctx: n_ctx as u32,
            });
        }
        let prompt: Vec<LlamaToken> = prompt.iter().map(|&t| LlamaToken(t)).collect();
        let started = Instant::now();

        // Reuse the common prefix; at least the last prompt token is evaluated to get logits.
        let mut keep = self
            .cached
            .iter()
            .zip(&prompt)
            .take_while(|(a, b)| a == b)
            .count();
        keep = keep.min(prompt.len() - 1);
        if self
            .ctx
            .kv_cache_seq_rm(0, Some(keep as u32), None)
            .is_err()
        {
            // Some caches (sliding-window attention) cannot drop a tail: start over.
            self.ctx.clear_kv_cache();
            keep = 0;
        }
        self.cached.truncate(keep);

        let to_eval = &prompt[keep..];
        let mut evaluated = 0;
        for chunk in to_eval.chunks(self.n_batch as usize) {
            if on_event(Event::Progress {
                evaluated,
                total: to_eval.len(),
            })
            .is_break()
            {
                return Ok(self.stats(
                    Finish::Stopped,
                    &prompt,
                    evaluated,
                    started.elapsed(),
                    Vec::new(),
                    Duration::ZERO,
                ));
            }
            self.batch.clear();
            let last = evaluated + chunk.len() == to_eval.len();
            for (i, &tok) in chunk.iter().enumerate() {
                let pos = (keep + evaluated + i) as i32;
                let logits = last && i == chunk.len() - 1;
                self.batch
                    .add(tok, pos, &[0], logits)
                    .map_err(|e| EngineError::Decode(e.to_string()))?;
            }
            self.decode()?;
            self.cached.extend_from_slice(chunk);
            evaluated += chunk.len();
        }
        let prompt_duration = started.elapsed();

        let mut sampler = build_sampler(sp, self.model.n_vocab());
        // Penalties look at recent history, prompt included, as llama.cpp's server does.
        sampler.accept_many(
            prompt
                .iter()
                .rev()
                .take(sp.repeat_last_n.max(0) as usize)
                .rev(),
        );
        let gen_started = Instant::now();
        let mut generated = Vec::new();
        let vocab = self.model.vocab();
        let mut logits_idx = self.batch.n_tokens() - 1;
        let finish = loop {
            if sp
                .num_predict
                .is_some_and(|n| generated.len() >= n as usize)
            {
                break Finish::Length;
            }
            if self.cached.len() >= n_ctx {
                break Finish::Length;
            }
            let tok = sampler.sample(&self.ctx, logits_idx);
            if vocab.is_eog(tok) {
                break Finish::EndOfGeneration;
            }
            generated.push(tok.0);
            let bytes = vocab.token_to_piece(tok, false, None);
            if on_event(Event::Piece(&bytes)).is_break() {
                // The token was shown; keep it in the cache so the next turn can reuse it.
                self.feed(tok)?;
                break Finish::Stopped;
            }
            self.feed(tok)?;
            logits_idx = 0;
        };
        let eval_duration = gen_started.elapsed();
        Ok(self.stats(
            finish,
            &prompt,
            evaluated,
            prompt_duration,
            generated,
            eval_duration,
        ))
    }

    fn feed(&mut self, tok: LlamaToken) -> Result<(), EngineError> {
        self.batch.clear();
        let pos = self.cached.len() as i32;
        self.batch
            .add(tok, pos, &[0], true)
            .map_err(|e| EngineError::Decode(e.to_string()))?;
        self.decode()?;
        self.cached.push(tok);
        Ok(())
    }

    fn decode(&mut self) -> Result<(), EngineError> {
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            // The cache may now hold part of a batch: forget it all rather than trust it.
            self.ctx.clear_kv_cache();
            self.cached.clear();
            return Err(EngineError::Decode(e.to_string()));
        }
        Ok(())
    }

    fn stats(
        &self,
        finish: Finish,
        prompt: &[LlamaToken],
        evaluated: usize,
        prompt_duration: Duration,
        generated: Vec<i32>,
        eval_duration: Duration,
    ) -> Stats {
        Stats {
            finish,
            prompt_tokens: prompt.len(),
            prompt_evaluated: evaluated,
            prompt_duration,
            generated,
            eval_duration,
        }
    }
}

fn build_sampler(sp: &SamplingParams, n_vocab: i32) -> LlamaSampler {
    let mut chain = Vec::new();
    if sp.repeat_last_n != 0
        && (sp.repeat_penalty != 1.0 || sp.frequency_penalty != 0.0 || sp.presence_penalty != 0.0)
    {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            sp.repeat_last_n,
            sp.repeat_penalty,
            sp.frequency_penalty,
            sp.presence_penalty,
        ));
    }
    if sp.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if sp.top_k > 0 {
            chain.push(LlamaSampler::top_k(sp.top_k));
        }
        if sp.typical_p < 1.0 {
            chain.push(LlamaSampler::typical(sp.typical_p, 1));
        }
        if sp.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(sp.top_p, 1));
        }
        if sp.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(sp.min_p, 1));
        }
        chain.push(LlamaSampler::temp(sp.temperature));
        // llama.cpp's LLAMA_DEFAULT_SEED (u32::MAX) asks it to pick a random seed.
        chain.push(LlamaSampler::dist(sp.seed.unwrap_or(u32::MAX)));
    }
    LlamaSampler::chain(chain, true)
}
