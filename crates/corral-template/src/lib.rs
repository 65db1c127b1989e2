//! Turns a conversation into the prompt text a model expects.
//!
//! Two template languages, as Ollama has them:
//! - a Modelfile `TEMPLATE` is Go `text/template` syntax (`{{ .System }}`, `{{ .Prompt }}`,
//!   `{{ range .Messages }}`), rendered with `gtmpl`;
//! - otherwise the GGUF's `tokenizer.chat_template` is Jinja, rendered with minijinja and its
//!   Python-compatible methods (`.strip()`, `.startswith()`, ...), as Hugging Face renders it.
//!
//! A model with neither gets Ollama's default template, `{{ .Prompt }}`.

use std::collections::HashMap;

use corral_api::Message;
use gtmpl::{FuncError, Value as GoValue};

mod go_guard;
use serde_json::Value;

/// Ollama's template for models that bring none.
pub const DEFAULT_TEMPLATE: &str = "{{ .Prompt }}";

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template error: {0}")]
    Parse(String),
    #[error("template error: {0}")]
    Render(String),
}

/// A parsed template, ready to render.
pub enum ChatTemplate {
    /// Go text/template from a Modelfile.
    Go { source: String, uses_messages: bool },
    /// Jinja from the GGUF.
    Jinja {
        env: minijinja::Environment<'static>,
    },
}

/// Tokens some Jinja templates print themselves.
#[derive(Debug, Clone, Default)]
pub struct SpecialTokens {
    pub bos: String,
    pub eos: String,
}

/// What to render.
#[derive(Debug, Clone, Default)]
pub struct RenderInput<'a> {
    pub messages: &'a [Message],
    /// Add the opening of the assistant's turn (always, for a completion).
    pub add_generation_prompt: bool,
    pub tools: Option<&'a [Value]>,
    /// Thinking on or off (`.Think` in Go templates, `enable_thinking` in Jinja); `None`: unset.
    pub think: Option<bool>,
    /// How hard to think, when a level was asked for (`"low"`, `"medium"`, `"high"`):
    /// `.ThinkLevel` in Go templates (as Ollama's, `"medium"` for thinking on without a
    /// level), `reasoning_effort` in Jinja (gpt-oss's; undefined without a level).
    pub think_level: Option<&'a str>,
}

/// Thinking as the request set it, for Go templates.
#[derive(Debug, Clone, Copy, Default)]
struct Think<'a> {
    on: Option<bool>,
    level: Option<&'a str>,
}

impl ChatTemplate {
    /// Parse a Go template (a Modelfile `TEMPLATE`); errors read `template error: ...`.
    pub fn go(source: &str) -> Result<Self, TemplateError> {
        parse_go(source)?;
        Ok(ChatTemplate::Go {
            source: source.to_string(),
            uses_messages: source.contains(".Messages"),
        })
    }

    /// Parse a Jinja chat template (a GGUF `tokenizer.chat_template`).
    pub fn jinja(source: &str, tokens: SpecialTokens) -> Result<Self, TemplateError> {
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_function("strftime_now", |fmt: String| {
            chrono::Local::now().format(&fmt).to_string()
        });
        env.add_global("bos_token", tokens.bos);
        env.add_global("eos_token", tokens.eos);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| TemplateError::Parse(e.to_string()))?;
        Ok(ChatTemplate::Jinja { env })
    }

    /// Render a conversation.
    pub fn render(&self, input: &RenderInput<'_>) -> Result<String, TemplateError> {
        match self {
            ChatTemplate::Jinja { env } => {
                let tmpl = env
                    .get_template("chat")
                    .map_err(|e| TemplateError::Render(e.to_string()))?;
                let messages: Vec<Value> = input.messages.iter().map(jinja_message).collect();
                let ctx = minijinja::context! {
                    messages => messages,
                    add_generation_prompt => input.add_generation_prompt,
                    tools => input.tools.map(|t| t.to_vec()),
                    enable_thinking => input.think,
                    // Undefined when unset: gpt-oss's template then sets its own default.
                    reasoning_effort => input
                        .think_level
                        .map_or(minijinja::Value::UNDEFINED, minijinja::Value::from),
                };
                tmpl.render(ctx)
                    .map_err(|e| TemplateError::Render(format!("{e:#}")))
            }
            ChatTemplate::Go {
                source,
                uses_messages,
            } => {
                let think = Think {
                    on: input.think,
                    level: input.think_level,
                };
                if *uses_messages {
                    render_go(
                        source,
                        &go_data(input.messages, None, "", input.tools, think),
                    )
                } else {
                    render_go_pairs(source, input.messages, input.tools, think)
                }
            }
        }
    }
}

fn jinja_message(m: &Message) -> Value {
    let mut v = serde_json::json!({ "role": m.role, "content": m.content });
    if let Some(calls) = &m.tool_calls {
        v["tool_calls"] = Value::from(calls.clone());
    }
    if let Some(name) = &m.tool_name {
        v["name"] = Value::from(name.clone());
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = Value::from(id.clone());
    }
    if let Some(t) = &m.thinking {
        // What Hugging Face templates call the thinking of an earlier assistant turn.
        v["reasoning_content"] = Value::from(t.clone());
    }
    v
}

/// gtmpl's lexer never returns when the text ends inside an action that ends in whitespace
/// (`{{ .Prompt `), which would let one Modelfile hang its caller; such text is refused here.
fn check_unclosed_action(source: &str) -> Result<(), TemplateError> {
    if let Some(open) = source.rfind("{{") {
        if !source[open..].contains("}}") {
            let line = source[..open].matches('\n').count() + 1;
            return Err(TemplateError::Parse(format!(
                "line {line}: unclosed action"
            )));
        }
    }
    Ok(())
}

fn new_go_template() -> gtmpl::Template {
    let mut t = gtmpl::Template::default();
    t.add_func("json", go_json);
    t.add_func("currentDate", go_current_date);
    t
}

/// Parse a Go template, with the checks that keep it from taking its renderer down (see
/// `go_guard`).
fn parse_go(source: &str) -> Result<gtmpl::Template, TemplateError> {
    check_unclosed_action(source)?;
    go_guard::check_shape(source)?;
    let t = go_guard::no_panic(
        || {
            let mut t = new_go_template();
            t.parse(source)
                .map_err(|e| TemplateError::Parse(e.to_string()))?;
            Ok(t)
        },
        TemplateError::Parse,
    )?;
    let bodies = t
        .tree_set
        .iter()
        .map(|(name, tree)| {
            let body = tree
                .root
                .as_ref()
                .map(|r| r.to_string())
                .unwrap_or_default();
            (name.clone(), body)
        })
        .collect();
    go_guard::check_recursion(&bodies)?;
    Ok(t)
}

fn render_go(source: &str, data: &GoValue) -> Result<String, TemplateError> {
    let t = parse_go(source)?;
    go_guard::no_panic(
        || {
            t.render(&gtmpl::Context::from(data.clone()))
                .map_err(|e| TemplateError::Render(short_error(&e.to_string())))
        },
        TemplateError::Render,
    )
}

/// gtmpl's execution errors print the whole data map (`no field Foo for {"Messages": ...}`):
/// the part before it says what went wrong.
fn short_error(message: &str) -> String {
    match message.find(" for {") {
        Some(i) => message[..i].to_string(),
        None if message.len() > 300 => {
            let mut end = 300;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}...", &message[..end])
        }
        None => message.to_string(),
    }
}

/// Fill-in-the-middle with a Go template that uses `.Suffix` (generate with `suffix`): the
/// template gets `.System`, `.Prompt` and `.Suffix`, as Ollama renders it.
pub fn render_go_infill(
    source: &str,
    system: Option<&str>,
    prompt: &str,
    suffix: &str,
) -> Result<String, TemplateError> {
    check_unclosed_action(source)?;
    let mut data = go_data(
        &[],
        Some((system.map(str::to_string), prompt.to_string())),
        "",
        None,
        Think::default(),
    );
    if let GoValue::Object(o) = &mut data {
        o.insert("Suffix".to_string(), GoValue::from(suffix.to_string()));
    }
    render_go(source, &data)
}

/// Templates that know only `.System`, `.Prompt` and `.Response` are rendered once per
/// user turn and concatenated, as Ollama does; the last turn gets an empty `.Response`.
fn render_go_pairs(
    source: &str,
    messages: &[Message],
    tools: Option<&[Value]>,
    think: Think<'_>,
) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut system: Option<String> = None;
    let mut prompt: Option<String> = None;
    for m in messages {
        match m.role.as_str() {
            "system" => system = Some(m.content.clone()),
            "user" => {
                if let Some(p) = prompt.take() {
                    out += &render_go(
                        source,
                        &go_data(&[], Some((system.take(), p)), "", tools, think),
                    )?;
                }
                prompt = Some(m.content.clone());
            }
            "assistant" => {
                let p = prompt.take().unwrap_or_default();
                out += &render_go(
                    source,
                    &go_data(&[], Some((system.take(), p)), &m.content, tools, think),
                )?;
            }
            _ => {}
        }
    }
    if prompt.is_some() || system.is_some() || out.is_empty() {
        out += &render_go(
            source,
            &go_data(
                &[],
                Some((system, prompt.unwrap_or_default())),
                "",
                tools,
                think,
            ),
        )?;
    }
    Ok(out)
}

fn go_data(
    messages: &[Message],
    pair: Option<(Option<String>, String)>,
    response: &str,
    tools: Option<&[Value]>,
    think: Think<'_>,
) -> GoValue {
    let (system, prompt) = match pair {
        Some((s, p)) => (s.unwrap_or_default(), p),
        None => {
            let system = messages
                .iter()
                .filter(|m| m.role == "system")
                .map(|m| m.content.as_str());
            let system: Vec<&str> = system.collect();
            let prompt = messages
                .iter()
                .rev()
                .find(|m| m.role == "user")
                .map(|m| m.content.clone());
            (system.join("\n\n"), prompt.unwrap_or_default())
        }
    };
    let msgs: Vec<GoValue> = messages
        .iter()
        .map(|m| {
            let mut o = HashMap::new();
            o.insert("Role".to_string(), GoValue::from(m.role.clone()));
            o.insert("Content".to_string(), GoValue::from(m.content.clone()));
            o.insert(
                "ToolCalls".to_string(),
                // An empty list, not nil: gtmpl cannot `range` over nil as Go can.
                m.tool_calls
                    .as_ref()
                    .map_or(GoValue::Array(Vec::new()), |c| {
                        go_struct(&Value::from(c.clone()))
                    }),
            );
            o.insert(
                "ToolName".to_string(),
                GoValue::from(m.tool_name.clone().unwrap_or_default()),
            );
            o.insert(
                "Thinking".to_string(),
                GoValue::from(m.thinking.clone().unwrap_or_default()),
            );
            GoValue::Object(o)
        })
        .collect();
    let mut o = HashMap::new();
    o.insert("System".to_string(), GoValue::from(system));
    o.insert("Prompt".to_string(), GoValue::from(prompt));
    o.insert("Response".to_string(), GoValue::from(response.to_string()));
    o.insert("Messages".to_string(), GoValue::Array(msgs));
    o.insert(
        "Think".to_string(),
        GoValue::Bool(think.on.unwrap_or(false)),
    );
    o.insert("IsThinkSet".to_string(), GoValue::Bool(think.on.is_some()));
    // As Ollama's: `true` alone reads as "medium".
    let level = match (think.level, think.on) {
        (Some(level), _) => level,
        (None, Some(true)) => "medium",
        (None, _) => "",
    };
    o.insert("ThinkLevel".to_string(), GoValue::from(level.to_string()));
    o.insert(
        "Tools".to_string(),
        tools
            .filter(|t| !t.is_empty())
            .map_or(GoValue::Array(Vec::new()), |t| {
                go_struct(&Value::from(t.to_vec()))
            }),
    );
    GoValue::Object(o)
}

/// Tools and tool calls as Ollama's Go structs present them to templates: fields with capital
/// initials (`.Function.Name`, `.Function.Parameters.Properties`), while user data (the keys of
/// `properties`, the `arguments` object) keeps its own keys. `json` prints them back with
/// lower-case field names, as Go's JSON tags do.
fn go_struct(v: &Value) -> GoValue {
    match v {
        Value::Array(a) => GoValue::Array(a.iter().map(go_struct).collect()),
        Value::Object(o) => GoValue::Object(
            o.iter()
                .map(|(k, v)| {
                    let value = match k.as_str() {
                        "properties" => match v {
                            Value::Object(p) => GoValue::Map(
                                p.iter()
                                    .map(|(name, s)| (name.clone(), go_struct(s)))
                                    .collect(),
                            ),
                            other => json_to_go(other),
                        },
                        "arguments" => json_to_go(v),
                        _ => go_struct(v),
                    };
                    (capitalize(k), value)
                })
                .collect(),
        ),
        other => json_to_go(other),
    }
}

fn capitalize(k: &str) -> String {
    let mut c = k.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn decapitalize(k: &str) -> String {
    let mut c = k.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
}

fn json_to_go(v: &Value) -> GoValue {
    match v {
        Value::Null => GoValue::Nil,
        Value::Bool(b) => GoValue::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map_or_else(|| GoValue::from(n.as_f64().unwrap_or(0.0)), GoValue::from),
        Value::String(s) => GoValue::from(s.clone()),
        Value::Array(a) => GoValue::Array(a.iter().map(json_to_go).collect()),
        Value::Object(o) => {
            GoValue::Map(o.iter().map(|(k, v)| (k.clone(), json_to_go(v))).collect())
        }
    }
}

fn go_to_json(v: &GoValue) -> Value {
    match v {
        GoValue::NoValue | GoValue::Nil | GoValue::Function(_) => Value::Null,
        GoValue::Bool(b) => Value::Bool(*b),
        GoValue::String(s) => Value::String(s.clone()),
        GoValue::Number(n) => n
            .as_i64()
            .map(Value::from)
            .or_else(|| n.as_f64().map(Value::from))
            .unwrap_or(Value::Null),
        GoValue::Array(a) => Value::Array(a.iter().map(go_to_json).collect()),
        GoValue::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (decapitalize(k), go_to_json(v)))
                .collect(),
        ),
        GoValue::Map(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), go_to_json(v))).collect())
        }
    }
}

fn go_json(args: &[GoValue]) -> Result<GoValue, FuncError> {
    let v = args
        .first()
        .ok_or(FuncError::AtLeastXArgs("json".into(), 1))?;
    Ok(GoValue::from(go_to_json(v).to_string()))
}

fn go_current_date(_args: &[GoValue]) -> Result<GoValue, FuncError> {
    Ok(GoValue::from(
        chrono::Local::now().format("%Y-%m-%d").to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOL: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn conv() -> Vec<Message> {
        vec![
            Message::new("system", "Answer in one short sentence."),
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello!"),
            Message::new("user", "Capital of France?"),
        ]
    }

    /// Templates that would take their renderer down are errors: one that calls itself (it
    /// would overflow the stack), a printf width gtmpl panics on, actions nested past the limit.
    #[test]
    fn templates_that_would_crash_the_renderer_are_errors() {
        let recursive = "{{ define \"a\" }}{{ template \"a\" }}{{ end }}{{ template \"a\" }}";
        let e = ChatTemplate::go(recursive).err().unwrap().to_string();
        assert_eq!(
            e,
            "template error: template \"a\" calls itself: recursive templates are not supported"
        );
        let input = RenderInput {
            messages: &conv(),
            add_generation_prompt: true,
            tools: None,
            think: None,
            think_level: None,
        };
        let wide = ChatTemplate::go("{{ printf \"%70000d\" 1 }}{{ .Prompt }}").unwrap();
        assert_eq!(
            wide.render(&input).unwrap_err().to_string(),
            "template error: Formatting argument out of range"
        );
        let deep = "{{ if 1 }}".repeat(500) + &"{{ end }}".repeat(500);
        assert!(ChatTemplate::go(&deep).is_err());
        // Execution errors say what went wrong without printing the whole data.
        let field = ChatTemplate::go("{{ .Foo }}{{ .Messages }}").unwrap();
        assert_eq!(
            field.render(&input).unwrap_err().to_string(),
            "template error: no field Foo"
        );
    }

    fn input(m: &[Message]) -> RenderInput<'_> {
        RenderInput {
            messages: m,
            add_generation_prompt: true,
            tools: None,
            think: None,
            think_level: None,
        }
    }

    #[test]
    fn jinja_renders_the_smollm2_template() {
        let t = ChatTemplate::jinja(SMOL, SpecialTokens::default()).unwrap();
        let got = t.render(&input(&conv())).unwrap();
        assert_eq!(
            got,
            "<|im_start|>system\nAnswer in one short sentence.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        // Without a system message the template adds its own default one.
        let got = t.render(&input(&[Message::new("user", "Hi")])).unwrap();
        assert!(got.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"));
    }

    #[test]
    fn go_template_with_messages() {
        let src = "{{- range .Messages }}<|{{ .Role }}|>{{ .Content }}\n{{ end }}<|assistant|>";
        let got = ChatTemplate::go(src)
            .unwrap()
            .render(&input(&conv()))
            .unwrap();
        assert_eq!(
            got,
            "<|system|>Answer in one short sentence.\n<|user|>Hi\n<|assistant|>Hello!\n<|user|>Capital of France?\n<|assistant|>"
        );
    }

    #[test]
    fn go_template_with_prompt_pairs() {
        let src = "{{ if .System }}S:{{ .System }} {{ end }}U:{{ .Prompt }} A:{{ .Response }}";
        let got = ChatTemplate::go(src)
            .unwrap()
            .render(&input(&conv()))
            .unwrap();
        assert_eq!(
            got,
            "S:Answer in one short sentence. U:Hi A:HelloU:Capital of France? A:"
                .replace("Hello", "Hello!")
        );
        let got = ChatTemplate::go(DEFAULT_TEMPLATE)
            .unwrap()
            .render(&input(&[Message::new("user", "Why?")]))
            .unwrap();
        assert_eq!(got, "Why?");
    }

    #[test]
    fn a_go_template_and_the_gguf_jinja_template_agree() {
        // SmolLM2's ChatML written as an Ollama Go template.
        let go = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n";
        let jinja = ChatTemplate::jinja(SMOL, SpecialTokens::default())
            .unwrap()
            .render(&input(&conv()))
            .unwrap();
        let go = ChatTemplate::go(go)
            .unwrap()
            .render(&input(&conv()))
            .unwrap();
        assert_eq!(go, jinja);
    }

    #[test]
    fn go_template_functions_and_empty_fields() {
        let t = ChatTemplate::go(
            "{{ if .Tools }}tools{{ else }}none{{ end }} {{ json .System }} {{ currentDate }}",
        )
        .unwrap();
        let got = t
            .render(&input(&[
                Message::new("system", "a \"b\""),
                Message::new("user", "x"),
            ]))
            .unwrap();
        let today = chrono::Local::now().format("%Y-%m-%d").to_string();
        assert_eq!(got, format!("none \"a \\\"b\\\"\" {today}"));
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "{{ .Prompt ",
            "{{ range .Messages }}{{ .x ",
            "{{ if .System }}",
            "{{ end }}",
            "{{ \"a }}",
        ] {
            let e = ChatTemplate::go(bad).err().unwrap().to_string();
            assert!(e.starts_with("template error: "), "{bad}: {e}");
        }
        let e = ChatTemplate::jinja("{% for %}", SpecialTokens::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("template error: "), "{e}");
    }
}

#[cfg(test)]
mod tool_tests {
    use super::*;

    /// A conversation with a tool, a call to it and its result, rendered by `t`.
    fn render_weather_conversation(t: &ChatTemplate) -> String {
        let tools = vec![serde_json::json!({"type": "function", "function": {
            "name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}}})];
        let mut call = Message::new("assistant", "");
        call.tool_calls = Some(vec![serde_json::json!(
            {"id": "c1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
        )]);
        let mut result = Message::new("tool", "18C");
        result.tool_name = Some("get_weather".into());
        result.tool_call_id = Some("c1".into());
        let msgs = vec![Message::new("user", "hi"), call, result];
        t.render(&RenderInput {
            messages: &msgs,
            add_generation_prompt: true,
            tools: Some(&tools),
            think: Some(true),
            think_level: None,
        })
        .unwrap()
    }

    #[test]
    fn go_templates_see_tools_and_calls_as_ollama_structs() {
        let t = ChatTemplate::go(
            "{{ range .Tools }}[{{ .Function.Name }}:{{ range .Function.Parameters.Required }}{{ . }}{{ end }}:{{ json .Function }}]{{ end }}\
             {{ range .Messages }}{{ .Role }}={{ .Content }}{{ range .ToolCalls }}<{{ .Function.Name }} {{ json .Function.Arguments }}>{{ end }}{{ if .ToolName }}({{ .ToolName }}){{ end }};{{ end }}\
             {{ if .Think }}think{{ end }}{{ if .IsThinkSet }}set{{ end }}",
        )
        .unwrap();
        let json_fn = r#"{"description":"Weather","name":"get_weather","parameters":{"properties":{"city":{"type":"string"}},"required":["city"],"type":"object"}}"#;
        assert_eq!(
            render_weather_conversation(&t),
            format!("[get_weather:city:{json_fn}]user=hi;assistant=<get_weather {{\"city\":\"Paris\"}}>;tool=18C(get_weather);thinkset")
        );
    }

    #[test]
    fn jinja_templates_see_tools_calls_and_results() {
        let t = ChatTemplate::jinja(
            "{% if tools %}{% for t in tools %}[{{ t.function.name }}]{% endfor %}{% endif %}\
             {% for m in messages %}{{ m.role }}:{{ m.content }}\
             {% if m.tool_calls %}{% for c in m.tool_calls %}<{{ c.function.name }} {{ c.function.arguments | tojson }}>{% endfor %}{% endif %}\
             {% if m.tool_call_id %}#{{ m.tool_call_id }}({{ m.name }}){% endif %};{% endfor %}\
             {% if enable_thinking %}think{% endif %}",
            SpecialTokens::default(),
        )
        .unwrap();
        assert_eq!(
            render_weather_conversation(&t),
            r#"[get_weather]user:hi;assistant:<get_weather {"city":"Paris"}>;tool:18C#c1(get_weather);think"#
        );
    }

    #[test]
    fn a_thinking_level_reaches_both_kinds_of_template() {
        let msgs = [Message::new("user", "hi")];
        let render = |t: &ChatTemplate, level| {
            t.render(&RenderInput {
                messages: &msgs,
                add_generation_prompt: true,
                tools: None,
                think: Some(true),
                think_level: level,
            })
            .unwrap()
        };
        let go = ChatTemplate::go(
            "{{ if .IsThinkSet }}{{ if .ThinkLevel }}Reasoning: {{ .ThinkLevel }}{{ else }}on{{ end }}{{ end }}",
        )
        .unwrap();
        assert_eq!(render(&go, Some("high")), "Reasoning: high");
        // `true` alone is "medium", as Ollama's ThinkValue reads.
        assert_eq!(render(&go, None), "Reasoning: medium");
        let jinja = ChatTemplate::jinja(
            "{% if reasoning_effort is not defined %}{% set reasoning_effort = 'medium' %}{% endif %}Reasoning: {{ reasoning_effort }}",
            SpecialTokens::default(),
        )
        .unwrap();
        assert_eq!(render(&jinja, Some("low")), "Reasoning: low");
        assert_eq!(render(&jinja, None), "Reasoning: medium");
    }
}
