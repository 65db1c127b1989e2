//! How a sequence picks each token: with temperature 0 and no grammar, the most likely token
//! after the repetition penalties, computed here; otherwise llama.cpp's sampler chain.
//!
//! Why the greedy case is written by hand: llama.cpp's `penalties` sampler looks every
//! vocabulary entry up in a hash map of the recent tokens (262,144 lookups a token for Gemma
//! 3, after the chain has copied every logit into a candidate array), all on the thread that
//! the decode's other threads wait for. Measured with `perf` on a 4-stream Gemma decode, that
//! was 5% of the CPU time, with as much again spent by the other core spinning meanwhile. The
//! penalties change only the recent tokens' logits (64 by default), so the same choice is one
//! pass over the logits plus those few. It picks exactly what `penalties` then `greedy`
//! would: the same float operations on the same values, and the first of equal maxima.

use std::collections::VecDeque;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use crate::sampling::{build_sampler, SamplingParams};
use crate::EngineError;

/// Repetition penalties over the last `last_n` tokens, as llama.cpp applies them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Penalties {
    pub last_n: usize,
    pub repeat: f32,
    pub freq: f32,
    pub present: f32,
}

impl Penalties {
    /// `None` where llama.cpp's sampler would do nothing. A negative `repeat_last_n` means
    /// the whole context, as in Ollama.
    pub fn of(sp: &SamplingParams, n_ctx: u32) -> Option<Self> {
        let last_n = if sp.repeat_last_n < 0 {
            n_ctx as usize
        } else {
            sp.repeat_last_n as usize
        };
        let p = Penalties {
            last_n,
            repeat: sp.repeat_penalty,
            freq: sp.frequency_penalty,
            present: sp.presence_penalty,
        };
        let none = p.repeat == 1.0 && p.freq == 0.0 && p.present == 0.0;
        (last_n > 0 && !none).then_some(p)
    }

    /// llama.cpp's `llama_sampler_penalties_apply` for one logit seen `count` times.
    fn apply(&self, logit: f32, count: u32) -> f32 {
        let l = if logit <= 0.0 {
            logit * self.repeat
        } else {
            logit / self.repeat
        };
        l - (count as f32 * self.freq + self.present)
    }
}

pub(crate) enum Picker {
    Greedy {
        penalties: Option<Penalties>,
        /// The last `penalties.last_n` tokens: the prompt's, then the ones picked.
        recent: VecDeque<i32>,
    },
    Chain(LlamaSampler),
}

impl Picker {
    /// For one completion whose prompt is `prompt`, in a slot of `n_ctx` tokens.
    pub fn new(
        sp: &SamplingParams,
        model: &LlamaModel,
        prompt: &[LlamaToken],
        n_ctx: u32,
    ) -> Result<Self, EngineError> {
        let penalties = Penalties::of(sp, n_ctx);
        let window = penalties.map_or(0, |p| p.last_n);
        let tail = prompt.iter().rev().take(window).rev();
        if sp.temperature <= 0.0 && sp.grammar.is_none() {
            return Ok(Picker::Greedy {
                penalties,
                recent: tail.map(|t| t.0).collect(),
            });
        }
        let mut sampler = build_sampler(sp, model, penalties)?;
        // Penalties look at recent history, prompt included, as llama.cpp's server does. A
        // grammar must see only the answer, so with one the penalties start from the answer.
        if sp.grammar.is_none() {
            sampler.accept_many(tail);
        }
        Ok(Picker::Chain(sampler))
    }

    /// Pick the token for the logits at batch index `idx`, and remember it.
    pub fn pick(&mut self, ctx: &LlamaContext, idx: i32) -> LlamaToken {
        match self {
            Picker::Chain(s) => s.sample(ctx, idx),
            Picker::Greedy { penalties, recent } => {
                let tok = greedy(ctx.get_logits_ith(idx), recent, penalties.as_ref());
                if let Some(p) = penalties {
                    if recent.len() == p.last_n {
                        recent.pop_front();
                    }
                    recent.push_back(tok);
                }
                LlamaToken(tok)
            }
        }
    }
}

/// The token llama.cpp's `penalties` (over `recent`) then `greedy` samplers pick: the first
/// token with the largest penalized logit.
pub(crate) fn greedy(logits: &[f32], recent: &VecDeque<i32>, p: Option<&Penalties>) -> i32 {
    // The recent tokens, in order, each once with its penalized logit.
    let mut seen: Vec<(usize, f32)> = Vec::new();
    if let Some(p) = p {
        let mut toks: Vec<usize> = recent
            .iter()
            .map(|&t| t as usize)
            .filter(|&t| t < logits.len())
            .collect();
        toks.sort_unstable();
        for run in toks.chunk_by(|a, b| a == b) {
            seen.push((run[0], p.apply(logits[run[0]], run.len() as u32)));
        }
    }
    // The largest value: of the logits between recent tokens, and of the penalized ones.
    let mut max = f32::NEG_INFINITY;
    let mut start = 0;
    for &(t, v) in &seen {
        max = max_of(max, &logits[start..t]);
        if v > max {
            max = v;
        }
        start = t + 1;
    }
    max = max_of(max, &logits[start..]);
    // Its first occurrence.
    let penalized = seen.iter().find(|&&(_, v)| v == max).map(|&(t, _)| t);
    let raw = logits
        .iter()
        .enumerate()
        .filter(|&(t, &l)| l == max && seen.binary_search_by_key(&t, |s| s.0).is_err())
        .map(|(t, _)| t)
        .next();
    match (raw, penalized) {
        (Some(a), Some(b)) => a.min(b) as i32,
        (Some(a), None) | (None, Some(a)) => a as i32,
        // Only NaNs: llama.cpp's greedy keeps its first candidate.
        (None, None) => 0,
    }
}

/// The largest of `init` and `xs` (NaNs ignored), in lanes the compiler can vectorize.
fn max_of(init: f32, xs: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut m = [init; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            m[k] = if c[k] > m[k] { c[k] } else { m[k] };
        }
    }
    let mut best = init;
    for &v in m.iter().chain(rest) {
        if v > best {
            best = v;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's two samplers as written there: every logit looked up, then a scan for the
    /// first maximum.
    fn reference(logits: &[f32], recent: &[i32], p: &Penalties) -> i32 {
        let mut v = logits.to_vec();
        for (t, l) in v.iter_mut().enumerate() {
            let count = recent.iter().filter(|&&r| r as usize == t).count() as u32;
            if count > 0 {
                *l = p.apply(*l, count);
            }
        }
        let mut best = 0;
        for t in 1..v.len() {
            if v[t] > v[best] {
                best = t;
            }
        }
        best as i32
    }

    #[test]
    fn greedy_picks_what_llama_cpps_penalties_and_greedy_pick() {
        let p = Penalties {
            last_n: 64,
            repeat: 1.1,
            freq: 0.25,
            present: 0.5,
        };
        // A deterministic spread of logits with ties, negatives and repeated recent tokens.
        let mut x = 12345u32;
        for case in 0..200 {
            let n = 1 + (case * 37) % 300;
            let logits: Vec<f32> = (0..n)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    ((x >> 16) % 21) as f32 / 4.0 - 2.5
                })
                .collect();
            let recent: Vec<i32> = (0..(case % 9)).map(|k| (k * 7 + case) % n).collect();
            let ring: VecDeque<i32> = recent.iter().copied().collect();
            assert_eq!(
                greedy(&logits, &ring, Some(&p)),
                reference(&logits, &recent, &p),
                "case {case}: {logits:?} recent {recent:?}"
            );
            let none = Penalties {
                repeat: 1.0,
                freq: 0.0,
                present: 0.0,
                ..p
            };
            assert_eq!(greedy(&logits, &ring, None), reference(&logits, &[], &none));
        }
    }

    #[test]
    fn a_penalty_moves_the_choice_off_a_repeated_token() {
        let logits = [1.0, 2.0, 1.9, -3.0];
        let p = Penalties {
            last_n: 64,
            repeat: 1.1,
            freq: 0.0,
            present: 0.0,
        };
        assert_eq!(greedy(&logits, &VecDeque::new(), Some(&p)), 1);
        // 2.0 / 1.1 < 1.9: the repeated token loses its place.
        assert_eq!(greedy(&logits, &VecDeque::from([1, 1]), Some(&p)), 2);
        // Ties go to the first token, as in llama.cpp.
        assert_eq!(greedy(&[0.5, 0.5], &VecDeque::new(), None), 0);
    }
}
