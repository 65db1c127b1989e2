//! How a sequence samples: its parameters, llama.cpp's sampler chain built from them (a
//! grammar first, then token biases, then penalties, then the distribution samplers), the log probabilities
//! reported with each token, and JSON schemas as grammars.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;

use crate::pick::Penalties;
use crate::EngineError;

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
    /// A GBNF grammar (root rule `root`) every answer must follow: structured output.
    pub grammar: Option<String>,
    /// With a grammar: the text after which it applies (`</think>`: the model thinks freely,
    /// then answers in the format, as Ollama does). `None`: from the first token.
    pub grammar_after: Option<String>,
    /// Tokens at the start that a context shift keeps.
    pub num_keep: u32,
    /// Shift the context when an answer fills it; `false` ends the answer there instead
    /// (`Finish::Length`).
    pub shift: bool,
    /// Report each generated token's log probability and this many most likely alternatives
    /// (`None`: no log probabilities).
    pub logprobs: Option<u32>,
    /// Tokens a draft model proposes per step (used when the engine has one; 0: none).
    pub draft: u32,
    /// Tokens prompt lookup proposes per step (without a draft model; 0: none).
    pub lookup: u32,
    /// Added to these tokens' logits before penalties and sampling (OpenAI's `logit_bias`),
    /// sorted by token, each token once.
    pub logit_bias: Vec<(i32, f32)>,
}

/// One token and its log probability under the logits it was sampled from.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenProb {
    pub token: i32,
    /// The token's own text, as bytes (may be part of a UTF-8 character).
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// The log probability of a sampled token and of the most likely tokens at its position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub chosen: TokenProb,
    /// Most likely first.
    pub top: Vec<TokenProb>,
}

/// Log-softmax of the raw logits the sampler was given, for the chosen token and the `n` most
/// likely ones (what llama-server reports as `n_probs`).
pub(crate) fn token_logprobs(
    logits: &[f32],
    chosen: i32,
    n: usize,
    piece: impl Fn(i32) -> Vec<u8>,
) -> TokenLogprobs {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let lse = f64::from(max) + sum.ln();
    let prob = |t: i32| TokenProb {
        token: t,
        bytes: piece(t),
        logprob: (f64::from(logits[t as usize]) - lse) as f32,
    };
    let mut top: Vec<i32> = Vec::new();
    if n > 0 {
        // The n largest in one pass, kept sorted (n is at most 20).
        for (t, &l) in logits.iter().enumerate() {
            if top.len() == n && l <= logits[top[n - 1] as usize] {
                continue;
            }
            let at = top.partition_point(|&x| logits[x as usize] >= l);
            top.insert(at, t as i32);
            top.truncate(n);
        }
    }
    TokenLogprobs {
        chosen: prob(chosen),
        top: top.into_iter().map(prob).collect(),
    }
}

/// llama.cpp's chain for `sp`, with `penalties` (see [`Penalties::of`]).
pub(crate) fn build_sampler(
    sp: &SamplingParams,
    model: &LlamaModel,
    penalties: Option<Penalties>,
) -> Result<LlamaSampler, EngineError> {
    let n_vocab = model.n_vocab();
    let mut chain = Vec::new();
    if let Some(g) = &sp.grammar {
        // First, so every later sampler only sees tokens the grammar allows.
        chain.push(
            LlamaSampler::grammar(model, g, "root")
                .map_err(|e| EngineError::Grammar(format!("{e:?}")))?,
        );
    }
    if !sp.logit_bias.is_empty() {
        // Before the penalties, as llama.cpp's own server chains them.
        let biases: Vec<LlamaLogitBias> = sp
            .logit_bias
            .iter()
            .map(|&(t, b)| LlamaLogitBias::new(LlamaToken(t), b))
            .collect();
        chain.push(LlamaSampler::logit_bias(n_vocab, &biases));
    }
    if let Some(p) = penalties {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            p.last_n as i32,
            p.repeat,
            p.freq,
            p.present,
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
    Ok(LlamaSampler::chain(chain, true))
}

/// llama.cpp's conversion of a JSON schema into a GBNF grammar (root rule `root`).
pub fn json_schema_grammar(schema: &str) -> Result<String, EngineError> {
    llama_cpp_2::json_schema_to_grammar(schema).map_err(|e| EngineError::Grammar(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_a_log_softmax_with_the_top_tokens_first() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let lp = token_logprobs(&logits, 2, 3, |t| vec![b'a' + t as u8]);
        let total: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        let want = (2.0f64.exp() / total).ln() as f32;
        assert!((lp.chosen.logprob - want).abs() < 1e-6);
        assert_eq!(lp.chosen.bytes, b"c");
        let top: Vec<i32> = lp.top.iter().map(|t| t.token).collect();
        assert_eq!(
            top,
            vec![1, 3, 2],
            "largest first, ties in vocabulary order"
        );
        let probs: f64 = (0..5)
            .map(|t| f64::from(token_logprobs(&logits, t, 0, |_| vec![]).chosen.logprob).exp())
            .sum();
        assert!((probs - 1.0).abs() < 1e-5);
        assert!(token_logprobs(&logits, 0, 0, |_| vec![]).top.is_empty());
    }
}
