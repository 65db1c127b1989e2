//! Go templates (a Modelfile `TEMPLATE`, or one a request brings), rendered with `gotmpl`, a
//! port of Go's `text/template`, with the data and functions Ollama gives its templates.

use std::collections::BTreeMap;

use corral_api::Message;
use gotmpl::{MissingKey, Value as GoValue};
use serde_json::Value;

use crate::ollama_types::{tool_call_value, tools_value, typescript_type, value_json};
use crate::{go_guard, TemplateError};

/// `{{ range }}` iterations one rendering may run, all loops together: far above what a
/// conversation needs (its messages, tools and their properties), low enough that a template
/// cannot keep a runner busy for long (gotmpl's own default is 10,000,000).
const MAX_RANGE_ITERS: u64 = 1_000_000;

/// Thinking as the request set it, for Go templates.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Think<'a> {
    pub(crate) on: Option<bool>,
    pub(crate) level: Option<&'a str>,
}

/// A template with Ollama's functions: `json`, `currentDate`, `yesterdayDate`,
/// `toTypeScriptType` (its `template/template.go`). An unknown field is an error that names
/// it, as in Ollama, whose template data is a Go struct.
fn new_template() -> gotmpl::Template {
    gotmpl::Template::new("")
        .missing_key(MissingKey::Error)
        .max_range_iters(MAX_RANGE_ITERS)
        .func("json", |args| {
            let [v] = args else {
                return Err(arg_count("json", 1, args.len()));
            };
            Ok(GoValue::from(value_json(v)))
        })
        .func("currentDate", |args| {
            date_args(args)?;
            Ok(GoValue::from(day(0)))
        })
        .func("yesterdayDate", |args| {
            date_args(args)?;
            Ok(GoValue::from(day(-1)))
        })
        .func("toTypeScriptType", |args| {
            let [v] = args else {
                return Err(arg_count("toTypeScriptType", 1, args.len()));
            };
            Ok(GoValue::from(typescript_type(v)))
        })
}

fn arg_count(name: &str, expected: usize, got: usize) -> gotmpl::TemplateError {
    gotmpl::TemplateError::ArgCount {
        name: name.to_string(),
        expected,
        got,
    }
}

/// Ollama's date functions are `func(args ...string) string`: any number of strings (a format,
/// which they ignore), nothing else.
fn date_args(args: &[GoValue]) -> gotmpl::Result<()> {
    match args.iter().find(|a| a.as_str().is_none()) {
        Some(a) => Err(gotmpl::TemplateError::Exec(format!(
            "wrong type for value; expected string; got {}",
            a.type_name()
        ))),
        None => Ok(()),
    }
}

/// Today (or `offset` days from it) as `2006-01-02`, in local time as Go's `time.Now()`.
fn day(offset: i64) -> String {
    (chrono::Local::now() + chrono::Duration::days(offset))
        .format("%Y-%m-%d")
        .to_string()
}

/// Parse a Go template, refusing one that would keep its renderer from finishing (see
/// `go_guard`).
pub(crate) fn parse(source: &str) -> Result<gotmpl::Template, TemplateError> {
    let t = go_guard::no_panic(
        || {
            new_template()
                .parse(source)
                .map_err(|e| TemplateError::Parse(short_error(&e.to_string())))
        },
        TemplateError::Parse,
    )?;
    go_guard::check_calls(source, &t)?;
    Ok(t)
}

fn render(source: &str, data: &GoValue) -> Result<String, TemplateError> {
    let t = parse(source)?;
    go_guard::no_panic(
        || {
            t.execute_to_string(data)
                .map_err(|e| TemplateError::Render(short_error(&e.to_string())))
        },
        TemplateError::Render,
    )
}

/// An error as a person reads it: gotmpl's messages are short, but some print a value, which
/// may be the whole conversation (`len: cannot take length of map[...]`); those are cut. A
/// parse error's `template: 3:7: ` reads `line 3: `.
pub(crate) fn short_error(message: &str) -> String {
    const MAX: usize = 300;
    let mut message = message
        .strip_prefix("execution error: ")
        .unwrap_or(message)
        .to_string();
    if let Some(rest) = message.strip_prefix("template: ") {
        message = match rest.split_once(": ") {
            Some(("0:0", what)) => what.to_string(),
            Some((at, what)) if at.bytes().all(|b| b.is_ascii_digit() || b == b':') => {
                let line = at.split(':').next().unwrap_or(at);
                format!("line {line}: {what}")
            }
            _ => rest.to_string(),
        };
    }
    if message.len() <= MAX {
        return message;
    }
    let mut end = MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// The messages as Ollama hands them to a Go template: consecutive messages of one role
/// (but tool results, each its own) become one, their contents joined by a blank line, so a
/// client that sends two user messages in a row gets one turn, as with Ollama. Ollama keeps
/// only the first message's other fields; here later tool calls are kept too (appended),
/// and thinking is joined like the content, so nothing a client sent is dropped.
pub(crate) fn collate(messages: &[Message]) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    for m in messages {
        match out.last_mut() {
            Some(prev) if prev.role == m.role && m.role != "tool" => {
                prev.content = format!("{}\n\n{}", prev.content, m.content);
                if let Some(t) = m.thinking.as_ref().filter(|t| !t.is_empty()) {
                    prev.thinking = Some(match prev.thinking.take().filter(|p| !p.is_empty()) {
                        Some(p) => format!("{p}\n\n{t}"),
                        None => t.clone(),
                    });
                }
                if let Some(calls) = &m.tool_calls {
                    prev.tool_calls
                        .get_or_insert_with(Vec::new)
                        .extend(calls.iter().cloned());
                }
            }
            _ => out.push(m.clone()),
        }
    }
    out
}

/// A conversation for a template that uses `.Messages`.
pub(crate) fn render_messages(
    source: &str,
    messages: &[Message],
    tools: Option<&[Value]>,
    think: Think<'_>,
) -> Result<String, TemplateError> {
    render(source, &data(messages, None, "", tools, think)?)
}

/// Fill-in-the-middle: the template gets `.System`, `.Prompt` and `.Suffix`.
pub(crate) fn render_infill(
    source: &str,
    system: Option<&str>,
    prompt: &str,
    suffix: &str,
) -> Result<String, TemplateError> {
    let data = data(
        &[],
        Some((system.map(str::to_string), prompt.to_string())),
        "",
        None,
        Think::default(),
    )?;
    let GoValue::Map(fields) = data else {
        return Err(TemplateError::Render("no template data".to_string()));
    };
    let mut fields = (*fields).clone();
    fields.insert("Suffix".into(), GoValue::from(suffix));
    render(source, &GoValue::from(fields))
}

/// Templates that know only `.System`, `.Prompt` and `.Response` are rendered once per
/// user turn and concatenated, as Ollama does; the last turn gets an empty `.Response`.
pub(crate) fn render_pairs(
    source: &str,
    messages: &[Message],
    tools: Option<&[Value]>,
    think: Think<'_>,
) -> Result<String, TemplateError> {
    let render_turn = |system: Option<String>, prompt: String, response: &str| {
        render(
            source,
            &data(&[], Some((system, prompt)), response, tools, think)?,
        )
    };
    let mut out = String::new();
    let mut system: Option<String> = None;
    let mut prompt: Option<String> = None;
    for m in messages {
        match m.role.as_str() {
            "system" => system = Some(m.content.clone()),
            "user" => {
                if let Some(p) = prompt.take() {
                    out += &render_turn(system.take(), p, "")?;
                }
                prompt = Some(m.content.clone());
            }
            "assistant" => {
                let p = prompt.take().unwrap_or_default();
                out += &render_turn(system.take(), p, &m.content)?;
            }
            _ => {}
        }
    }
    if prompt.is_some() || system.is_some() || out.is_empty() {
        out += &render_turn(system, prompt.unwrap_or_default(), "")?;
    }
    Ok(out)
}

/// The template's data: `.System`, `.Prompt`, `.Response`, `.Suffix`, `.Messages`, `.Tools`,
/// `.Think`, `.IsThinkSet`, `.ThinkLevel`.
fn data(
    messages: &[Message],
    pair: Option<(Option<String>, String)>,
    response: &str,
    tools: Option<&[Value]>,
    think: Think<'_>,
) -> Result<GoValue, TemplateError> {
    let (system, prompt) = match pair {
        Some((s, p)) => (s.unwrap_or_default(), p),
        None => {
            let system: Vec<&str> = messages
                .iter()
                .filter(|m| m.role == "system")
                .map(|m| m.content.as_str())
                .collect();
            let prompt = messages
                .iter()
                .rev()
                .find(|m| m.role == "user")
                .map(|m| m.content.clone());
            (system.join("\n\n"), prompt.unwrap_or_default())
        }
    };
    let messages: Vec<GoValue> = messages.iter().map(message_value).collect();
    // As Ollama's: `true` alone reads as "medium".
    let level = match (think.level, think.on) {
        (Some(level), _) => level,
        (None, Some(true)) => "medium",
        (None, _) => "",
    };
    let tools = tools_value(tools.unwrap_or_default()).map_err(TemplateError::Render)?;
    let fields: BTreeMap<String, GoValue> = [
        ("System", GoValue::from(system)),
        ("Prompt", GoValue::from(prompt)),
        ("Response", GoValue::from(response)),
        // Set for fill-in-the-middle only; templates test it (`{{ if .Suffix }}`).
        ("Suffix", GoValue::from("")),
        ("Messages", GoValue::from(messages)),
        ("Tools", tools),
        ("Think", GoValue::Bool(think.on.unwrap_or(false))),
        ("IsThinkSet", GoValue::Bool(think.on.is_some())),
        ("ThinkLevel", GoValue::from(level)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Ok(GoValue::from(fields))
}

/// A message as Ollama's template message: `.Role`, `.Content`, `.Thinking`, `.Images`,
/// `.ToolCalls`, `.ToolName`, `.ToolCallID`; unset ones are empty.
fn message_value(m: &Message) -> GoValue {
    let text = |s: &Option<String>| GoValue::from(s.as_deref().unwrap_or_default());
    let calls: Vec<GoValue> = m.tool_calls.iter().flatten().map(tool_call_value).collect();
    let images: Vec<GoValue> = m
        .images
        .iter()
        .flatten()
        .map(|i| GoValue::from(i.as_str()))
        .collect();
    let fields: BTreeMap<String, GoValue> = [
        ("Role", GoValue::from(m.role.as_str())),
        ("Content", GoValue::from(m.content.as_str())),
        ("Thinking", text(&m.thinking)),
        ("Images", GoValue::from(images)),
        ("ToolCalls", GoValue::from(calls)),
        ("ToolName", text(&m.tool_name)),
        ("ToolCallID", text(&m.tool_call_id)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    GoValue::from(fields)
}
