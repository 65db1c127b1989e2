//! Turns a conversation into the prompt text a model expects.
//!
//! Two template languages, as Ollama has them:
//! - a Modelfile `TEMPLATE` is Go `text/template` syntax (`{{ .System }}`, `{{ .Prompt }}`,
//!   `{{ range .Messages }}`), rendered with `gotmpl`, a port of Go's `text/template`, with
//!   the data and functions Ollama gives its templates (see `go`);
//! - otherwise the GGUF's `tokenizer.chat_template` is Jinja, rendered with minijinja and its
//!   Python-compatible methods (`.strip()`, `.startswith()`, ...), as Hugging Face renders it.
//!
//! A model with neither gets Ollama's default template, `{{ .Prompt }}`.

use corral_api::Message;
use serde_json::Value;

mod go;
mod go_guard;
#[cfg(test)]
mod go_tests;
mod ollama_types;

use go::Think;

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

impl ChatTemplate {
    /// Parse a Go template (a Modelfile `TEMPLATE`); errors read `template error: ...`.
    pub fn go(source: &str) -> Result<Self, TemplateError> {
        go::parse(source)?;
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
                let messages = go::collate(input.messages);
                if *uses_messages {
                    go::render_messages(source, &messages, input.tools, think)
                } else {
                    go::render_pairs(source, &messages, input.tools, think)
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

/// Fill-in-the-middle with a Go template that uses `.Suffix` (generate with `suffix`): the
/// template gets `.System`, `.Prompt` and `.Suffix`, as Ollama renders it.
pub fn render_go_infill(
    source: &str,
    system: Option<&str>,
    prompt: &str,
    suffix: &str,
) -> Result<String, TemplateError> {
    go::render_infill(source, system, prompt, suffix)
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
    /// would run until the engine's depth limit, or fan out past any end), actions nested
    /// past the limit. A printf width that used to crash the engine renders, clamped.
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
        // Rendered once per turn (the template has no `.Messages`), each within 65,535 columns.
        let got = wide.render(&input).unwrap();
        assert!(got.ends_with(" 1Capital of France?") && got.len() < 2 * 70_000);
        let deep = "{{ if 1 }}".repeat(500) + &"{{ end }}".repeat(500);
        assert_eq!(
            ChatTemplate::go(&deep).err().unwrap().to_string(),
            "template error: template nesting depth exceeded 100"
        );
        let parens = format!("{{{{ {}1{} }}}}", "(".repeat(101), ")".repeat(101));
        assert!(ChatTemplate::go(&parens).is_err());
        // Comments and sibling blocks do not count.
        let siblings = "{{/* ((((( */}}".to_string() + &"{{ if 1 }}x{{ end }}".repeat(500);
        assert!(ChatTemplate::go(&siblings).is_ok());
        // A template is named by a string, so what it calls is known before it runs.
        let e = ChatTemplate::go("{{ template .Name }}").err().unwrap();
        assert_eq!(
            e.to_string(),
            "template error: line 1: template expects a string name"
        );
        // Loops have a budget, so a template cannot keep its runner busy.
        let busy = ChatTemplate::go(
            "{{ range 1000 }}{{ range 1000 }}{{ range 1000 }}{{ end }}{{ end }}{{ end }}",
        )
        .unwrap();
        assert_eq!(
            busy.render(&input).unwrap_err().to_string(),
            "template error: range iteration budget exhausted"
        );
        // Execution errors say what went wrong without printing the whole data.
        let field = ChatTemplate::go("{{ .Foo }}{{ .Messages }}").unwrap();
        assert_eq!(
            field.render(&input).unwrap_err().to_string(),
            "template error: map has no entry for key: Foo"
        );
        let long_message = [Message::new("user", "x".repeat(1000))];
        let e = ChatTemplate::go("{{ printf .Messages }}")
            .unwrap()
            .render(&RenderInput {
                messages: &long_message,
                ..input
            })
            .unwrap_err()
            .to_string();
        assert!(e.len() < 340 && e.ends_with("..."), "{e}");
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
            "{{ end }}{{ .Prompt }}",
            "{{ else }}",
            "{{ \"a }}",
        ] {
            let e = ChatTemplate::go(bad).err().unwrap().to_string();
            assert!(e.starts_with("template error: "), "{bad}: {e}");
        }
        let e = ChatTemplate::go("x\n{{ .Prompt ")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(e, "template error: line 2: unclosed action");
        let e = ChatTemplate::go("{{ if 1 }}x").err().unwrap().to_string();
        assert_eq!(e, "template error: line 1: unexpected EOF");
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
        // As Go's `json.Marshal` writes Ollama's `ToolFunction`: fields in declaration order.
        let json_fn = r#"{"name":"get_weather","description":"Weather","parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string"}}}}"#;
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
