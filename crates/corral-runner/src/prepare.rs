//! A request as it arrives: rendered through its template, tokenized, fitted to the context
//! (or refused with the reason), its sampler settings and grammar built. What can fail
//! because of the request fails here, before it waits for a slot.

use super::*;

impl Runner {
    pub(super) fn render(&self, prompt: &Prompt) -> Result<String, String> {
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
                think_level,
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
                // A conversation that ends with the assistant's words is continued from them
                // (a prefill: `{` to start JSON, an answer cut short). Go templates do it
                // themselves, as Ollama's (their `$last` leaves the last assistant turn open);
                // a GGUF's Jinja template always closes a turn, so, as llama-server does, the
                // conversation before it is rendered up to the assistant's opening and its
                // words follow.
                let jinja = template.is_none() && self.gguf_template.is_some();
                let prefill = match messages.split_last() {
                    Some((last, before))
                        if jinja
                            && last.role == "assistant"
                            && !last.content.is_empty()
                            && last.tool_calls.as_ref().is_none_or(Vec::is_empty) =>
                    {
                        Some((before, last.content.as_str()))
                    }
                    _ => None,
                };
                let (messages, tail) = prefill.unwrap_or((messages, ""));
                let text = tmpl
                    .render(&RenderInput {
                        messages,
                        add_generation_prompt: true,
                        tools: tools.as_deref(),
                        think: *think,
                        think_level: think_level.as_deref(),
                    })
                    .map_err(|e| e.to_string())?;
                Ok(text + tail)
            }
        }
    }

    /// Render and tokenize a request, fit it to the context (or refuse it), and build its
    /// sampler settings: everything that can fail because of the request, done on arrival so
    /// that a bad request is answered at once even while every slot is busy.
    pub(super) fn prepare(
        &self,
        engine: &Engine,
        req: CompletionRequest,
    ) -> Result<Prepared, Refusal> {
        let o = &req.options;
        let n_ctx = engine.n_ctx() as usize;
        // A template that fails on the request's data (or is the request's own) is the
        // request's error.
        let mut text = self.render(&req.prompt).map_err(Refusal::invalid)?;
        // Ids from an earlier answer's `context`: one outside the vocabulary would reach
        // llama.cpp's batch, which refuses it without saying why.
        let n_vocab = engine.n_vocab();
        if let Some(bad) = req.context.iter().find(|&&t| !(0..n_vocab).contains(&t)) {
            return Err(Refusal::invalid(format!(
                "context: token {bad} is out of range (the vocabulary has {n_vocab} tokens)"
            )));
        }
        // The same for biased ids: llama.cpp would index its candidates with them.
        if let Some((bad, _)) = req
            .logit_bias
            .iter()
            .find(|(t, _)| !(0..n_vocab).contains(t))
        {
            return Err(Refusal::invalid(format!(
                "logit_bias: token {bad} is out of range (the vocabulary has {n_vocab} tokens)"
            )));
        }
        // Ollama's rendered prompt (`render_only`): an earlier answer's context as text, then
        // the template's, whole (taken once the context's ids are known to be in range).
        let mut rendered = req
            .render_only
            .then(|| engine.detokenize(&req.context) + &text);
        let num_keep = o.num_keep.unwrap_or(opt::DEFAULT_NUM_KEEP).max(0) as usize;
        if !req.truncate && (req.cut_bytes > 0 || corral_api::text::certainly_exceeds(&text, n_ctx))
        {
            return Err(Refusal::invalid(too_long(None, n_ctx)));
        }
        // Tokenizing text far beyond the context costs memory in proportion to the text: cut it
        // to what truncation would keep first (the server has bounded each message already;
        // this bounds a conversation of many).
        // A `.Suffix` template's parts were bounded one by one by the server, and are fitted
        // one by one below: a cut of the rendered text could take a marker.
        let templated_infill = matches!(
            &req.prompt,
            Prompt::Infill {
                template: Some(_),
                ..
            }
        );
        let cut = if templated_infill {
            0
        } else {
            corral_api::text::bound_to_context(&mut text, n_ctx, num_keep)
        };
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
            Prompt::Infill {
                prefix,
                suffix,
                system,
                template: Some(go),
            } if req.truncate => {
                let room = answer_room(n_ctx, o.num_predict);
                let parts = InfillParts {
                    template: go,
                    system: system.as_deref(),
                    prefix,
                    suffix,
                };
                let bos = req.context.is_empty();
                let (t, dropped) = parts.fit(engine, &text, bos, n_ctx - room)?;
                fim_dropped = dropped;
                tokens.extend(t)
            }
            _ => tokens.extend(engine.tokenize(&text, req.context.is_empty())),
        }
        if tokens.is_empty() {
            return Err(Refusal::invalid("the prompt is empty"));
        }
        // Fill in the middle without a template is built from the model's FIM tokens, not
        // from a text: its prompt is those tokens, written out.
        if fim && rendered.is_some() {
            rendered = Some(engine.detokenize(&tokens));
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
        sampling.logit_bias = req.logit_bias.clone();
        if let Some(f) = &req.format {
            sampling.grammar = format_grammar(f).map_err(Refusal::invalid)?;
        }
        if let Some(schema) = &req.tool_grammar {
            sampling.grammar = Some(tool_call_grammar(schema).map_err(Refusal::invalid)?);
        }
        // A thinking answer thinks freely; the format (or the forced call) constrains what
        // follows the thinking, as Ollama does. Only where the template writes thinking in
        // `<think>` tags: a model that ends its thinking otherwise would never meet the
        // trigger, and its answer would go unconstrained.
        if let Prompt::Chat {
            think: Some(true),
            template,
            ..
        } = &req.prompt
        {
            let source = template.as_deref().or(self.gguf_template.as_deref());
            let tags = source.is_some_and(|t| t.contains("<think>") || t.contains(THINK_END));
            if sampling.grammar.is_some() && tags {
                sampling.grammar_after = Some(THINK_END.to_string());
            }
        }
        if let Some(g) = &sampling.grammar {
            engine.check_grammar(g).map_err(|e| {
                let schema = req.format.as_ref().or(req.tool_grammar.as_ref());
                let why = schema.and_then(crate::schema::explain).unwrap_or_else(|| {
                    format!("llama.cpp cannot enforce the grammar made from this schema ({e}); a schema that refers to itself before anything else, or repetitions too large to expand, are the usual causes")
                });
                Refusal::invalid(format!("format: {why}"))
            })?;
        }
        Ok(Prepared {
            id: req.id,
            tokens,
            sampling,
            stop: o.stop.clone().unwrap_or_default(),
            want_context: req.want_context,
            truncated,
            rendered,
        })
    }
}

/// A request checked and tokenized on arrival, waiting for a slot.
pub(super) struct Prepared {
    pub(super) id: u64,
    pub(super) tokens: Vec<i32>,
    pub(super) sampling: SamplingParams,
    pub(super) stop: Vec<String>,
    pub(super) want_context: bool,
    pub(super) truncated: u64,
    /// The rendered prompt, kept only for a `render_only` request.
    pub(super) rendered: Option<String>,
}

/// Why a request could not be prepared: its own fault (`invalid`), or the runner's.
pub(super) struct Refusal {
    pub(super) message: String,
    pub(super) invalid: bool,
}

impl Refusal {
    fn invalid(message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
            invalid: true,
        }
    }
}

/// A fill-in-the-middle prompt from the vocabulary's FIM tokens, prefix first as llama-server's
/// infill builds it: `[BOS] <pre> prefix <suf> suffix <mid>`; the answer is the middle. A prompt
/// over `limit` tokens is cut part by part, never across the markers: the prefix keeps its end
/// and the suffix its start (the text nearest the middle), the suffix at most a quarter when
/// the prefix needs the rest. Returns the tokens and how many were dropped.
pub(super) fn fim_prompt(
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
    let (p_keep, s_keep) = split_budget(p.len(), s.len(), budget);
    s.truncate(s_keep);
    p.drain(..p.len() - p_keep);
    let dropped = total - p.len() - s.len();
    tokens.push(pre);
    tokens.extend(p);
    tokens.push(suf);
    tokens.extend(s);
    tokens.push(mid);
    Ok((tokens, dropped))
}

/// How many tokens of a prefix (`p`) and a suffix (`s`) a fill-in-the-middle prompt keeps
/// within `budget`: all when they fit, else the suffix at most a quarter when the prefix needs
/// the rest (the prefix keeps its end and the suffix its start: the text nearest the middle).
fn split_budget(p: usize, s: usize, budget: usize) -> (usize, usize) {
    if p + s <= budget {
        return (p, s);
    }
    let s_keep = s.min((budget / 4).max(budget.saturating_sub(p)));
    (p.min(budget - s_keep), s_keep)
}

/// A fill-in-the-middle request for a template with `.Suffix`.
struct InfillParts<'a> {
    template: &'a str,
    system: Option<&'a str>,
    prefix: &'a str,
    suffix: &'a str,
}

impl InfillParts<'_> {
    fn render(&self, prefix: &str, suffix: &str) -> Result<String, Refusal> {
        corral_template::render_go_infill(self.template, self.system, prefix, suffix).map_err(|e| {
            Refusal {
                message: e.to_string(),
                invalid: false,
            }
        })
    }

    /// The prompt's tokens (`rendered`: the template rendered with both parts) within
    /// `limit`, cut as `fim_prompt` cuts, part by part, so that the template's own text (the
    /// markers around the parts) stays whole. Returns the tokens and how many were dropped.
    fn fit(
        &self,
        engine: &Engine,
        rendered: &str,
        bos: bool,
        limit: usize,
    ) -> Result<(Vec<i32>, usize), Refusal> {
        let whole = engine.tokenize(rendered, bos);
        if whole.len() <= limit {
            return Ok((whole, 0));
        }
        let frame = engine.tokenize(&self.render("", "")?, bos).len();
        let p = engine.tokenize(self.prefix, false);
        let s = engine.tokenize(self.suffix, false);
        let (p_keep, s_keep) = split_budget(p.len(), s.len(), limit.saturating_sub(frame));
        // A cut inside a character leaves a replacement character at the cut end: drop it.
        let p_text = engine.detokenize(&p[p.len() - p_keep..]);
        let s_text = engine.detokenize(&s[..s_keep]);
        let text = self.render(
            p_text.trim_start_matches('\u{FFFD}'),
            s_text.trim_end_matches('\u{FFFD}'),
        )?;
        let tokens = engine.tokenize(&text, bos);
        Ok((tokens, (p.len() + s.len()).saturating_sub(p_keep + s_keep)))
    }
}

/// Ollama's message for a prompt that does not fit, with the numbers.
pub(super) fn too_long(tokens: Option<usize>, n_ctx: usize) -> String {
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
pub(super) fn format_grammar(format: &serde_json::Value) -> Result<Option<String>, String> {
    let schema = match format {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::String(s) if s.is_empty() => return Ok(None),
        serde_json::Value::String(s) if s == "json" => serde_json::json!({"type": "object"}),
        serde_json::Value::Object(_) => format.clone(),
        other => {
            return Err(format!(
                "invalid format: {other}; expected \"json\" or a JSON schema"
            ))
        }
    };
    schema_grammar(&schema)
        .map(Some)
        .map_err(|e| format!("invalid JSON schema in format: {e}"))
}

/// llama.cpp's grammar for a JSON schema, with the reason in words when it cannot make one
/// (or would make one that does not enforce the schema).
fn schema_grammar(schema: &serde_json::Value) -> Result<String, String> {
    crate::schema::check(schema)?;
    corral_engine::json_schema_grammar(&schema.to_string())
        .map_err(|e| crate::schema::explain(schema).unwrap_or_else(|| e.to_string()))
}

/// A grammar for one forced tool call: `<tool_call>`, a JSON call matching `schema`,
/// `</tool_call>`. llama.cpp's converter names its top rule `root`; it becomes the call body.
pub(super) fn tool_call_grammar(schema: &serde_json::Value) -> Result<String, String> {
    let json =
        schema_grammar(schema).map_err(|e| format!("invalid tool parameters schema: {e}"))?;
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

/// A prompt too long for the context keeps its first `num_keep` tokens and its most recent
/// ones, leaving room to answer (as Ollama truncates), instead of failing the request.
/// Tokens a truncated prompt leaves for the answer: a quarter of the context, or `num_predict`
/// if smaller.
pub(super) fn answer_room(n_ctx: usize, num_predict: Option<i64>) -> usize {
    match num_predict {
        Some(n) if n > 0 => (n as usize).min(n_ctx / 4),
        _ => n_ctx / 4,
    }
    .max(1)
}

pub(super) fn truncate_prompt(
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

pub(super) fn sampling(o: &Options) -> SamplingParams {
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
        grammar_after: None,
        num_keep: o.num_keep.unwrap_or(opt::DEFAULT_NUM_KEEP).max(0) as u32,
        shift: true,
        logprobs: None,
        logit_bias: Vec::new(),
        draft: o
            .draft_num_predict
            .unwrap_or(opt::DEFAULT_DRAFT_NUM_PREDICT)
            .max(0) as u32,
        lookup: o.prompt_lookup_num_tokens.unwrap_or(0).max(0) as u32,
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
