//! The runner: a child process of the server that owns one loaded model.
//!
//! It reads [`RunnerRequest`]s as JSON lines on stdin and writes [`RunnerEvent`]s as JSON lines
//! on stdout; its stderr is its log, which the server keeps the tail of. The model and its
//! context live on the main thread; a second thread only reads stdin, so a cancel can reach a
//! running generation between two tokens. End of stdin means the server is gone: the runner
//! exits at once.

pub mod fault;
mod text;

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

use corral_api::options::{self as opt, Options};
use corral_api::runner::{
    CompletionRequest, DoneInfo, DoneReason, EmbedJob, Prompt, ReadyInfo, RunnerEvent,
    RunnerRequest,
};
use corral_engine::{Engine, Finish, LoadParams, SamplingParams, Sequence, StepEvent};
use corral_template::{ChatTemplate, RenderInput, SpecialTokens, DEFAULT_TEMPLATE};

pub use text::{StopMatcher, StopResult, Utf8Assembler};

/// How the server starts a runner (`corral runner ...`, hidden from help).
#[derive(Debug, Clone, clap::Args)]
pub struct RunnerArgs {
    /// GGUF file to load.
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
}

/// Run until stdin closes. Returns an error only when the model cannot be loaded.
pub fn run(args: RunnerArgs) -> anyhow::Result<()> {
    corral_engine::log_to_tracing();
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<RunnerRequest>();
    std::thread::spawn(move || read_requests(tx));

    fault::at(fault::Point::Load);
    if args.gpu_layers > 0 {
        fault::at(fault::Point::GpuLoad);
    }
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
    send(&RunnerEvent::Ready(ReadyInfo {
        n_ctx: engine.n_ctx(),
        n_ctx_train: engine.n_ctx_train(),
        n_threads: args.threads,
        load_duration_ns: started.elapsed().as_nanos() as u64,
        model_size: engine.model_size(),
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
    // The server closed our stdin or went away: nothing more can be asked of us.
    tracing::info!("stdin closed; runner exiting");
    std::process::exit(0);
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
    /// Embedding requests, served between two steps of the running completions.
    embeds: VecDeque<EmbedJob>,
    /// The KV usage last reported, and when.
    usage_sent: (u64, Instant),
}

/// A request checked and tokenized on arrival, waiting for a slot.
struct Prepared {
    id: u64,
    tokens: Vec<i32>,
    sampling: SamplingParams,
    stop: Vec<String>,
    want_context: bool,
    truncated: u64,
}

/// Why a request could not be prepared: its own fault (`invalid`), or the runner's.
struct Refusal {
    message: String,
    invalid: bool,
}

impl Refusal {
    fn invalid(message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
            invalid: true,
        }
    }
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
            while let Some(job) = self.embeds.pop_front() {
                embed(engine, job);
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
                let (id, count_only) = (c.id, c.count_only);
                match self.prepare(engine, *c) {
                    Ok(p) => {
                        send(&RunnerEvent::Accepted {
                            id,
                            prompt_tokens: p.tokens.len() as u64,
                            truncated: p.truncated,
                        });
                        if count_only {
                            send(&RunnerEvent::Done(DoneInfo {
                                id,
                                reason: DoneReason::Stop,
                                prompt_eval_count: 0,
                                prompt_cached: 0,
                                prompt_eval_duration_ns: 0,
                                eval_count: 0,
                                eval_duration_ns: 0,
                                prompt_truncated: p.truncated,
                                context: None,
                            }));
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
            RunnerRequest::Embed(job) => self.embeds.push_back(job),
            RunnerRequest::Cancel { id } => {
                // A queued request that goes still gets its final event, so nothing waits on it.
                if let Some(i) = self.queue.iter().position(|q| q.id == id) {
                    let q = self.queue.remove(i).expect("found");
                    send(&RunnerEvent::Done(DoneInfo {
                        id,
                        reason: DoneReason::Cancelled,
                        prompt_eval_count: 0,
                        prompt_cached: 0,
                        prompt_eval_duration_ns: 0,
                        eval_count: 0,
                        eval_duration_ns: 0,
                        prompt_truncated: q.truncated,
                        context: None,
                    }));
                }
                for a in self.active.iter_mut().filter(|a| a.id == id) {
                    a.cancelled = true;
                    a.seq.stop();
                }
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

    fn render(&self, prompt: &Prompt) -> Result<String, String> {
        match prompt {
            Prompt::Raw { text } => Ok(text.clone()),
            Prompt::Infill {
                prefix,
                suffix,
                system,
                template: Some(go),
            } => corral_template::render_go_infill(go, system.as_deref(), prefix, suffix)
                .map_err(|e| e.to_string()),
            // Built from FIM tokens in `prepare`; the text only measures it.
            Prompt::Infill {
                prefix,
                suffix,
                template: None,
                ..
            } => Ok(format!("{prefix}{suffix}")),
            Prompt::Chat {
                messages,
                template,
                tools,
                think,
            } => {
                let tmpl = match (template, &self.gguf_template) {
                    (Some(go), _) => ChatTemplate::go(go),
                    (None, Some(jinja)) => ChatTemplate::jinja(
                        jinja,
                        SpecialTokens {
                            bos: self.bos.clone(),
                            eos: self.eos.clone(),
                        },
                    ),
                    (None, None) => ChatTemplate::go(DEFAULT_TEMPLATE),
                }
                .map_err(|e| e.to_string())?;
                tmpl.render(&RenderInput {
                    messages,
                    add_generation_prompt: true,
                    tools: tools.as_deref(),
                    think: *think,
                })
                .map_err(|e| e.to_string())
            }
        }
    }

    /// Render and tokenize a request, fit it to the context (or refuse it), and build its
    /// sampler settings: everything that can fail because of the request, done on arrival so
    /// that a bad request is answered at once even while every slot is busy.
    fn prepare(&self, engine: &Engine, req: CompletionRequest) -> Result<Prepared, Refusal> {
        let o = &req.options;
        let n_ctx = engine.n_ctx() as usize;
        let mut text = self.render(&req.prompt).map_err(|message| Refusal {
            message,
            invalid: false,
        })?;
        let num_keep = o.num_keep.unwrap_or(opt::DEFAULT_NUM_KEEP).max(0) as usize;
        if !req.truncate && (req.cut_bytes > 0 || corral_api::text::certainly_exceeds(&text, n_ctx))
        {
            return Err(Refusal::invalid(too_long(None, n_ctx)));
        }
        // Tokenizing text far beyond the context costs memory in proportion to the text: cut it
        // to what truncation would keep first (the server has bounded each message already;
        // this bounds a conversation of many).
        let cut = corral_api::text::bound_to_context(&mut text, n_ctx, num_keep);
        if cut > 0 {
            tracing::warn!(
                bytes = cut,
                "cut the rendered prompt to the context before tokenizing"
            );
        }
        let fim = matches!(&req.prompt, Prompt::Infill { template: None, .. });
        let mut fim_dropped = 0;
        let mut tokens = req.context.clone();
        match &req.prompt {
            Prompt::Infill {
                prefix,
                suffix,
                template: None,
                ..
            } => {
                let room = answer_room(n_ctx, o.num_predict);
                let (t, dropped) = fim_prompt(engine, prefix, suffix, n_ctx - room)?;
                if dropped > 0 && !req.truncate {
                    return Err(Refusal::invalid(too_long(Some(t.len() + dropped), n_ctx)));
                }
                fim_dropped = dropped;
                tokens.extend(t)
            }
            _ => tokens.extend(engine.tokenize(&text, req.context.is_empty())),
        }
        if tokens.is_empty() {
            return Err(Refusal::invalid("the prompt is empty"));
        }
        if !req.truncate && tokens.len() >= n_ctx {
            return Err(Refusal::invalid(too_long(Some(tokens.len()), n_ctx)));
        }
        // Text cut by bytes was never tokenized: count it at the kept text's tokens per byte.
        let cut_bytes = req.cut_bytes + cut as u64;
        let estimated = if cut_bytes > 0 && !text.is_empty() && !fim {
            (cut_bytes as f64 * tokens.len() as f64 / text.len() as f64).round() as u64
        } else {
            0
        };
        // With truncate: false a prompt that fits is kept whole (the answer gets what room is
        // left); a fill-in-the-middle prompt was fitted part by part when it was built.
        let dropped = if req.truncate && !fim {
            truncate_prompt(&mut tokens, n_ctx, num_keep, o.num_predict)
        } else {
            0
        };
        let truncated = dropped as u64 + fim_dropped as u64 + estimated;
        if truncated > 0 {
            tracing::warn!(
                id = req.id,
                dropped = dropped + fim_dropped,
                estimated,
                kept = tokens.len(),
                n_ctx,
                "prompt longer than the context: truncated"
            );
        }
        let mut sampling = sampling(o);
        sampling.shift = req.shift;
        sampling.logprobs = req.logprobs;
        if let Some(f) = &req.format {
            sampling.grammar = format_grammar(f).map_err(Refusal::invalid)?;
        }
        if let Some(schema) = &req.tool_grammar {
            sampling.grammar = Some(tool_call_grammar(schema).map_err(Refusal::invalid)?);
        }
        Ok(Prepared {
            id: req.id,
            tokens,
            sampling,
            stop: o.stop.clone().unwrap_or_default(),
            want_context: req.want_context,
            truncated,
        })
    }

    fn step(&mut self, engine: &mut Engine) -> Result<(), corral_engine::EngineError> {
        let events = {
            let mut seqs: Vec<&mut Sequence> = self.active.iter_mut().map(|a| &mut a.seq).collect();
            engine.step(&mut seqs)?
        };
        for (a, evs) in self.active.iter_mut().zip(events) {
            for ev in evs {
                match ev {
                    StepEvent::Logprobs(lp) => a.logprobs.push(logprob(lp)),
                    StepEvent::Piece(bytes) => {
                        fault::at(fault::Point::Token);
                        let text = a.utf8.push(&bytes);
                        match a.stops.push(&text) {
                            StopResult::Emit(t) => emit(a, t, false),
                            StopResult::Stop(t) => {
                                emit(a, t, false);
                                a.seq.stop();
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
                context,
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

/// A fill-in-the-middle prompt from the vocabulary's FIM tokens, prefix first as llama-server's
/// infill builds it: `[BOS] <pre> prefix <suf> suffix <mid>`; the answer is the middle. A prompt
/// over `limit` tokens is cut part by part, never across the markers: the prefix keeps its end
/// and the suffix its start (the text nearest the middle), the suffix at most a quarter when
/// the prefix needs the rest. Returns the tokens and how many were dropped.
fn fim_prompt(
    engine: &Engine,
    prefix: &str,
    suffix: &str,
    limit: usize,
) -> Result<(Vec<i32>, usize), Refusal> {
    let [pre, suf, mid] = engine
        .fim_tokens()
        .ok_or_else(|| Refusal::invalid("the model has no fill-in-the-middle tokens"))?;
    // Tokenizing nothing with special tokens on gives the BOS the model wants, if any.
    let mut tokens = engine.tokenize("", true);
    let mut p = engine.tokenize(prefix, false);
    let mut s = engine.tokenize(suffix, false);
    let budget = limit.saturating_sub(tokens.len() + 3).max(2);
    let total = p.len() + s.len();
    if total > budget {
        let s_keep = s
            .len()
            .min((budget / 4).max(budget.saturating_sub(p.len())));
        let p_keep = p.len().min(budget - s_keep);
        s.truncate(s_keep);
        p.drain(..p.len() - p_keep);
    }
    let dropped = total - p.len() - s.len();
    tokens.push(pre);
    tokens.extend(p);
    tokens.push(suf);
    tokens.extend(s);
    tokens.push(mid);
    Ok((tokens, dropped))
}

/// Ollama's message for a prompt that does not fit, with the numbers.
fn too_long(tokens: Option<usize>, n_ctx: usize) -> String {
    match tokens {
        Some(t) => {
            format!("the input length exceeds the context length: {t} tokens, num_ctx {n_ctx}")
        }
        None => format!(
            "the input length exceeds the context length: far over {n_ctx} tokens, num_ctx {n_ctx}"
        ),
    }
}

/// The grammar for a request's `format`: `"json"` (any JSON object) or a JSON schema.
fn format_grammar(format: &serde_json::Value) -> Result<Option<String>, String> {
    let schema = match format {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::String(s) if s.is_empty() => return Ok(None),
        serde_json::Value::String(s) if s == "json" => r#"{"type":"object"}"#.to_string(),
        serde_json::Value::Object(_) => format.to_string(),
        other => {
            return Err(format!(
                "invalid format: {other}; expected \"json\" or a JSON schema"
            ))
        }
    };
    corral_engine::json_schema_grammar(&schema)
        .map(Some)
        .map_err(|e| format!("invalid JSON schema in format: {e}"))
}

/// A grammar for one forced tool call: `<tool_call>`, a JSON call matching `schema`,
/// `</tool_call>`. llama.cpp's converter names its top rule `root`; it becomes the call body.
fn tool_call_grammar(schema: &serde_json::Value) -> Result<String, String> {
    let json = corral_engine::json_schema_grammar(&schema.to_string())
        .map_err(|e| format!("invalid tool parameters schema: {e}"))?;
    let mut out = String::from("root ::= \"<tool_call>\\n\" call-body \"\\n</tool_call>\"\n");
    for line in json.lines() {
        match line.strip_prefix("root ::=") {
            Some(rest) => out.push_str(&format!("call-body ::={rest}\n")),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// Embed every input of a job in as few decodes as fit, and answer with the vectors.
fn embed(engine: &mut Engine, job: EmbedJob) {
    let n_ctx = engine.embed_n_ctx() as usize;
    let mut inputs = Vec::with_capacity(job.inputs.len());
    let mut count = 0u64;
    let refuse = |length: String| {
        let message = format!("input length exceeds the context length: {length}, num_ctx {n_ctx}");
        send(&RunnerEvent::Error {
            id: job.id,
            message,
            invalid: true,
        })
    };
    for text in &job.inputs {
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
        count += t.len() as u64;
        inputs.push(t);
    }
    match engine.embed(&inputs) {
        Ok(embeddings) => send(&RunnerEvent::Embeddings {
            id: job.id,
            embeddings,
            prompt_eval_count: count,
        }),
        Err(e) => send(&RunnerEvent::Error {
            id: job.id,
            message: e.to_string(),
            invalid: false,
        }),
    }
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

/// A prompt too long for the context keeps its first `num_keep` tokens and its most recent
/// ones, leaving room to answer (as Ollama truncates), instead of failing the request.
/// Tokens a truncated prompt leaves for the answer: a quarter of the context, or `num_predict`
/// if smaller.
fn answer_room(n_ctx: usize, num_predict: Option<i64>) -> usize {
    match num_predict {
        Some(n) if n > 0 => (n as usize).min(n_ctx / 4),
        _ => n_ctx / 4,
    }
    .max(1)
}

fn truncate_prompt(
    tokens: &mut Vec<i32>,
    n_ctx: usize,
    num_keep: usize,
    num_predict: Option<i64>,
) -> usize {
    let room = answer_room(n_ctx, num_predict);
    let limit = n_ctx.saturating_sub(room).max(1);
    if tokens.len() <= limit {
        return 0;
    }
    let keep = num_keep.min(limit / 2);
    let drop = tokens.len() - limit;
    tokens.drain(keep..keep + drop);
    drop
}

fn sampling(o: &Options) -> SamplingParams {
    SamplingParams {
        temperature: o.temperature.unwrap_or(opt::DEFAULT_TEMPERATURE) as f32,
        top_k: o.top_k.unwrap_or(opt::DEFAULT_TOP_K) as i32,
        top_p: o.top_p.unwrap_or(opt::DEFAULT_TOP_P) as f32,
        min_p: o.min_p.unwrap_or(0.0) as f32,
        typical_p: o.typical_p.unwrap_or(1.0) as f32,
        repeat_last_n: o.repeat_last_n.unwrap_or(opt::DEFAULT_REPEAT_LAST_N) as i32,
        repeat_penalty: o.repeat_penalty.unwrap_or(opt::DEFAULT_REPEAT_PENALTY) as f32,
        presence_penalty: o.presence_penalty.unwrap_or(0.0) as f32,
        frequency_penalty: o.frequency_penalty.unwrap_or(0.0) as f32,
        seed: o.seed.filter(|s| *s >= 0).map(|s| s as u32),
        num_predict: o.num_predict.filter(|n| *n >= 0).map(|n| n as u32),
        grammar: None,
        num_keep: o.num_keep.unwrap_or(opt::DEFAULT_NUM_KEEP).max(0) as u32,
        shift: true,
        logprobs: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_prompts_keep_the_head_and_the_tail() {
        let mut t: Vec<i32> = (0..100).collect();
        assert_eq!(truncate_prompt(&mut t, 40, 4, None), 70);
        assert_eq!(t.len(), 30);
        assert_eq!(&t[..4], &[0, 1, 2, 3]);
        assert_eq!(*t.last().unwrap(), 99);
        let mut short: Vec<i32> = (0..10).collect();
        assert_eq!(truncate_prompt(&mut short, 40, 4, None), 0);
        assert_eq!(short.len(), 10);
    }
}
