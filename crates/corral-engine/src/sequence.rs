//! Completions in slots: a [`Sequence`] is one request's state, and the engine advances every
//! running sequence together, one llama.cpp decode per step (continuous batching).
//!
//! With speculation a generating sequence also feeds tokens proposed for the steps after this
//! one (by a draft model or by prompt lookup, see `speculate.rs`); the next step samples at
//! each of their positions in turn, keeps them while the sampled token equals the proposed
//! one, and drops the rest from the cache. Every kept token was sampled from the model's own
//! distribution given the tokens before it, so the answer is what it would have been without
//! speculation (token for token with greedy sampling); only the number of decodes changes.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use llama_cpp_2::token::LlamaToken;

use crate::pick::Picker;
use crate::sampling::token_logprobs;
use crate::{speculate, Engine, EngineError, Event, Finish, SamplingParams, Stats, TokenLogprobs};

/// How many sequences (slots) one context serves at once.
pub type SlotId = usize;

/// One completion being evaluated or generated in a slot.
pub struct Sequence {
    slot: SlotId,
    /// Prompt tokens not yet evaluated.
    pending: Vec<LlamaToken>,
    prompt_tokens: usize,
    prompt_evaluated: usize,
    picker: Picker,
    num_predict: Option<u32>,
    num_keep: usize,
    /// Whether a full context is shifted (else the answer ends).
    shift: bool,
    /// Alternatives to report with each token's log probability; `None`: none reported.
    logprobs: Option<usize>,
    /// Tokens to propose per step: from the draft model, else by prompt lookup (0: none).
    speculate: usize,
    use_draft: bool,
    /// Tokens proposed in the last batch after `to_feed`'s, waiting to be verified.
    drafts: Vec<LlamaToken>,
    /// Proposed and accepted tokens so far.
    proposed: u64,
    accepted: u64,
    /// Context shifts so far.
    shifts: u32,
    /// Index of this sequence's logits in the last batch, once it has some to sample (its
    /// drafts' logits follow at the next indices).
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

    /// Tokens generated so far.
    pub fn generated_len(&self) -> usize {
        self.generated.len()
    }

    /// End it after its first `tokens` generated tokens: a stop sequence found in a step that
    /// produced several tokens (speculation) ends the answer where it was found.
    pub fn stop_after(&mut self, tokens: usize) {
        self.generated.truncate(tokens);
        self.finish = Some(Finish::Stopped);
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
            draft_proposed: self.proposed,
            draft_accepted: self.accepted,
        }
    }
}

/// What one sequence adds to a batch.
enum Part {
    /// The token sampled last (already in the slot's history) and the tokens proposed after it.
    Generating {
        tok: LlamaToken,
        drafts: Vec<LlamaToken>,
    },
    /// A chunk of the prompt; `last`: it ends the prompt, so its last token gives logits.
    Prompt { chunk: Vec<LlamaToken>, last: bool },
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

impl Engine {
    /// Of the `free` slots, the one whose cache shares the longest prefix with `prompt`, when
    /// that prefix is at least a tenth of both the prompt (llama-server's rule) and the
    /// slot's cache; otherwise, or between equals, the least recently used one. A prompt that
    /// shares only a first token or two with every slot so goes to an empty or stale slot
    /// instead of evicting a long cached conversation that its next turn would reuse.
    pub fn best_slot(&self, free: &[SlotId], prompt: &[i32]) -> Option<SlotId> {
        free.iter().copied().max_by_key(|&s| {
            let common = self.cached[s]
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a.0 == **b)
                .count();
            let worth = if common * 10 >= prompt.len().max(self.cached[s].len()) {
                common
            } else {
                0
            };
            (
                worth,
                std::cmp::Reverse(self.last_start[s]),
                std::cmp::Reverse(s),
            )
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
        self.starts += 1;
        self.last_start[slot] = self.starts;
        let picker = Picker::new(sp, self.model, &prompt, self.n_ctx_slot)?;
        // A draft model, when the model has one and the request wants its tokens, comes first.
        let use_draft = self.drafter.is_some() && sp.draft > 0;
        Ok(Sequence {
            slot,
            pending: prompt[keep..].to_vec(),
            prompt_tokens: prompt.len(),
            prompt_evaluated: 0,
            picker,
            num_predict: sp.num_predict,
            num_keep: sp.num_keep as usize,
            shift: sp.shift,
            logprobs: sp.logprobs.map(|n| n as usize),
            speculate: if use_draft { sp.draft } else { sp.lookup } as usize,
            use_draft,
            drafts: Vec::new(),
            proposed: 0,
            accepted: 0,
            shifts: 0,
            logits_idx: None,
            to_feed: None,
            generated: Vec::new(),
            started: Instant::now(),
            prompt_done: None,
            finish: None,
        })
    }

    /// The most tokens a sequence may generate (without num_predict, one context's worth).
    fn limit(&self, s: &Sequence) -> usize {
        s.num_predict.unwrap_or(self.n_ctx_slot) as usize
    }

    /// One step for every unfinished sequence: sample from the logits of the last decode, one
    /// token per sequence, or with speculation every proposed token that is confirmed plus
    /// one more. Events are returned per sequence.
    pub fn step(&mut self, seqs: &mut [&mut Sequence]) -> Result<Vec<Vec<StepEvent>>, EngineError> {
        let mut events: Vec<Vec<StepEvent>> = seqs.iter().map(|_| Vec::new()).collect();
        // First sample from logits of the previous step, so tokens stream as early as possible.
        let vocab = self.model.vocab();
        for (i, s) in seqs.iter_mut().enumerate() {
            let Some(first) = s.logits_idx.take() else {
                continue;
            };
            let drafts = std::mem::take(&mut s.drafts);
            // The cache ends with the fed token and then the drafts: sampling after `j`
            // confirmed drafts sees the context as it would be without speculation.
            let base = self.cached[s.slot].len() - drafts.len();
            let limit = self.limit(s);
            let mut j = 0;
            let mut next = None;
            while s.finish.is_none() {
                let full = base + j >= self.n_ctx_slot as usize;
                if s.generated.len() >= limit
                    || (full && (!s.shift || (s.num_predict.is_none() && s.shifts > 0)))
                {
                    s.finish = Some(Finish::Length);
                    break;
                }
                let idx = first + j as i32;
                let mut tok = s.picker.pick(&self.ctx, idx);
                if vocab.is_eog(tok) {
                    match s.picker.close_instead_of_ending() {
                        Some(t) => tok = t,
                        None => {
                            s.finish = Some(Finish::EndOfGeneration);
                            break;
                        }
                    }
                }
                s.generated.push(tok.0);
                if let Some(n) = s.logprobs {
                    let logits = self.ctx.get_logits_ith(idx);
                    events[i].push(StepEvent::Logprobs(token_logprobs(logits, tok.0, n, |t| {
                        vocab.token_to_piece(LlamaToken(t), false, None)
                    })));
                }
                let piece = vocab.token_to_piece(tok, false, None);
                s.picker.seen(&piece);
                events[i].push(StepEvent::Piece(piece));
                if drafts.get(j) == Some(&tok) {
                    j += 1;
                    continue;
                }
                next = Some((tok, full));
                break;
            }
            s.proposed += drafts.len() as u64;
            s.accepted += j as u64;
            if j < drafts.len() {
                self.drop_drafts(s, base + j);
            }
            match next {
                Some((tok, true)) => self.shift(s, tok),
                Some((tok, false)) if s.pending.is_empty() => s.to_feed = Some(tok),
                // The cache could not drop the drafts and the slot is evaluated again.
                Some((tok, false)) => s.pending.push(tok),
                None => {}
            }
        }
        Ok(events)
    }

    /// Forget a sequence's cache after its first `keep` tokens (drafts that were not
    /// confirmed). A cache that cannot drop a tail (recurrent models) is emptied and the kept
    /// tokens are evaluated again, and the sequence speculates no more.
    fn drop_drafts(&mut self, s: &mut Sequence, keep: usize) {
        let cached = &mut self.cached[s.slot];
        if self
            .ctx
            .kv_cache_seq_rm(s.slot as i32, Some(keep as u32), None)
            .is_ok()
        {
            cached.truncate(keep);
            return;
        }
        tracing::warn!(
            slot = s.slot,
            "this model's cache cannot drop unconfirmed tokens: speculation is off for the request"
        );
        let _ = self.ctx.kv_cache_seq_rm(s.slot as i32, None, None);
        cached.truncate(keep);
        s.pending = std::mem::take(cached);
        s.speculate = 0;
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
    ///
    /// One llama.cpp decode carries each generating sequence's last token (and the tokens
    /// proposed after it) and as much pending prompt as still fits in `n_batch`, so a long
    /// prompt is evaluated in chunks between other sequences' tokens.
    pub fn advance(
        &mut self,
        seqs: &mut [&mut Sequence],
    ) -> Result<Vec<Vec<StepEvent>>, EngineError> {
        let mut events: Vec<Vec<StepEvent>> = seqs.iter().map(|_| Vec::new()).collect();
        let cap = self.n_batch as usize;
        // Generating sequences first: one token each, and the proposals that fit after it.
        let mut feeding: Vec<(usize, LlamaToken, usize)> = Vec::new(); // (seq, token, proposals)
        let mut reserved = 0usize;
        for (i, s) in seqs.iter_mut().enumerate() {
            if s.finish.is_some() {
                s.to_feed = None;
                continue;
            }
            let Some(tok) = s.to_feed.take() else {
                continue;
            };
            if reserved == cap {
                s.to_feed = Some(tok);
                continue;
            }
            // Room in the context after this token, in the batch, and in what is left to
            // generate after the token sampled from this one's logits.
            let k = s
                .speculate
                .min(self.n_ctx_slot as usize - self.cached[s.slot].len() - 1)
                .min(cap - reserved - 1)
                .min(self.limit(s).saturating_sub(s.generated.len() + 1));
            feeding.push((i, tok, k));
            reserved += 1 + k;
        }
        // The fed tokens join their slots' histories first: proposals continue from them.
        for &(i, tok, _) in &feeding {
            self.cached[seqs[i].slot].push(tok);
        }
        let proposals = self.propose(seqs, &feeding)?;
        // What each sequence adds: its fed token and proposals, or a chunk of its prompt.
        let mut parts: Vec<(usize, Part)> = Vec::new(); // (seq index, part)
        let mut used = 0usize;
        for ((i, tok, _), drafts) in feeding.into_iter().zip(proposals) {
            used += 1 + drafts.len();
            parts.push((i, Part::Generating { tok, drafts }));
        }
        // Then prompt chunks, in order, in what is left of the batch.
        for (i, s) in seqs.iter_mut().enumerate() {
            if s.finish.is_some() || s.pending.is_empty() || used == cap {
                continue;
            }
            let n = s.pending.len().min(cap - used);
            let last = n == s.pending.len();
            parts.push((
                i,
                Part::Prompt {
                    chunk: s.pending.drain(..n).collect(),
                    last,
                },
            ));
            used += n;
            if s.prompt_done.is_none() {
                s.prompt_evaluated += n;
            }
            events[i].push(StepEvent::Progress {
                evaluated: s.prompt_evaluated,
                total: s.prompt_evaluated + s.pending.len(),
            });
        }
        // The batch goes in slot order. With a KV cache per slot, llama.cpp cuts a batch into
        // micro-batches of consecutive slot ids in the order they come (`split_equal`), and
        // each micro-batch is a pass over every weight: four decoding slots out of order cost
        // two or three passes instead of one (measured: 3 + 1 tokens, 20% more CPU a token).
        parts.sort_by_key(|(i, _)| seqs[*i].slot);
        self.batch.clear();
        let mut fed: Vec<(usize, usize)> = Vec::new(); // (seq index, batch index)
        let mut at = 0usize;
        for (i, part) in parts {
            let s = &mut seqs[i];
            let cached = &mut self.cached[s.slot];
            match part {
                Part::Generating { tok, drafts } => {
                    fed.push((i, at));
                    let pos = cached.len() as i32 - 1;
                    self.batch
                        .add(tok, pos, &[s.slot as i32], true)
                        .map_err(|e| EngineError::Decode(e.to_string()))?;
                    at += 1;
                    for &t in &drafts {
                        let pos = cached.len() as i32;
                        self.batch
                            .add(t, pos, &[s.slot as i32], true)
                            .map_err(|e| EngineError::Decode(e.to_string()))?;
                        cached.push(t);
                        at += 1;
                    }
                    s.drafts = drafts;
                }
                Part::Prompt { chunk, last } => {
                    let n = chunk.len();
                    for (j, tok) in chunk.into_iter().enumerate() {
                        let pos = cached.len() as i32;
                        let logits = last && j == n - 1;
                        self.batch
                            .add(tok, pos, &[s.slot as i32], logits)
                            .map_err(|e| EngineError::Decode(e.to_string()))?;
                        cached.push(tok);
                        if logits {
                            fed.push((i, at));
                        }
                        at += 1;
                    }
                }
            }
        }
        if used == 0 {
            return Ok(events);
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            // The cache may now hold part of a batch: forget every slot rather than trust it.
            self.ctx.clear_kv_cache();
            self.cached.iter_mut().for_each(Vec::clear);
            if let Some(d) = &mut self.drafter {
                d.forget();
            }
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

    /// The tokens each feeding sequence proposes after its fed token (already the last of its
    /// slot's history): up to `k`, from the draft model (all of them in one batch per drafted
    /// token) or by prompt lookup.
    fn propose(
        &mut self,
        seqs: &[&mut Sequence],
        feeding: &[(usize, LlamaToken, usize)],
    ) -> Result<Vec<Vec<LlamaToken>>, EngineError> {
        let mut out: Vec<Vec<LlamaToken>> = vec![Vec::new(); feeding.len()];
        let mut wants = Vec::new();
        for (f, &(i, _, k)) in feeding.iter().enumerate() {
            if k == 0 {
                continue;
            }
            let slot = seqs[i].slot;
            let history = self.cached[slot].as_slice();
            if seqs[i].use_draft {
                wants.push((f, slot, history, k));
            } else {
                out[f] = speculate::lookup(history, k);
            }
        }
        if !wants.is_empty() {
            let drafter = self.drafter.as_mut().expect("use_draft needs a drafter");
            let drafted = drafter.propose(&wants)?;
            for ((f, ..), d) in wants.into_iter().zip(drafted) {
                out[f] = d;
            }
        }
        Ok(out)
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
            let events = self.step(&mut [&mut seq])?.remove(0);
            // One step can give several tokens (speculation): count them from the first, and
            // end the answer at the piece where the caller broke.
            let pieces = events
                .iter()
                .filter(|e| matches!(e, StepEvent::Piece(_)))
                .count();
            let mut generated = seq.generated_len() - pieces;
            for ev in events {
                if let StepEvent::Piece(bytes) = ev {
                    generated += 1;
                    if on_event(Event::Piece(&bytes)).is_break() {
                        seq.stop_after(generated);
                        break;
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
