//! The runner: a child process of the server that owns one loaded model.
//!
//! It reads [`RunnerRequest`]s as JSON lines on stdin and writes [`RunnerEvent`]s as JSON lines
//! on stdout; its stderr is its log, which the server keeps the tail of. The model and its
//! context live on the main thread; a second thread only reads stdin, so a cancel can reach a
//! running generation between two tokens. End of stdin means the server is gone: the runner
//! exits at once.

pub mod fault;
mod prepare;
mod rpc;
mod schema;
mod text;
mod worker;

use prepare::Prepared;

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

use corral_api::options::{self as opt, Options};
use corral_api::runner::{
    CompletionRequest, DoneInfo, DoneReason, EmbedJob, Prompt, ReadyInfo, RunnerEvent,
    RunnerRequest, THINK_END,
};
use corral_engine::{Engine, Finish, LoadParams, SamplingParams, Sequence, StepEvent};
use corral_template::{ChatTemplate, RenderInput, SpecialTokens, DEFAULT_TEMPLATE};

pub use text::{StopMatcher, StopResult, Utf8Assembler};
pub use worker::{rpc_worker, RpcWorkerArgs};

/// How the server starts a runner (`corral runner ...`, hidden from help).
#[derive(Debug, Clone, clap::Args)]
pub struct RunnerArgs {
    /// GGUF file to load (with `--convert`: the Hugging Face model or LoRA adapter folder to
    /// convert).
    #[arg(long)]
    pub model: PathBuf,
    /// Context window in tokens.
    #[arg(long, default_value_t = opt::DEFAULT_NUM_CTX as u32)]
    pub ctx_size: u32,
    /// Largest number of tokens given to one llama.cpp decode.
    #[arg(long, default_value_t = opt::DEFAULT_NUM_BATCH as u32)]
    pub batch_size: u32,
    /// CPU threads.
    #[arg(long)]
    pub threads: u32,
    /// Layers to offload to a GPU (0: CPU only).
    #[arg(long, default_value_t = 0)]
    pub gpu_layers: u32,
    /// Read the file instead of mapping it.
    #[arg(long)]
    pub no_mmap: bool,
    /// A LoRA adapter (GGUF) to apply.
    #[arg(long)]
    pub lora: Option<PathBuf>,
    /// Requests decoded together, each in its own slot of `ctx-size` tokens.
    #[arg(long, default_value_t = 1)]
    pub parallel: u32,
    /// KV cache type: f16, q8_0 or q4_0.
    #[arg(long, default_value = "f16")]
    pub cache_type: corral_api::cache::KvCacheType,
    /// Flash attention: auto, on or off.
    #[arg(long, default_value = "auto")]
    pub flash_attn: corral_api::cache::FlashAttention,
    /// A draft model (GGUF, the same vocabulary) for speculative decoding.
    #[arg(long)]
    pub draft: Option<PathBuf>,
    /// RPC workers (`host:port`, comma-separated) whose devices take layers like GPUs.
    #[arg(long, value_delimiter = ',')]
    pub rpc: Vec<String>,
    /// Quantize the model to this type (`q4_K_M`, ...) into `--output` and exit, reporting
    /// progress as `Quantizing` events: what `create --quantize` runs.
    #[arg(long, requires = "output")]
    pub quantize: Option<corral_api::quantize::QuantType>,
    /// Convert the Hugging Face model folder `--model` (config.json, *.safetensors,
    /// tokenizer.json) into a GGUF file at `--output` and exit, reporting progress as
    /// `Converting` events: what `create` runs for `FROM <folder>`.
    #[arg(long, requires = "output", conflicts_with = "quantize")]
    pub convert: bool,
    /// With `--convert` of a LoRA adapter's folder: the GGUF model it adapts.
    #[arg(long, requires = "convert")]
    pub base: Option<PathBuf>,
    /// Where `--quantize` or `--convert` writes the new model.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Run until stdin closes. Returns an error only when the model cannot be loaded.
pub fn run(args: RunnerArgs) -> anyhow::Result<()> {
    corral_engine::log_to_tracing();
    last_line_names_a_panic();
    if let (Some(to), Some(output)) = (args.quantize, &args.output) {
        corral_engine::quantize(
            &args.model,
            output,
            to.ftype,
            args.threads,
            |done, total| {
                fault::at(fault::Point::Tensor);
                send(&RunnerEvent::Quantizing { done, total });
            },
        )?;
        return Ok(());
    }
    if let (true, Some(output)) = (args.convert, &args.output) {
        // Pure Rust: no backend is loaded and no device touched.
        corral_convert::convert(&args.model, args.base.as_deref(), output, |done, total| {
            fault::at(fault::Point::Tensor);
            send(&RunnerEvent::Converting { done, total });
        })?;
        return Ok(());
    }
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<RunnerRequest>();
    std::thread::spawn(move || read_requests(tx));

    fault::at(fault::Point::Load);
    // Local devices are listed before the workers join the registry (listing those would
    // connect to each again), and both before the load: llama.cpp splits by the free memory
    // it sees then.
    let local = if args.gpu_layers > 0 {
        fault::at(fault::Point::GpuLoad);
        corral_engine::devices().unwrap_or_default()
    } else {
        Vec::new()
    };
    let workers = rpc::add_workers(&args.rpc);
    let offload = rpc::offload_devices(&workers, &local);
    let mut engine = Engine::load_with_slots(
        &LoadParams {
            path: args.model.clone(),
            n_gpu_layers: args.gpu_layers,
            use_mmap: !args.no_mmap,
            n_ctx: args.ctx_size,
            n_batch: args.batch_size,
            n_threads: args.threads,
            lora: args.lora.clone(),
            kv_cache_type: args.cache_type,
            flash_attention: args.flash_attn,
            draft: args.draft.clone(),
        },
        args.parallel,
        |progress| send(&RunnerEvent::Loading { progress }),
    )?;
    let (bos, eos) = engine.bos_eos_text();
    let gguf_template = engine.meta("tokenizer.chat_template");
    let mut runner = Runner {
        rx,
        queue: VecDeque::new(),
        bos,
        eos,
        gguf_template,
        active: Vec::new(),
        answered: 0,
        embeds: VecDeque::new(),
        usage_sent: (0, Instant::now()),
    };
    let free: Vec<u64> = offload.iter().map(|d| d.1).collect();
    let n_layer = engine.n_layer();
    let placed = corral_devices::fit::split_layers(&free, n_layer, args.gpu_layers);
    send(&RunnerEvent::Ready(ReadyInfo {
        n_ctx: engine.n_ctx(),
        n_ctx_train: engine.n_ctx_train(),
        n_threads: args.threads,
        load_duration_ns: started.elapsed().as_nanos() as u64,
        model_size: engine.model_size(),
        n_layer,
        offloaded: placed.iter().sum(),
        workers: rpc::worker_use(&workers, &offload, &placed),
    }));
    tracing::info!(model = %args.model.display(), n_ctx = engine.n_ctx(), slots = engine.n_slots(), "runner ready");
    runner.serve(&mut engine);
    Ok(())
}

/// `corral probe`: print llama.cpp's devices as JSON and exit. Run as a short-lived child so
/// that a GPU driver that hangs or crashes cannot take the server (or the CLI) with it.
pub fn probe() -> anyhow::Result<()> {
    let modules = corral_engine::modules::report().map_err(|e| anyhow::anyhow!(e))?;
    let devices: Vec<serde_json::Value> = corral_engine::devices()?
        .into_iter()
        .map(|d| {
            serde_json::json!({
                "index": d.index, "name": d.name, "description": d.description, "backend": d.backend,
                "kind": d.kind, "memory_total": d.memory_total, "memory_free": d.memory_free,
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({"modules": modules, "devices": devices})
    );
    Ok(())
}

fn read_requests(tx: mpsc::Sender<RunnerRequest>) {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<RunnerRequest>(&line) {
            Ok(req) => {
                if tx.send(req).is_err() {
                    break;
                }
            }
            Err(e) => tracing::error!("ignoring malformed request: {e}"),
        }
    }
    // The server closed our stdin or went away: nothing more can be asked of us. The main
    // thread may be in the middle of a decode: leave without tearing llama.cpp down under it.
    tracing::info!("stdin closed; runner exiting");
    corral_os::exit_now(0);
}

/// The server quotes a runner's last log lines when it dies; after a panic those would be
/// the end of a backtrace (with `RUST_BACKTRACE` set), so one more line names the panic and
/// where it happened. (A panic caught inside the runner, as a template engine's, shows too.)
fn last_line_names_a_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("panic: {message}{at}");
    }));
}

/// The final event of a request that ends before it gets a slot (counted only, or cancelled
/// while queued): nothing evaluated, nothing generated.
fn done_unanswered(id: u64, reason: DoneReason, truncated: u64) {
    send(&RunnerEvent::Done(DoneInfo {
        id,
        reason,
        prompt_eval_count: 0,
        prompt_cached: 0,
        prompt_eval_duration_ns: 0,
        eval_count: 0,
        eval_duration_ns: 0,
        prompt_truncated: truncated,
        draft_proposed: 0,
        draft_accepted: 0,
        context: None,
        stop_sequence: None,
    }));
}

fn send(ev: &RunnerEvent) {
    let mut out = std::io::stdout().lock();
    let line = serde_json::to_string(ev).expect("events serialize");
    // If the server is gone the write fails; the stdin thread ends the process shortly.
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}

struct Runner {
    rx: Receiver<RunnerRequest>,
    /// Requests waiting for a free slot, in arrival order, already tokenized.
    queue: VecDeque<Prepared>,
    bos: String,
    eos: String,
    gguf_template: Option<String>,
    active: Vec<Active>,
    /// Requests answered so far.
    answered: u64,
    /// Embedding requests, tokenized, served a piece at a time between two steps of the
    /// running completions.
    embeds: VecDeque<EmbedWork>,
    /// The KV usage last reported, and when.
    usage_sent: (u64, Instant),
}

/// How often KV usage is reported at most while it changes.
const USAGE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// A request running in a slot.
struct Active {
    id: u64,
    seq: Sequence,
    utf8: Utf8Assembler,
    stops: StopMatcher,
    tokens: Vec<i32>,
    want_context: bool,
    cancelled: bool,
    /// Prompt tokens dropped to fit the context.
    truncated: u64,
    /// Log probabilities of tokens whose text has not been sent yet.
    logprobs: Vec<corral_api::Logprob>,
}

impl Runner {
    /// The main loop: take requests, fill free slots, advance every running request by one
    /// token per llama.cpp decode (continuous batching), until stdin closes.
    fn serve(&mut self, engine: &mut Engine) {
        loop {
            if self.active.is_empty() && self.queue.is_empty() && self.embeds.is_empty() {
                if self.answered > 0 {
                    fault::at(fault::Point::Idle);
                }
                match self.rx.recv() {
                    Ok(req) => self.take(engine, req),
                    Err(_) => return,
                }
            }
            while let Ok(req) = self.rx.try_recv() {
                self.take(engine, req);
            }
            // One piece of the first embedding request per turn: pings and cancels are read
            // between pieces, so a long request neither fails the health check nor runs on
            // for a client that has gone.
            if let Some(work) = self.embeds.front_mut() {
                if embed_piece(engine, work) {
                    self.embeds.pop_front();
                }
            }
            self.fill_slots(engine);
            if self.active.is_empty() {
                continue;
            }
            if let Err(e) = self.step(engine) {
                // A failed decode leaves the KV cache unknown: every running request fails.
                for a in self.active.drain(..) {
                    send(&RunnerEvent::Error {
                        id: a.id,
                        message: e.to_string(),
                        invalid: false,
                    });
                }
            }
            self.report_usage(engine);
        }
    }

    /// Send the KV cells held by running requests when they changed, at most every
    /// `USAGE_INTERVAL` (and at once when the last request ends, so an idle runner reads 0).
    fn report_usage(&mut self, engine: &Engine) {
        let used: u64 = self
            .active
            .iter()
            .map(|a| engine.slot_tokens(a.seq.slot()) as u64)
            .sum();
        let (last, at) = self.usage_sent;
        if used == last || (used != 0 && at.elapsed() < USAGE_INTERVAL) {
            return;
        }
        self.usage_sent = (used, Instant::now());
        send(&RunnerEvent::Usage {
            kv_used: used,
            kv_total: u64::from(engine.n_ctx()) * engine.n_slots() as u64,
        });
    }

    fn take(&mut self, engine: &Engine, req: RunnerRequest) {
        match req {
            RunnerRequest::Completion(c) => {
                let (id, only) = (c.id, c.count_only || c.render_only);
                match self.prepare(engine, *c) {
                    Ok(mut p) => {
                        send(&RunnerEvent::Accepted {
                            id,
                            prompt_tokens: p.tokens.len() as u64,
                            truncated: p.truncated,
                            rendered: p.rendered.take(),
                        });
                        if only {
                            done_unanswered(id, DoneReason::Stop, p.truncated);
                        } else {
                            self.queue.push_back(p);
                        }
                    }
                    Err(r) => {
                        tracing::warn!(id, "request refused: {}", r.message);
                        send(&RunnerEvent::Error {
                            id,
                            message: r.message,
                            invalid: r.invalid,
                        });
                    }
                }
            }
            RunnerRequest::Ping { id } => send(&RunnerEvent::Pong { id }),
            RunnerRequest::Embed(job) => {
                if let Some(work) = tokenize_embed(engine, job) {
                    self.embeds.push_back(work);
                }
            }
            RunnerRequest::Cancel { id } => {
                // A queued request that goes still gets its final event, so nothing waits on it.
                if let Some(i) = self.queue.iter().position(|q| q.id == id) {
                    let q = self.queue.remove(i).expect("found");
                    done_unanswered(id, DoneReason::Cancelled, q.truncated);
                }
                for a in self.active.iter_mut().filter(|a| a.id == id) {
                    a.cancelled = true;
                    a.seq.stop();
                }
                // An embedding request's client has gone: nobody waits for its vectors.
                self.embeds.retain(|w| w.id != id);
            }
        }
    }

    fn fill_slots(&mut self, engine: &mut Engine) {
        while !self.queue.is_empty() {
            let busy: Vec<usize> = self.active.iter().map(|a| a.seq.slot()).collect();
            let free: Vec<usize> = (0..engine.n_slots())
                .filter(|s| !busy.contains(s))
                .collect();
            if free.is_empty() {
                return;
            }
            let req = self.queue.pop_front().expect("not empty");
            let id = req.id;
            match begin(engine, &free, req) {
                Ok(a) => {
                    send(&RunnerEvent::Started { id });
                    self.active.push(a);
                }
                Err(message) => {
                    tracing::warn!(id, "request failed: {message}");
                    send(&RunnerEvent::Error {
                        id,
                        message,
                        invalid: false,
                    });
                }
            }
        }
    }

    fn step(&mut self, engine: &mut Engine) -> Result<(), corral_engine::EngineError> {
        let events = {
            let mut seqs: Vec<&mut Sequence> = self.active.iter_mut().map(|a| &mut a.seq).collect();
            engine.step(&mut seqs)?
        };
        for (a, evs) in self.active.iter_mut().zip(events) {
            // With speculation one step can give several tokens: count them from the first.
            let pieces = evs
                .iter()
                .filter(|e| matches!(e, StepEvent::Piece(_)))
                .count();
            let mut generated = a.seq.generated_len() - pieces;
            for ev in evs {
                match ev {
                    StepEvent::Logprobs(lp) => a.logprobs.push(logprob(lp)),
                    StepEvent::Piece(bytes) => {
                        fault::at(fault::Point::Token);
                        generated += 1;
                        let text = a.utf8.push(&bytes);
                        match a.stops.push(&text) {
                            StopResult::Emit(t) => emit(a, t, false),
                            StopResult::Stop(t) => {
                                emit(a, t, false);
                                // The answer ends here, whatever else this step produced.
                                a.seq.stop_after(generated);
                                break;
                            }
                        }
                    }
                    StepEvent::Progress { .. } => {}
                }
            }
        }
        self.finish_done();
        if self.active.is_empty() {
            return Ok(());
        }
        let events = {
            let mut seqs: Vec<&mut Sequence> = self.active.iter_mut().map(|a| &mut a.seq).collect();
            engine.advance(&mut seqs)?
        };
        for (a, evs) in self.active.iter().zip(events) {
            for ev in evs {
                if let StepEvent::Progress { evaluated, total } = ev {
                    send(&RunnerEvent::Progress {
                        id: a.id,
                        evaluated: evaluated as u64,
                        total: total as u64,
                    });
                }
            }
        }
        Ok(())
    }

    /// Send `done` for every finished request and free its slot.
    fn finish_done(&mut self) {
        let (done, running): (Vec<Active>, Vec<Active>) =
            self.active.drain(..).partition(|a| a.seq.finished());
        self.active = running;
        for mut a in done {
            self.answered += 1;
            let stats = a.seq.stats();
            let stopped_by_word = matches!(stats.finish, Finish::Stopped) && !a.cancelled;
            if !stopped_by_word && !a.cancelled {
                let rest = a.utf8.finish();
                match a.stops.push(&rest) {
                    StopResult::Emit(t) => {
                        let t = t + &a.stops.finish();
                        emit(&mut a, t, true)
                    }
                    StopResult::Stop(t) => emit(&mut a, t, true),
                }
            }
            // Tokens whose text was held back (a stop sequence) still have their numbers.
            emit(&mut a, String::new(), true);
            let reason = match stats.finish {
                _ if a.cancelled => DoneReason::Cancelled,
                Finish::Length => DoneReason::Length,
                Finish::EndOfGeneration | Finish::Stopped => DoneReason::Stop,
            };
            let context = a.want_context.then(|| {
                let mut c = std::mem::take(&mut a.tokens);
                c.extend(&stats.generated);
                c
            });
            send(&RunnerEvent::Done(DoneInfo {
                id: a.id,
                reason,
                prompt_eval_count: stats.prompt_evaluated as u64,
                prompt_cached: stats.prompt_tokens.saturating_sub(stats.prompt_evaluated) as u64,
                prompt_eval_duration_ns: stats.prompt_duration.as_nanos() as u64,
                eval_count: stats.generated.len() as u64,
                eval_duration_ns: stats.eval_duration.as_nanos() as u64,
                prompt_truncated: a.truncated,
                draft_proposed: stats.draft_proposed,
                draft_accepted: stats.draft_accepted,
                context,
                stop_sequence: a.stops.matched().map(str::to_string),
            }));
        }
    }
}

/// Start a prepared request in the free slot whose cache shares the most of its prompt.
fn begin(engine: &mut Engine, free: &[usize], req: Prepared) -> Result<Active, String> {
    let slot = engine.best_slot(free, &req.tokens).expect("a free slot");
    let seq = engine
        .start(slot, &req.tokens, &req.sampling)
        .map_err(|e| e.to_string())?;
    Ok(Active {
        id: req.id,
        seq,
        utf8: Utf8Assembler::default(),
        stops: StopMatcher::new(req.stop),
        tokens: req.tokens,
        want_context: req.want_context,
        cancelled: false,
        truncated: req.truncated,
        logprobs: Vec::new(),
    })
}

/// An embedding request, tokenized, and the vectors computed so far.
struct EmbedWork {
    id: u64,
    inputs: Vec<Vec<i32>>,
    done: Vec<Vec<f32>>,
    count: u64,
    /// Tokens a second its pieces have been embedded at (`None` before the first).
    rate: Option<f64>,
}

/// How long a piece of an embedding request (several inputs, packed as `Engine::embed` packs
/// them) should take: the running completions' next steps, pings and cancels wait for it. A
/// generative model embeds a few hundred tokens a second on a small CPU, so a fixed size
/// would hold the others for seconds there and be needlessly small for a BERT on a GPU.
const EMBED_PIECE_TIME: std::time::Duration = std::time::Duration::from_millis(200);
/// Tokens in a request's first piece, before its speed is known.
const EMBED_FIRST_PIECE_TOKENS: usize = 256;
/// The most tokens in a piece, however fast.
const EMBED_MAX_PIECE_TOKENS: usize = 16_384;

/// Embed the next piece of `work`'s inputs (at least one input: an input is never cut);
/// true when the request is answered (or failed).
fn embed_piece(engine: &mut Engine, work: &mut EmbedWork) -> bool {
    let budget = work.rate.map_or(EMBED_FIRST_PIECE_TOKENS, |r| {
        ((r * EMBED_PIECE_TIME.as_secs_f64()) as usize).min(EMBED_MAX_PIECE_TOKENS)
    });
    let start = work.done.len();
    let mut end = start;
    let mut tokens = 0;
    while end < work.inputs.len() && (end == start || tokens + work.inputs[end].len() <= budget) {
        tokens += work.inputs[end].len();
        end += 1;
    }
    let started = Instant::now();
    let result = engine.embed(&work.inputs[start..end]);
    work.rate = Some(tokens as f64 / started.elapsed().as_secs_f64().max(1e-6));
    match result {
        Ok(v) => work.done.extend(v),
        Err(e) => {
            send(&RunnerEvent::Error {
                id: work.id,
                message: e.to_string(),
                invalid: false,
            });
            return true;
        }
    }
    if work.done.len() < work.inputs.len() {
        return false;
    }
    send(&RunnerEvent::Embeddings {
        id: work.id,
        embeddings: std::mem::take(&mut work.done),
        prompt_eval_count: work.count,
    });
    true
}

/// Tokenize an embedding request, fitting each input to the context (or refusing it); `None`
/// when it was refused (the refusal is sent).
fn tokenize_embed(engine: &Engine, job: EmbedJob) -> Option<EmbedWork> {
    let n_ctx = engine.embed_n_ctx() as usize;
    let mut inputs = Vec::with_capacity(job.inputs.len());
    let mut count = 0u64;
    let refuse = |length: String| {
        let message = format!("input length exceeds the context length: {length}, num_ctx {n_ctx}");
        send(&RunnerEvent::Error {
            id: job.id,
            message,
            invalid: true,
        });
        None
    };
    for (i, text) in job.inputs.iter().enumerate() {
        let mut text = text.clone();
        // Far too long to fit: known without tokenizing (which costs memory by the byte).
        if corral_api::text::certainly_exceeds(&text, n_ctx) {
            if !job.truncate {
                return refuse(format!("over {n_ctx} tokens ({} bytes)", text.len()));
            }
            corral_api::text::bound_to_context(&mut text, n_ctx, 0);
        }
        let mut t = engine.tokenize(&text, true);
        if t.len() > n_ctx {
            if !job.truncate {
                return refuse(format!("{} tokens", t.len()));
            }
            t.truncate(n_ctx);
        }
        if t.is_empty() {
            // Empty text, with a vocabulary that adds no BOS (SmolLM2's): nothing to pool.
            send(&RunnerEvent::Error {
                id: job.id,
                message: format!("input {i} has no tokens to embed"),
                invalid: true,
            });
            return None;
        }
        count += t.len() as u64;
        inputs.push(t);
    }
    Some(EmbedWork {
        id: job.id,
        done: Vec::with_capacity(inputs.len()),
        inputs,
        count,
        rate: None,
    })
}

/// Send a piece of an answer with the log probabilities of the tokens behind it; empty text
/// is sent only to carry the last ones (`last`).
fn emit(a: &mut Active, text: String, last: bool) {
    if !text.is_empty() || (last && !a.logprobs.is_empty()) {
        send(&RunnerEvent::Token {
            id: a.id,
            text,
            logprobs: std::mem::take(&mut a.logprobs),
        });
    }
}

/// The engine's numbers in the API's shape: the token's text (lossy for a part of a UTF-8
/// character) and its own bytes.
fn logprob(lp: corral_engine::TokenLogprobs) -> corral_api::Logprob {
    let token = |t: corral_engine::TokenProb| corral_api::TokenLogprob {
        token: String::from_utf8_lossy(&t.bytes).into_owned(),
        logprob: f64::from(t.logprob),
        bytes: t.bytes,
    };
    corral_api::Logprob {
        token: token(lp.chosen),
        top_logprobs: lp.top.into_iter().map(token).collect(),
    }
}
