//! The runner: a child process of the server that owns one loaded model.
//!
//! It reads [`RunnerRequest`]s as JSON lines on stdin and writes [`RunnerEvent`]s as JSON lines
//! on stdout; its stderr is its log, which the server keeps the tail of. The model and its
//! context live on the main thread; a second thread only reads stdin, so a cancel can reach a
//! running generation between two tokens. End of stdin means the server is gone: the runner
//! exits at once.

mod text;

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::Instant;

use corral_api::options::{self as opt, Options};
use corral_api::runner::{
    CompletionRequest, DoneInfo, DoneReason, Prompt, ReadyInfo, RunnerEvent, RunnerRequest,
};
use corral_engine::{Engine, Event, Finish, LoadParams, SamplingParams};
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
}

/// Run until stdin closes. Returns an error only when the model cannot be loaded.
pub fn run(args: RunnerArgs) -> anyhow::Result<()> {
    corral_engine::log_to_tracing();
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<RunnerRequest>();
    std::thread::spawn(move || read_requests(tx));

    let mut engine = Engine::load(&LoadParams {
        path: args.model.clone(),
        n_gpu_layers: args.gpu_layers,
        use_mmap: !args.no_mmap,
        n_ctx: args.ctx_size,
        n_batch: args.batch_size,
        n_threads: args.threads,
    })?;
    let (bos, eos) = engine.bos_eos_text();
    let gguf_template = engine.meta("tokenizer.chat_template");
    let mut runner = Runner {
        rx,
        queue: VecDeque::new(),
        bos,
        eos,
        gguf_template,
    };
    send(&RunnerEvent::Ready(ReadyInfo {
        n_ctx: engine.n_ctx(),
        n_ctx_train: engine.n_ctx_train(),
        n_threads: args.threads,
        load_duration_ns: started.elapsed().as_nanos() as u64,
        model_size: engine.model_size(),
    }));
    tracing::info!(model = %args.model.display(), n_ctx = engine.n_ctx(), "runner ready");

    while let Some(req) = runner.next_request() {
        if let RunnerRequest::Completion(c) = req {
            let id = c.id;
            if let Err(message) = runner.complete(&mut engine, c) {
                tracing::warn!(id, "request failed: {message}");
                send(&RunnerEvent::Error { id, message });
            }
        }
    }
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
    /// Requests that arrived while another was running.
    queue: VecDeque<RunnerRequest>,
    bos: String,
    eos: String,
    gguf_template: Option<String>,
}

impl Runner {
    fn next_request(&mut self) -> Option<RunnerRequest> {
        self.queue.pop_front().or_else(|| self.rx.recv().ok())
    }

    /// Between tokens: take new requests off the channel; true if `id` was cancelled.
    fn cancelled(&mut self, id: u64) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(RunnerRequest::Cancel { id: c }) if c == id => return true,
                Ok(RunnerRequest::Cancel { id: c }) => {
                    self.queue
                        .retain(|r| !matches!(r, RunnerRequest::Completion(q) if q.id == c));
                }
                Ok(other) => self.queue.push_back(other),
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn render(&self, prompt: &Prompt) -> Result<(String, bool), String> {
        match prompt {
            Prompt::Raw { text } => Ok((text.clone(), true)),
            Prompt::Chat {
                messages, template, ..
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
                let text = tmpl
                    .render(&RenderInput {
                        messages,
                        add_generation_prompt: true,
                        tools: None,
                    })
                    .map_err(|e| e.to_string())?;
                Ok((text, true))
            }
        }
    }

    fn complete(&mut self, engine: &mut Engine, req: CompletionRequest) -> Result<(), String> {
        let id = req.id;
        let o = &req.options;
        let (text, add_special) = self.render(&req.prompt)?;
        let mut tokens = req.context.clone();
        tokens.extend(engine.tokenize(&text, add_special && req.context.is_empty()));
        if tokens.is_empty() {
            return Err("the prompt is empty".to_string());
        }
        let n_ctx = engine.n_ctx() as usize;
        let num_keep = o.num_keep.unwrap_or(opt::DEFAULT_NUM_KEEP).max(0) as usize;
        truncate_prompt(&mut tokens, n_ctx, num_keep, o.num_predict);

        let sp = sampling(o);
        let mut utf8 = Utf8Assembler::default();
        let mut stops = StopMatcher::new(o.stop.clone().unwrap_or_default());
        let mut hit_stop = false;
        let mut cancelled = false;
        let stats = engine
            .generate(&tokens, &sp, |ev| {
                if self.cancelled(id) {
                    cancelled = true;
                    return ControlFlow::Break(());
                }
                match ev {
                    Event::Progress { evaluated, total } => {
                        send(&RunnerEvent::Progress {
                            id,
                            evaluated: evaluated as u64,
                            total: total as u64,
                        });
                    }
                    Event::Piece(bytes) => {
                        let piece = utf8.push(bytes);
                        match stops.push(&piece) {
                            StopResult::Emit(t) => emit(id, t),
                            StopResult::Stop(t) => {
                                emit(id, t);
                                hit_stop = true;
                                return ControlFlow::Break(());
                            }
                        }
                    }
                }
                ControlFlow::Continue(())
            })
            .map_err(|e| e.to_string())?;
        if !hit_stop && !cancelled {
            let rest = utf8.finish();
            match stops.push(&rest) {
                StopResult::Emit(t) => emit(id, t + &stops.finish()),
                StopResult::Stop(t) => emit(id, t),
            }
        }
        let reason = match stats.finish {
            _ if cancelled => DoneReason::Cancelled,
            Finish::Length => DoneReason::Length,
            Finish::EndOfGeneration | Finish::Stopped => DoneReason::Stop,
        };
        let context = req.want_context.then(|| {
            let mut c = tokens.clone();
            c.extend(&stats.generated);
            c
        });
        send(&RunnerEvent::Done(DoneInfo {
            id,
            reason,
            prompt_eval_count: stats.prompt_evaluated as u64,
            prompt_eval_duration_ns: stats.prompt_duration.as_nanos() as u64,
            eval_count: stats.generated.len() as u64,
            eval_duration_ns: stats.eval_duration.as_nanos() as u64,
            context,
        }));
        Ok(())
    }
}

fn emit(id: u64, text: String) {
    if !text.is_empty() {
        send(&RunnerEvent::Token { id, text });
    }
}

/// A prompt too long for the context keeps its first `num_keep` tokens and its most recent
/// ones, leaving room to answer (as Ollama truncates), instead of failing the request.
fn truncate_prompt(tokens: &mut Vec<i32>, n_ctx: usize, num_keep: usize, num_predict: Option<i64>) {
    let room = match num_predict {
        Some(n) if n > 0 => (n as usize).min(n_ctx / 4),
        _ => n_ctx / 4,
    }
    .max(1);
    let limit = n_ctx.saturating_sub(room).max(1);
    if tokens.len() <= limit {
        return;
    }
    let keep = num_keep.min(limit / 2);
    let drop = tokens.len() - limit;
    tracing::warn!(
        tokens = tokens.len(),
        limit,
        keep,
        "truncating input prompt"
    );
    tokens.drain(keep..keep + drop);
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_prompts_keep_the_head_and_the_tail() {
        let mut t: Vec<i32> = (0..100).collect();
        truncate_prompt(&mut t, 40, 4, None);
        assert_eq!(t.len(), 30);
        assert_eq!(&t[..4], &[0, 1, 2, 3]);
        assert_eq!(*t.last().unwrap(), 99);
        let mut short: Vec<i32> = (0..10).collect();
        truncate_prompt(&mut short, 40, 4, None);
        assert_eq!(short.len(), 10);
    }
}
