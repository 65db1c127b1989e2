//! The engine's own speed, in-process, for comparing with Corral over HTTP
//! (`bench/speed.py` runs both): the time to the first token of a prompt (prompt tokens per
//! second) and the rate of the tokens after it (decode tokens per second), greedy.
//!
//! `cargo run --release -p corral-engine --example limit -- MODEL PROMPT_FILE THREADS GEN RUNS`
//! prints one JSON object per run. The prompt file's text is tokenized as the runner tokenizes
//! a raw prompt; each run puts `Run <n>: ` before it so no run reuses another's cache.

use std::ops::ControlFlow;
use std::time::Instant;

use corral_engine::{Engine, Event, LoadParams, SamplingParams};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        eprintln!("usage: limit MODEL PROMPT_FILE THREADS GEN_TOKENS RUNS");
        std::process::exit(2);
    }
    let text = std::fs::read_to_string(&a[2]).expect("prompt file");
    let threads: u32 = a[3].parse().expect("threads");
    let gen: u32 = a[4].parse().expect("gen tokens");
    let runs: u32 = a[5].parse().expect("runs");
    let mut engine = Engine::load(&LoadParams {
        path: a[1].clone().into(),
        n_gpu_layers: 0,
        use_mmap: true,
        n_ctx: 4096,
        n_batch: 512,
        n_threads: threads,
        lora: None,
        kv_cache_type: Default::default(),
        flash_attention: Default::default(),
        draft: None,
    })
    .expect("load");
    let sp = SamplingParams {
        temperature: 0.0,
        top_k: 40,
        top_p: 0.9,
        min_p: 0.0,
        typical_p: 1.0,
        repeat_last_n: 64,
        repeat_penalty: 1.1,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
        seed: Some(0),
        num_predict: Some(gen),
        grammar: None,
        grammar_after: None,
        num_keep: 4,
        shift: true,
        logprobs: None,
        draft: 0,
        lookup: 0,
        logit_bias: Vec::new(),
    };
    // One warm-up run, not reported: the first decode pays for page faults and allocations.
    for run in 0..=runs {
        let prompt = engine.tokenize(&format!("Run {run}: {text}"), true);
        let started = Instant::now();
        let mut first = None;
        let mut last = started;
        let mut n = 0u32;
        engine
            .generate(&prompt, &sp, |ev| {
                if let Event::Piece(_) = ev {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = now;
                    n += 1;
                }
                ControlFlow::Continue(())
            })
            .expect("generate");
        let first = first.expect("a token");
        if run == 0 {
            continue;
        }
        let ttft = (first - started).as_secs_f64();
        let decode = (last - first).as_secs_f64();
        println!(
            "{{\"prompt_tokens\": {}, \"ttft_s\": {ttft:.4}, \"prompt_tps\": {:.2}, \"gen_tokens\": {n}, \"decode_tps\": {:.2}}}",
            prompt.len(),
            prompt.len() as f64 / ttft,
            (n.saturating_sub(1)) as f64 / decode.max(1e-9)
        );
    }
}
