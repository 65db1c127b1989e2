//! Splitting a model's answer, as it streams, into thinking, content and tool calls.
//!
//! - Thinking (when a request asks for it): the answer starts inside the model's thinking (the
//!   template opened it, or the model writes `<think>`); everything before `</think>` is
//!   thinking, the rest is content.
//! - Tool calls (when a request brings tools): an answer that starts with `<tool_call>` holds
//!   one JSON call per `<tool_call>...</tool_call>` (the form forced calls take); one that starts
//!   with `{` or `[` is read as bare JSON calls when it ends. Anything else streams as text.
//!   A call is `{"name", "arguments"}` (or `"parameters"`), alone or in a list.

use serde_json::{json, Value};

/// One piece of the answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Content(String),
    Thinking(String),
    ToolCalls(Vec<Value>),
}

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = corral_api::runner::THINK_END;
const CALL_OPEN: &str = "<tool_call>";
pub(crate) const CALL_CLOSE: &str = "</tool_call>";

/// The parser for one answer.
#[derive(Debug)]
pub struct OutputParser {
    think: Option<Think>,
    tools: Option<Tools>,
}

#[derive(Debug)]
struct Think {
    thinking: bool,
    at_start: bool,
    buf: String,
    /// Just after `</think>`: the whitespace before the content is dropped.
    trim: bool,
}

#[derive(Debug, PartialEq)]
enum ToolMode {
    Undecided,
    Text,
    Tagged,
    Json,
}

#[derive(Debug)]
struct Tools {
    mode: ToolMode,
    buf: String,
    found: bool,
    /// Calls found so far: each call's `function.index` is its place in the whole answer (as
    /// Ollama numbers them), which OpenAI's stream clients use to tell parallel calls apart.
    count: usize,
    /// The request forced a call (a grammar made the answer one): text left at the end is a
    /// call cut short (by `num_predict`), never content.
    forced: bool,
    /// At most one call (`parallel_tool_calls: false`): later ones are dropped.
    single: bool,
}

/// The length of the longest end of `s` that begins `tag` (text to hold back: it may be the
/// start of the tag).
fn partial_tail(s: &str, tag: &str) -> usize {
    (1..tag.len().min(s.len() + 1))
        .rev()
        .find(|&n| s.is_char_boundary(s.len() - n) && tag.starts_with(&s[s.len() - n..]))
        .unwrap_or(0)
}

impl OutputParser {
    pub fn new(think: bool, tools: bool) -> Self {
        OutputParser {
            think: think.then_some(Think {
                thinking: true,
                at_start: true,
                buf: String::new(),
                trim: false,
            }),
            tools: tools.then_some(Tools {
                mode: ToolMode::Undecided,
                buf: String::new(),
                found: false,
                count: 0,
                forced: false,
                single: false,
            }),
        }
    }

    /// With `true`: the request forced a tool call (see `Tools::forced`).
    pub fn forced(mut self, forced: bool) -> Self {
        if let Some(t) = &mut self.tools {
            t.forced = forced;
        }
        self
    }

    /// With `true`: one tool call at most, the first (see `Tools::single`).
    pub fn single(mut self, single: bool) -> Self {
        if let Some(t) = &mut self.tools {
            t.single = single;
        }
        self
    }

    /// Whether this parser changes anything (a plain answer passes straight through).
    pub fn active(&self) -> bool {
        self.think.is_some() || self.tools.is_some()
    }

    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        let content = match &mut self.think {
            Some(t) => t.push(text, &mut out),
            None => text.to_string(),
        };
        self.content(content, false, &mut out);
        out
    }

    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        let content = match &mut self.think {
            Some(t) => t.finish(&mut out),
            None => String::new(),
        };
        self.content(content, true, &mut out);
        out
    }

    fn content(&mut self, text: String, end: bool, out: &mut Vec<Piece>) {
        match &mut self.tools {
            Some(t) => t.push(&text, end, out),
            None if !text.is_empty() => out.push(Piece::Content(text)),
            None => {}
        }
    }
}

impl Think {
    /// Takes answer text; pushes thinking pieces; returns the content part.
    fn push(&mut self, text: &str, out: &mut Vec<Piece>) -> String {
        if !self.thinking {
            if self.trim {
                let t = text.trim_start();
                self.trim = t.is_empty();
                return t.to_string();
            }
            return text.to_string();
        }
        self.buf.push_str(text);
        if self.at_start {
            let t = self.buf.trim_start();
            if t.is_empty() || (THINK_OPEN.starts_with(t) && t.len() < THINK_OPEN.len()) {
                return String::new();
            }
            if let Some(rest) = t.strip_prefix(THINK_OPEN) {
                self.buf = rest.to_string();
            }
            self.at_start = false;
        }
        if let Some(i) = self.buf.find(THINK_CLOSE) {
            let thinking = self.buf[..i].to_string();
            let content = self.buf[i + THINK_CLOSE.len()..].trim_start().to_string();
            self.buf.clear();
            self.thinking = false;
            self.trim = content.is_empty();
            if !thinking.is_empty() {
                out.push(Piece::Thinking(thinking));
            }
            return content;
        }
        let hold = partial_tail(&self.buf, THINK_CLOSE);
        let ready: String = self.buf.drain(..self.buf.len() - hold).collect();
        if !ready.is_empty() {
            out.push(Piece::Thinking(ready));
        }
        String::new()
    }

    fn finish(&mut self, out: &mut Vec<Piece>) -> String {
        let rest = std::mem::take(&mut self.buf);
        if self.thinking && !rest.trim().is_empty() {
            out.push(Piece::Thinking(rest));
        }
        String::new()
    }
}

/// A call as the native API writes it: `{"function": {"name", "arguments": {...}}}`.
fn native_call(v: &Value) -> Option<Value> {
    let name = v.get("name")?.as_str()?;
    let args = v
        .get("arguments")
        .or_else(|| v.get("parameters"))
        .cloned()
        .unwrap_or(json!({}));
    let args = match args {
        Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        other => other,
    };
    Some(json!({"function": {"name": name, "arguments": args}}))
}

/// Calls from JSON text: one call object or a list of them.
fn parse_calls(text: &str) -> Option<Vec<Value>> {
    match serde_json::from_str::<Value>(text.trim()).ok()? {
        Value::Array(items) => items.iter().map(native_call).collect(),
        v => native_call(&v).map(|c| vec![c]),
    }
}

impl Tools {
    /// Numbers the calls in answer order and hands them out.
    fn emit(&mut self, mut calls: Vec<Value>, out: &mut Vec<Piece>) {
        self.found = true;
        if self.single {
            calls.truncate(1 - self.count.min(1));
            if calls.is_empty() {
                return;
            }
        }
        for c in &mut calls {
            c["function"]["index"] = json!(self.count);
            self.count += 1;
        }
        out.push(Piece::ToolCalls(calls));
    }

    fn push(&mut self, text: &str, end: bool, out: &mut Vec<Piece>) {
        if self.mode == ToolMode::Text {
            if !text.is_empty() {
                out.push(Piece::Content(text.to_string()));
            }
            return;
        }
        self.buf.push_str(text);
        if self.mode == ToolMode::Undecided {
            let t = self.buf.trim_start();
            if t.starts_with(CALL_OPEN) {
                self.mode = ToolMode::Tagged;
            } else if t.starts_with('{') || t.starts_with('[') {
                self.mode = ToolMode::Json;
            } else if !end && (t.is_empty() || CALL_OPEN.starts_with(t)) {
                return;
            } else if self.forced {
                // A forced call cut short before its tag was whole: no call, no text.
                self.buf.clear();
                return;
            } else {
                self.mode = ToolMode::Text;
                let all = std::mem::take(&mut self.buf);
                if !all.is_empty() {
                    out.push(Piece::Content(all));
                }
                return;
            }
        }
        match self.mode {
            ToolMode::Tagged => loop {
                let t = self.buf.trim_start();
                let Some(body) = t.strip_prefix(CALL_OPEN) else {
                    break;
                };
                let Some(close) = body.find(CALL_CLOSE) else {
                    if end {
                        // The answer ended inside a call (no closing tag): read what is there.
                        if let Some(calls) = parse_calls(body) {
                            self.buf.clear();
                            self.emit(calls, out);
                        }
                    }
                    break;
                };
                match parse_calls(&body[..close]) {
                    Some(calls) => {
                        self.buf = body[close + CALL_CLOSE.len()..].to_string();
                        self.emit(calls, out);
                    }
                    None => break,
                }
            },
            ToolMode::Json if end => {
                if let Some(calls) = parse_calls(&self.buf) {
                    self.buf.clear();
                    self.emit(calls, out);
                }
            }
            _ => {}
        }
        if end {
            let rest = std::mem::take(&mut self.buf);
            let only_space_after_calls = self.found && rest.trim().is_empty();
            if !rest.is_empty() && !only_space_after_calls && !self.forced {
                out.push(Piece::Content(rest));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `chunks`, collapse adjacent pieces of a kind.
    fn run(think: bool, tools: bool, chunks: &[&str]) -> Vec<Piece> {
        let mut p = OutputParser::new(think, tools);
        let mut all: Vec<Piece> = Vec::new();
        for c in chunks {
            all.extend(p.push(c));
        }
        all.extend(p.finish());
        let mut out: Vec<Piece> = Vec::new();
        for piece in all {
            match (out.last_mut(), piece) {
                (Some(Piece::Content(a)), Piece::Content(b)) => a.push_str(&b),
                (Some(Piece::Thinking(a)), Piece::Thinking(b)) => a.push_str(&b),
                (_, p) => out.push(p),
            }
        }
        out
    }

    fn call(index: usize, name: &str, args: Value) -> Value {
        json!({"function": {"index": index, "name": name, "arguments": args}})
    }

    #[test]
    fn plain_text_passes_through() {
        assert_eq!(
            run(false, false, &["Hel", "lo"]),
            vec![Piece::Content("Hello".into())]
        );
        assert_eq!(
            run(false, true, &["Hel", "lo <tool_call>"]),
            vec![Piece::Content("Hello <tool_call>".into())]
        );
        assert_eq!(
            run(false, true, &["<tool", "s are fun"]),
            vec![Piece::Content("<tools are fun".into())]
        );
    }

    #[test]
    fn thinking_is_split_off_in_any_chunking() {
        let want = vec![
            Piece::Thinking("Let me see.".into()),
            Piece::Content("It is 4.".into()),
        ];
        for chunks in [
            vec!["<think>Let me see.</think>\n\nIt is 4."],
            vec!["<thi", "nk>Let me", " see.</thi", "nk>", "\nIt is 4."],
            vec!["Let me see.", "</", "think>It is 4."],
        ] {
            assert_eq!(run(true, false, &chunks), want, "{chunks:?}");
        }
        // Never closed: all thinking.
        assert_eq!(
            run(true, false, &["hmm", " <"]),
            vec![Piece::Thinking("hmm <".into())]
        );
    }

    #[test]
    fn tool_calls_tagged_bare_and_listed() {
        let c = call(0, "get_weather", json!({"city": "Paris"}));
        for chunks in [
            vec!["<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"],
            vec!["<tool", "_call>{\"name\": \"get_weather\", ", "\"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}</tool_call>"],
            vec!["{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}"],
            vec!["<tool_call>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]"],
        ] {
            assert_eq!(run(false, true, &chunks), vec![Piece::ToolCalls(vec![c.clone()])], "{chunks:?}");
        }
        let two = run(false, true, &["<tool_call>{\"name\":\"a\",\"arguments\":{}}</tool_call>\n<tool_call>{\"name\":\"b\",\"arguments\":{}}</tool_call>"]);
        assert_eq!(
            two,
            vec![
                Piece::ToolCalls(vec![call(0, "a", json!({}))]),
                Piece::ToolCalls(vec![call(1, "b", json!({}))])
            ]
        );
        // A list in one block: numbered on from the calls before it.
        assert_eq!(
            run(false, true, &["<tool_call>{\"name\":\"a\",\"arguments\":{}}</tool_call><tool_call>[{\"name\":\"b\"},{\"name\":\"c\"}]</tool_call>"]),
            vec![
                Piece::ToolCalls(vec![call(0, "a", json!({}))]),
                Piece::ToolCalls(vec![call(1, "b", json!({})), call(2, "c", json!({}))])
            ]
        );
        // A forced call cut short is neither a call nor text; unforced, what was written is text.
        let cut_short = |forced: bool, chunks: &[&str]| {
            let mut p = OutputParser::new(false, true).forced(forced);
            let mut out: Vec<Piece> = chunks.iter().flat_map(|c| p.push(c)).collect();
            out.extend(p.finish());
            out
        };
        for chunks in [
            &["<t"][..],
            &["<tool_call>", "{\"na"],
            &["<tool_call>{\"name\": \"a\", "],
        ] {
            assert_eq!(cut_short(true, chunks), vec![], "{chunks:?}");
            assert_eq!(
                cut_short(false, chunks),
                vec![Piece::Content(chunks.concat())]
            );
        }
        assert_eq!(
            cut_short(
                true,
                &["<tool_call>{\"name\":\"a\",\"arguments\":{}}</tool_call>"]
            ),
            vec![Piece::ToolCalls(vec![call(0, "a", json!({}))])]
        );
        // One call at most: the first, whether the calls come tagged or in a list.
        let single = |chunks: &[&str]| {
            let mut p = OutputParser::new(false, true).single(true);
            let mut out: Vec<Piece> = chunks.iter().flat_map(|c| p.push(c)).collect();
            out.extend(p.finish());
            out
        };
        let first = vec![Piece::ToolCalls(vec![call(0, "a", json!({}))])];
        assert_eq!(
            single(&[
                "<tool_call>{\"name\":\"a\",\"arguments\":{}}</tool_call>\n",
                "<tool_call>{\"name\":\"b\",\"arguments\":{}}</tool_call>"
            ]),
            first
        );
        assert_eq!(
            single(&["[{\"name\":\"a\",\"arguments\":{}}, {\"name\":\"b\"}]"]),
            first
        );
        // The stop at the first call's end leaves it open: it is read as it stands.
        assert_eq!(
            single(&["<tool_call>{\"name\":\"a\",\"arguments\":{}}\n"]),
            first
        );
        // JSON that is not a call is text.
        assert_eq!(
            run(false, true, &["{\"x\": 1}"]),
            vec![Piece::Content("{\"x\": 1}".into())]
        );
        // Thinking first, then a call.
        assert_eq!(
            run(
                true,
                true,
                &["plan</think><tool_call>{\"name\":\"a\",\"arguments\":{}}</tool_call>"]
            ),
            vec![
                Piece::Thinking("plan".into()),
                Piece::ToolCalls(vec![call(0, "a", json!({}))])
            ]
        );
    }
}
