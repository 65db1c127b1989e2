//! A request checked and turned into a runner job: options and the context length, the
//! template, the prompt bounded to the context, format, tools, thinking, insert, log
//! probabilities.

use super::*;

pub(crate) fn options_and_keep_alive(
    st: &AppState,
    model: &Model,
    options: Option<&std::collections::BTreeMap<String, serde_json::Value>>,
    keep_alive: Option<&serde_json::Value>,
) -> ApiResult<(Options, KeepAlive)> {
    let req_opts = match options {
        Some(map) => {
            let (o, unknown) =
                Options::from_map(map).map_err(|e| ApiError::bad_request(e.to_string()))?;
            for name in unknown {
                tracing::warn!(option = %name, "invalid option provided");
            }
            if let Some(name) = corral_api::options::REQUEST_REFUSED
                .iter()
                .find(|n| map.get(**n).is_some_and(|v| !v.is_null()))
            {
                return Err(ApiError::bad_request(format!(
                    "option \"{name}\" can be set only by a Modelfile's PARAMETER or the server's settings, not by a request"
                )));
            }
            o
        }
        None => Options::default(),
    };
    let keep_alive = match keep_alive {
        Some(v) if !v.is_null() => {
            KeepAlive::from_json(v).map_err(|e| ApiError::bad_request(e.to_string()))?
        }
        _ => st.config.keep_alive,
    };
    let mut options = model.params.merged(&req_opts);
    options.num_ctx = Some(context_length(st, model, &options));
    if let Some(gpu) = options.main_gpu {
        // llama.cpp reads its main GPU only when a model is not split by layers, and Corral
        // always splits by layers (as Ollama's llama.cpp runner did): say so, not nothing.
        tracing::warn!(
            model = %model.display_name(),
            main_gpu = gpu,
            "option main_gpu has no effect: layers are spread over the devices by the scheduler"
        );
    }
    Ok((options, keep_alive))
}

/// A model's context length: the options' `num_ctx`, else the server's default
/// (`CORRAL_CONTEXT_LENGTH`), else 4096; never more than the model was trained with.
pub(super) fn context_length(st: &AppState, model: &Model, o: &Options) -> i64 {
    let wanted = o.num_ctx.unwrap_or_else(|| {
        st.config
            .context_length
            .map_or(opt::DEFAULT_NUM_CTX, i64::from)
    });
    let trained = gguf_info(st, model)
        .and_then(|i| i.context_length())
        .filter(|&t| t > 0);
    match trained {
        Some(t) if wanted as u64 > t => {
            tracing::warn!(
                model = %model.display_name(),
                requested = wanted,
                trained = t,
                "context length over the model's training length: using the training length"
            );
            t as i64
        }
        _ => wanted,
    }
}

pub(super) fn prepare_generate(
    st: &AppState,
    req: GenerateRequest,
    started: Instant,
) -> ApiResult<Job> {
    let model = models::load(&st.store, &req.model)?;
    let (options, keep_alive) =
        options_and_keep_alive(st, &model, req.options.as_ref(), req.keep_alive.as_ref())?;
    let unload = req.prompt.is_empty()
        && req.suffix.as_deref().is_none_or(str::is_empty)
        && req.context.as_ref().is_none_or(|c| c.is_empty())
        && keep_alive == KeepAlive::For(std::time::Duration::ZERO);
    if !unload {
        check_writes_text(st, &model, "generate")?;
    }
    check_images(&model, req.images.as_ref().is_some_and(|i| !i.is_empty()))?;
    let template = effective_template(st, &model, req.template.as_deref());
    let think = check_think(&model, &template, req.think.as_ref())?;
    let suffix = req.suffix.clone().filter(|s| !s.is_empty());
    let infill = match &suffix {
        Some(_) if req.raw => {
            return Err(ApiError::bad_request("raw mode does not support suffix"))
        }
        Some(_) => Some(check_insert(st, &model, &template)?),
        None => None,
    };
    let completion = if req.prompt.is_empty()
        && suffix.is_none()
        && req.context.as_ref().is_none_or(|c| c.is_empty())
    {
        None
    } else {
        let prompt = if let (Some(suffix), Some(go)) = (&suffix, infill) {
            Prompt::Infill {
                prefix: req.prompt.clone(),
                suffix: suffix.clone(),
                system: req.system.clone().or_else(|| model.system.clone()),
                template: go,
            }
        } else if req.raw {
            Prompt::Raw {
                text: req.prompt.clone(),
            }
        } else {
            let mut messages = Vec::new();
            if let Some(sys) = req.system.clone().or_else(|| model.system.clone()) {
                messages.push(Message::new("system", sys));
            }
            messages.push(Message::new("user", req.prompt.clone()));
            Prompt::Chat {
                messages,
                template: req.template.clone().or_else(|| model.template.clone()),
                tools: None,
                think: think.on,
                think_level: think.level.clone(),
            }
        };
        Some(CompletionRequest {
            context: req.context.clone().unwrap_or_default(),
            want_context: !req.raw,
            ..runner_job(prompt, &options, &req.answer, req.format.as_ref())?
        })
    };
    Ok(Job {
        kind: Kind::Generate,
        endpoint: "/api/generate",
        model,
        requested: req.model.clone(),
        options,
        keep_alive,
        completion,
        stream: req.stream.unwrap_or(true),
        started,
        think: think.on == Some(true) && !req.raw,
        tools: false,
        single_call: false,
    })
}

pub(super) fn prepare_chat(
    st: &AppState,
    mut req: ChatRequest,
    started: Instant,
) -> ApiResult<Job> {
    let model = models::load(&st.store, &req.model)?;
    // Roles are matched without regard to case, as Ollama does.
    for m in &mut req.messages {
        m.role.make_ascii_lowercase();
    }
    let (options, keep_alive) =
        options_and_keep_alive(st, &model, req.options.as_ref(), req.keep_alive.as_ref())?;
    for m in &req.messages {
        if !["system", "user", "assistant", "tool"].contains(&m.role.as_str()) {
            return Err(ApiError::bad_request(format!(
                "invalid message role '{}': must be one of \"system\", \"user\", \"assistant\" or \"tool\"",
                m.role
            )));
        }
    }
    if !(req.messages.is_empty() && keep_alive == KeepAlive::For(std::time::Duration::ZERO)) {
        check_writes_text(st, &model, "chat")?;
    }
    check_images(
        &model,
        req.messages
            .iter()
            .any(|m| m.images.as_ref().is_some_and(|i| !i.is_empty())),
    )?;
    let template = effective_template(st, &model, None);
    let think = check_think(&model, &template, req.think.as_ref())?;
    // An empty list is what some clients send with every chat: no tools.
    let mut tools = req.tools.clone().filter(|t| !t.is_empty());
    check_tools(tools.as_deref(), &req.messages)?;
    let forced = req
        .tool_choice
        .as_ref()
        .is_some_and(|c| !matches!(c.as_str(), Some("auto" | "none")) && !c.is_null());
    if forced && tools.is_none() {
        return Err(ApiError::bad_request(
            "tool_choice is only allowed when tools are given",
        ));
    }
    if tools.is_some() && !models::supports_tools(&template) {
        return Err(ApiError::bad_request(format!(
            "{} does not support tools",
            model.display_name()
        )));
    }
    let tool_grammar = match (&tools, &req.tool_choice) {
        (Some(t), Some(choice)) => forced_call_schema(t, choice)?,
        _ => None,
    };
    if req.tool_choice.as_ref().and_then(|c| c.as_str()) == Some("none") {
        tools = None;
    }
    // One call at most: the answer ends where the first tagged call closes (a forced call's
    // grammar already ends there). The stop is the runner's alone: answers name only the
    // request's own stop sequences.
    let single_call = tools.is_some() && req.parallel_tool_calls == Some(false);
    let mut runner_options = options.clone();
    if single_call && tool_grammar.is_none() {
        runner_options
            .stop
            .get_or_insert_with(Vec::new)
            .push(crate::output::CALL_CLOSE.to_string());
    }
    let completion = if req.messages.is_empty() {
        None
    } else {
        // As Ollama: the Modelfile's SYSTEM unless the request brings its own, then the
        // Modelfile's MESSAGEs, then the request's messages.
        let mut messages = Vec::new();
        if let Some(sys) = model
            .system
            .clone()
            .filter(|_| !req.messages.iter().any(|m| m.role == "system"))
        {
            messages.push(Message::new("system", sys));
        }
        messages.extend(model.messages.iter().cloned());
        messages.extend(req.messages.iter().cloned());
        Some(CompletionRequest {
            tool_grammar,
            ..runner_job(
                Prompt::Chat {
                    messages,
                    template: model.template.clone(),
                    tools: tools.clone(),
                    think: think.on,
                    think_level: think.level.clone(),
                },
                &runner_options,
                &req.answer,
                req.format.as_ref(),
            )?
        })
    };
    Ok(Job {
        kind: Kind::Chat,
        endpoint: "/api/chat",
        model,
        requested: req.model.clone(),
        options,
        keep_alive,
        completion,
        stream: req.stream.unwrap_or(true),
        started,
        think: think.on == Some(true),
        tools: tools.is_some(),
        single_call,
    })
}

/// The runner job for a prompt: bounded to the context, with the request's answer settings
/// (`truncate`, `shift`, log probabilities) and `format` checked. Callers set what differs
/// (generate's `context`, chat's forced tool call).
fn runner_job(
    prompt: Prompt,
    options: &Options,
    answer: &corral_api::AnswerOptions,
    format: Option<&serde_json::Value>,
) -> ApiResult<CompletionRequest> {
    let truncate = answer.truncate.unwrap_or(true);
    let (prompt, cut_bytes) = bounded(prompt, options, truncate)?;
    Ok(CompletionRequest {
        id: 0,
        prompt,
        context: Vec::new(),
        options: options.clone(),
        want_context: false,
        format: check_format(format)?,
        tool_grammar: None,
        truncate,
        shift: answer.shift.unwrap_or(true),
        cut_bytes,
        logprobs: check_logprobs(answer.logprobs, answer.top_logprobs)?,
        logit_bias: check_logit_bias(answer.logit_bias.as_ref())?,
        count_only: false,
        render_only: answer.debug_render_only,
    })
}

/// Each text of a prompt cut to what could fit the context, before it is sent to the runner: a
/// 30 MB prompt for a 4096-token context is then half a megabyte on its way, not 30 MB copied
/// through every step (the runner truncates the tokens exactly afterwards). Returns the prompt
/// and the bytes cut; with `truncate: false` a text that certainly cannot fit is refused.
pub(super) fn bounded(
    mut prompt: Prompt,
    options: &Options,
    truncate: bool,
) -> ApiResult<(Prompt, u64)> {
    let n_ctx = options.num_ctx_or_default().max(1) as usize;
    let keep = options.num_keep.unwrap_or(opt::DEFAULT_NUM_KEEP).max(0) as usize;
    // How each text is cut: keeping its first `num_keep` tokens and its end, or (a suffix to
    // fill before) keeping its start, the text nearest the middle.
    #[derive(Clone, Copy)]
    enum Keep {
        HeadAndTail(usize),
        Head,
    }
    let texts: Vec<(&mut String, Keep)> = match &mut prompt {
        Prompt::Raw { text } => vec![(text, Keep::HeadAndTail(keep))],
        Prompt::Infill { prefix, suffix, .. } => {
            vec![(prefix, Keep::HeadAndTail(0)), (suffix, Keep::Head)]
        }
        Prompt::Chat { messages, .. } => messages
            .iter_mut()
            .map(|m| (&mut m.content, Keep::HeadAndTail(keep)))
            .collect(),
    };
    let mut cut = 0;
    for (text, how) in texts {
        if !truncate && corral_api::text::certainly_exceeds(text, n_ctx) {
            return Err(ApiError::bad_request(format!(
                "the input length exceeds the context length: far over {n_ctx} tokens ({} bytes), num_ctx {n_ctx}",
                text.len()
            )));
        }
        cut += match how {
            Keep::HeadAndTail(k) => corral_api::text::bound_to_context(text, n_ctx, k),
            Keep::Head => corral_api::text::bound_head(text, n_ctx),
        };
    }
    if cut > 0 {
        tracing::warn!(
            bytes = cut,
            n_ctx,
            "prompt far longer than the context: cut before it is sent to the runner"
        );
    }
    Ok((prompt, cut as u64))
}

/// The template a model's prompts are rendered with: the request's, the Modelfile's, the
/// GGUF's own, or Ollama's default.
pub(super) fn effective_template(st: &AppState, model: &Model, request: Option<&str>) -> String {
    request
        .map(str::to_string)
        .or_else(|| model.template.clone())
        .or_else(|| gguf_info(st, model).and_then(|i| i.chat_template().map(str::to_string)))
        .unwrap_or_else(|| corral_template::DEFAULT_TEMPLATE.to_string())
}

/// How a model fills in the middle: through its Go template when that uses `.Suffix`
/// (`Some(template)`), else from its vocabulary's FIM tokens (`None`); a model with neither
/// answers 400 `<model> does not support insert`, as Ollama's does.
pub(super) fn check_insert(
    st: &AppState,
    model: &Model,
    template: &str,
) -> ApiResult<Option<String>> {
    if models::supports_insert(template) {
        return Ok(Some(template.to_string()));
    }
    if gguf_info(st, model).is_some_and(|i| i.fim_tokens().is_some()) {
        return Ok(None);
    }
    Err(ApiError::bad_request(format!(
        "{} does not support insert",
        model.display_name()
    )))
}

/// An embedding model (BERT's kind) embeds and writes no text: generate and chat are refused
/// in Ollama's words (`"all-minilm" does not support generate`), before anything loads. An
/// empty one with `keep_alive: 0` (`stop`) still unloads it, as Ollama's does.
fn check_writes_text(st: &AppState, model: &Model, what: &str) -> ApiResult<()> {
    match gguf_info(st, model).is_some_and(|i| i.embeds_only()) {
        true => Err(ApiError::bad_request(format!(
            "\"{}\" does not support {what}",
            model.display_name()
        ))),
        false => Ok(()),
    }
}

/// Images (`images` of generate, or of a chat message) are refused rather than dropped: an
/// answer that silently never saw the picture would look like a real one. The message is
/// Ollama's for a model without a vision projector, which clients match on; a model pulled
/// with a projector layer is told apart, since there the model could see but Corral cannot
/// run its projector yet.
pub(super) fn check_images(model: &Model, has_images: bool) -> ApiResult<()> {
    if !has_images {
        return Ok(());
    }
    let name = model.display_name();
    Err(ApiError::bad_request(
        if model.entry.manifest.layer("projector").is_some() {
            format!(
                "this model is missing data required for image input: Corral runs only the text model of '{name}', not its vision projector"
            )
        } else {
            format!(
                "this model is missing data required for image input: '{name}' has no vision projector"
            )
        },
    ))
}

/// Thinking as a request asked for it: on or off (`None`: unset), and the level when one was
/// named.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Think {
    pub on: Option<bool>,
    pub level: Option<String>,
}

/// `think`: `true`/`false`, or a level (`"low"`, `"medium"`, `"high"`, which mean true and
/// reach the template as `.ThinkLevel`). Asking a model whose template cannot think is a 400,
/// as with Ollama. Unset, a model that can think does, as Ollama's handlers decide (its
/// thinking then comes apart from the answer).
pub(super) fn check_think(
    model: &Model,
    template: &str,
    think: Option<&serde_json::Value>,
) -> ApiResult<Think> {
    let (on, level) = match think {
        None | Some(serde_json::Value::Null) if models::supports_thinking(template) => {
            return Ok(Think {
                on: Some(true),
                level: None,
            })
        }
        None | Some(serde_json::Value::Null) => return Ok(Think::default()),
        Some(serde_json::Value::Bool(b)) => (*b, None),
        Some(serde_json::Value::String(s)) if ["low", "medium", "high"].contains(&s.as_str()) => {
            (true, Some(s.clone()))
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
            "invalid think value: {other}; expected true, false, \"low\", \"medium\" or \"high\""
        )))
        }
    };
    if on && !models::supports_thinking(template) {
        return Err(ApiError::bad_request(format!(
            "\"{}\" does not support thinking",
            model.display_name()
        )));
    }
    Ok(Think {
        on: Some(on),
        level,
    })
}

/// Tools must each be a function with a name (and, when given, an object of parameters), and
/// the calls in earlier assistant messages a function with a name: a malformed one would
/// render into the prompt as nonsense, or fail inside the template.
fn check_tools(tools: Option<&[serde_json::Value]>, messages: &[Message]) -> ApiResult<()> {
    for (i, t) in tools.unwrap_or_default().iter().enumerate() {
        let f = &t["function"];
        let problem = if !t.is_object() {
            Some("is not an object".to_string())
        } else if t.get("type").is_some_and(|ty| ty != "function") {
            Some(format!(
                "has type {}; only \"function\" tools are supported",
                t["type"]
            ))
        } else if f["name"].as_str().is_none_or(str::is_empty) {
            Some("has no function name".to_string())
        } else if f
            .get("parameters")
            .is_some_and(|p| !p.is_object() && !p.is_null())
        {
            Some("has parameters that are not a JSON schema object".to_string())
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(ApiError::bad_request(format!("tools[{i}] {p}")));
        }
    }
    for (i, m) in messages.iter().enumerate() {
        for (j, c) in m.tool_calls.iter().flatten().enumerate() {
            if c["function"]["name"].as_str().is_none_or(str::is_empty) {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].tool_calls[{j}] has no function name"
                )));
            }
        }
    }
    Ok(())
}

/// For `tool_choice` `"required"` or a named function: the JSON schema of a call to one of the
/// allowed tools, which the runner enforces with a grammar. `"auto"`/`"none"`: nothing forced.
pub(super) fn forced_call_schema(
    tools: &[serde_json::Value],
    choice: &serde_json::Value,
) -> ApiResult<Option<serde_json::Value>> {
    let wanted: Option<&str> = match choice {
        serde_json::Value::String(s) if s == "auto" || s == "none" => return Ok(None),
        serde_json::Value::String(s) if s == "required" => None,
        serde_json::Value::Object(_) => Some(choice["function"]["name"].as_str().ok_or_else(|| {
            ApiError::bad_request("tool_choice must name a function: {\"type\": \"function\", \"function\": {\"name\": ...}}")
        })?),
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid tool_choice: {other}; expected \"auto\", \"none\", \"required\" or a function"
            )))
        }
    };
    let mut defs = serde_json::Map::new();
    let options: Vec<serde_json::Value> = tools
        .iter()
        .enumerate()
        .filter_map(|(k, t)| {
            let f = &t["function"];
            let name = f["name"].as_str()?;
            if wanted.is_some_and(|w| w != name) {
                return None;
            }
            let params = match &f["parameters"] {
                p @ serde_json::Value::Object(_) => hoist_defs(p.clone(), k, &mut defs),
                _ => serde_json::json!({"type": "object"}),
            };
            Some(serde_json::json!({
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": params},
                "required": ["name", "arguments"],
            }))
        })
        .collect();
    if options.is_empty() {
        return Err(ApiError::bad_request(format!(
            "tool_choice names a function that is not among the tools: {}",
            wanted.unwrap_or_default()
        )));
    }
    let mut schema = serde_json::json!({ "anyOf": options });
    if !defs.is_empty() {
        schema["$defs"] = serde_json::Value::Object(defs);
    }
    Ok(Some(schema))
}

/// A tool's parameters nest inside the schema of a call, where their `$ref`s
/// (`#/$defs/Address`, as Pydantic writes nested models) would point into the wrong document:
/// their definitions move to the call schema's top under names of their own (`t0_Address` for
/// tool 0), and the references follow.
fn hoist_defs(
    mut params: serde_json::Value,
    tool: usize,
    defs: &mut serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    fn retarget(v: &mut serde_json::Value, tool: usize) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(r)) = m.get_mut("$ref") {
                    let name = r
                        .strip_prefix("#/$defs/")
                        .or_else(|| r.strip_prefix("#/definitions/"));
                    if let Some(name) = name {
                        *r = format!("#/$defs/t{tool}_{name}");
                    }
                }
                m.values_mut().for_each(|x| retarget(x, tool));
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| retarget(x, tool)),
            _ => {}
        }
    }
    if let Some(obj) = params.as_object_mut() {
        for key in ["$defs", "definitions"] {
            if let Some(serde_json::Value::Object(own)) = obj.remove(key) {
                for (name, mut def) in own {
                    retarget(&mut def, tool);
                    defs.insert(format!("t{tool}_{name}"), def);
                }
            }
        }
    }
    retarget(&mut params, tool);
    params
}

/// `logprobs` and `top_logprobs` (0 to 20, as Ollama): how many alternatives to report with
/// each token, or `None` for no log probabilities. `top_logprobs` alone asks for them too.
pub(super) fn check_logprobs(logprobs: Option<bool>, top: Option<i64>) -> ApiResult<Option<u32>> {
    let top = top.unwrap_or(0);
    if !(0..=20).contains(&top) {
        return Err(ApiError::bad_request(
            "top_logprobs must be between 0 and 20",
        ));
    }
    Ok((logprobs == Some(true) || top > 0).then_some(top as u32))
}

/// `logit_bias` (OpenAI's form: token ids as strings of digits, each mapped to a number from
/// -100 to 100) as the runner takes it: sorted by token, each once (two keys for one token,
/// `"7"` and `"07"`, are refused). Whether each id is in the model's vocabulary only the
/// runner knows.
pub(super) fn check_logit_bias(v: Option<&serde_json::Value>) -> ApiResult<Vec<(i32, f32)>> {
    let bad = |m: String| Err(ApiError::bad_request(format!("logit_bias: {m}")));
    let map = match v {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Object(m)) => m,
        Some(other) => {
            return bad(format!(
                "expected an object of token ids and biases, got {}",
                crate::json::shown(&other.to_string(), 60)
            ))
        }
    };
    let mut out: std::collections::BTreeMap<i32, (f32, &str)> = Default::default();
    for (key, value) in map {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
            return bad(format!(
                "{:?} is not a token id (a whole number, 0 or more)",
                crate::json::shown(key, 60)
            ));
        }
        let Ok(id) = key.parse::<i32>() else {
            return bad(format!(
                "token {} is out of range",
                crate::json::shown(key, 60)
            ));
        };
        match value.as_f64() {
            Some(b) if (-100.0..=100.0).contains(&b) => {
                if let Some((_, other)) = out.insert(id, (b as f32, key)) {
                    return bad(format!("{other:?} and {key:?} both name token {id}"));
                }
            }
            _ => {
                return bad(format!(
                    "the bias of token {id} must be a number from -100 to 100, got {}",
                    crate::json::shown(&value.to_string(), 60)
                ))
            }
        }
    }
    Ok(out.into_iter().map(|(id, (b, _))| (id, b)).collect())
}

/// `format` must be `"json"` or a JSON schema (an object); empty means none.
pub(super) fn check_format(
    format: Option<&serde_json::Value>,
) -> ApiResult<Option<serde_json::Value>> {
    match format {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) if s == "json" => Ok(Some(serde_json::json!("json"))),
        Some(v @ serde_json::Value::Object(_)) => Ok(Some(v.clone())),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid format: {other}; expected \"json\" or a JSON schema"
        ))),
    }
}
