//! Where speculative tokens come from: prompt lookup (the tokens that followed the last
//! n-gram the last time it appeared in the prompt or the answer) and a draft model (a small
//! model of the same vocabulary, run greedily a few tokens ahead in a context of its own).
//! Whatever is proposed is verified by the model itself (`sequence.rs`), so a poor proposal
//! costs time, never correctness.

use std::path::Path;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::{EngineError, LoadParams, SlotId};

/// The longest n-gram prompt lookup matches; shorter ones are tried when it finds none.
const LOOKUP_MAX_NGRAM: usize = 3;
/// The shortest: a single token repeats too often to predict what follows it.
const LOOKUP_MIN_NGRAM: usize = 2;

/// Up to `k` tokens that followed the most recent earlier occurrence of `history`'s last
/// n-gram (the longest n from `LOOKUP_MAX_NGRAM` down that occurs), or none.
pub(crate) fn lookup(history: &[LlamaToken], k: usize) -> Vec<LlamaToken> {
    let len = history.len();
    for n in (LOOKUP_MIN_NGRAM..=LOOKUP_MAX_NGRAM).rev() {
        if len <= n {
            continue;
        }
        let tail = &history[len - n..];
        // Most recent first: an answer that copies a passage continues where it last matched.
        if let Some(start) = (0..len - n).rev().find(|&i| &history[i..i + n] == tail) {
            let from = start + n;
            return history[from..(from + k).min(len)].to_vec();
        }
    }
    Vec::new()
}

/// How many tokens, spread over the vocabulary, the runner compares between draft and model.
const VOCAB_SAMPLE: i32 = 1024;

/// A draft model with a context of as many slots as the model's, each holding the tokens of
/// the sequence it drafts for as of the last proposal.
pub(crate) struct Drafter {
    model: &'static LlamaModel,
    ctx: LlamaContext<'static>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    cached: Vec<Vec<LlamaToken>>,
}

impl Drafter {
    /// Load the draft at `path` with the main model's context settings; its vocabulary must be
    /// the main model's.
    pub(crate) fn load(
        path: &Path,
        p: &LoadParams,
        n_slots: u32,
        main: &LlamaModel,
    ) -> Result<Drafter, EngineError> {
        let backend = crate::backend()?;
        let load_err = |reason: String| EngineError::Load {
            path: path.to_path_buf(),
            reason: format!("draft model: {reason}"),
        };
        let params = LlamaModelParams::default()
            .with_n_gpu_layers(p.n_gpu_layers)
            .with_use_mmap(p.use_mmap);
        let model = LlamaModel::load_from_file(backend, path, &params)
            .map_err(|e| load_err(e.to_string()))?;
        // `corral create` compared the whole vocabularies (a hash of every token's text); here
        // the sizes and a spread of tokens guard against a draft swapped since, without
        // reading 262k texts at every start.
        let (dv, mv) = (model.vocab(), main.vocab());
        let n = model.n_vocab();
        let step = (n / VOCAB_SAMPLE).max(1) as usize;
        let same = n == main.n_vocab()
            && (0..n)
                .step_by(step)
                .chain(std::iter::once(n - 1))
                .all(|t| dv.text(LlamaToken(t)) == mv.text(LlamaToken(t)));
        if !same {
            return Err(load_err(format!(
                "its vocabulary ({} tokens) is not the model's ({} tokens)",
                model.n_vocab(),
                main.n_vocab()
            )));
        }
        // Leaked as the main model is: it lives as long as the runner.
        let model: &'static LlamaModel = Box::leak(Box::new(model));
        let cparams = crate::context_params(p, n_slots);
        let ctx = model
            .new_context(backend, cparams)
            .map_err(|e| EngineError::Context(format!("draft model context: {e}")))?;
        let n_batch = ctx.n_batch() as usize;
        Ok(Drafter {
            model,
            ctx,
            batch: LlamaBatch::new(n_batch, n_slots as i32),
            n_batch,
            cached: vec![Vec::new(); n_slots as usize],
        })
    }

    /// Bytes of the draft's weights.
    pub(crate) fn size(&self) -> u64 {
        self.model.size()
    }

    /// After a failed decode nothing in the cache can be trusted.
    pub(crate) fn forget(&mut self) {
        self.ctx.clear_kv_cache();
        self.cached.iter_mut().for_each(Vec::clear);
    }

    /// For each `(_, slot, history, k)`: up to `k` tokens the draft predicts after `history`,
    /// greedily. The draft's cache keeps what it shares with each history and evaluates the
    /// rest; then every sequence drafts one token per decode, all in one batch.
    pub(crate) fn propose(
        &mut self,
        wants: &[(usize, SlotId, &[LlamaToken], usize)],
    ) -> Result<Vec<Vec<LlamaToken>>, EngineError> {
        let decode_err = |e: String| EngineError::Decode(format!("draft model: {e}"));
        let mut pending: Vec<Vec<LlamaToken>> = Vec::with_capacity(wants.len());
        for (_, slot, history, _) in wants {
            let cached = &mut self.cached[*slot];
            let mut keep = cached
                .iter()
                .zip(history.iter())
                .take_while(|(a, b)| a == b)
                .count()
                .min(history.len() - 1);
            if self
                .ctx
                .kv_cache_seq_rm(*slot as i32, Some(keep as u32), None)
                .is_err()
            {
                let _ = self.ctx.kv_cache_seq_rm(*slot as i32, None, None);
                keep = 0;
            }
            cached.truncate(keep);
            pending.push(history[keep..].to_vec());
        }
        // Catch up, in as many decodes as the batch needs; logits at each history's end.
        let mut logits_at: Vec<i32> = vec![-1; wants.len()];
        loop {
            self.batch.clear();
            let mut used = 0usize;
            for (w, rest) in pending.iter_mut().enumerate() {
                if rest.is_empty() || used == self.n_batch {
                    continue;
                }
                let n = rest.len().min(self.n_batch - used);
                let last = n == rest.len();
                let slot = wants[w].1;
                for (j, tok) in rest.drain(..n).enumerate() {
                    let logits = last && j == n - 1;
                    let pos = self.cached[slot].len() as i32;
                    self.batch
                        .add(tok, pos, &[slot as i32], logits)
                        .map_err(|e| decode_err(e.to_string()))?;
                    self.cached[slot].push(tok);
                    if logits {
                        logits_at[w] = (used + j) as i32;
                    }
                }
                used += n;
            }
            if used == 0 {
                break;
            }
            self.decode()?;
        }
        // Then draft: one token for every sequence per decode.
        let vocab = self.model.vocab();
        let mut drafts: Vec<Vec<LlamaToken>> = vec![Vec::new(); wants.len()];
        loop {
            self.batch.clear();
            let mut used = 0usize;
            for (w, (_, slot, _, k)) in wants.iter().enumerate() {
                if logits_at[w] < 0 {
                    continue;
                }
                let tok = argmax(self.ctx.get_logits_ith(logits_at[w]));
                logits_at[w] = -1;
                drafts[w].push(tok);
                if drafts[w].len() == *k || vocab.is_eog(tok) {
                    continue;
                }
                let pos = self.cached[*slot].len() as i32;
                self.batch
                    .add(tok, pos, &[*slot as i32], true)
                    .map_err(|e| decode_err(e.to_string()))?;
                self.cached[*slot].push(tok);
                logits_at[w] = used as i32;
                used += 1;
            }
            if used == 0 {
                return Ok(drafts);
            }
            self.decode()?;
        }
    }

    fn decode(&mut self) -> Result<(), EngineError> {
        self.ctx.decode(&mut self.batch).map_err(|e| {
            self.ctx.clear_kv_cache();
            self.cached.iter_mut().for_each(Vec::clear);
            EngineError::Decode(format!("draft model: {e}"))
        })
    }
}

/// The most likely token (the first of equals, as llama.cpp's greedy sampler).
fn argmax(logits: &[f32]) -> LlamaToken {
    LlamaToken(crate::pick::greedy(logits, &Default::default(), None, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(v: &[i32]) -> Vec<LlamaToken> {
        v.iter().map(|&t| LlamaToken(t)).collect()
    }

    #[test]
    fn lookup_continues_after_the_latest_longest_match() {
        // "5 6" last appeared before "7 8 9".
        let h = toks(&[1, 5, 6, 2, 3, 5, 6, 7, 8, 9, 4, 5, 6]);
        assert_eq!(lookup(&h, 2), toks(&[7, 8]));
        assert_eq!(lookup(&h, 10), toks(&[7, 8, 9, 4, 5, 6]));
        // "4 5 6" (three tokens) beats "5 6".
        let h = toks(&[4, 5, 6, 1, 5, 6, 2, 4, 5, 6]);
        assert_eq!(lookup(&h, 1), toks(&[1]));
        // Nothing repeats: nothing proposed; a lone repeated token is not enough.
        assert!(lookup(&toks(&[1, 2, 3, 4]), 3).is_empty());
        assert!(lookup(&toks(&[1, 2, 3, 1]), 3).is_empty());
        assert!(lookup(&toks(&[7]), 3).is_empty());
    }
}
