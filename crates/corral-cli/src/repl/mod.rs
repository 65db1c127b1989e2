//! `corral run` on a terminal: Ollama's interactive session. Lines are messages; `/`
//! commands change the session (`/set`, `/show`, `/load`, `/save`, `/clear`, `/bye`);
//! `"""` starts a multi-line message; Ctrl-C stops an answer and keeps the session.
//!
//! `input` reads lines (rustyline), `display` shows answers, `wrap` wraps them, `help` holds
//! the help texts; this module keeps the conversation and runs the commands.

pub mod display;
pub mod help;
pub mod input;
pub mod wrap;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use corral_api::{ChatRequest, ChatResponse, CreateRequest, Message, Metrics, ShowResponse};
use serde_json::Value;

use crate::client::Client;
use crate::run::{describe, is_not_found, think_setting};
use display::{Answer, Spinner, Style};
use input::{Block, BlockKind, LineEditor, Read};

/// How the session starts (from `corral run`'s flags).
#[derive(Debug, Clone, Default)]
pub struct Start {
    pub model: String,
    pub keep_alive: Option<Value>,
    pub format: Option<String>,
    /// `--think[=level]`; None lets the model's capabilities decide.
    pub think: Option<Value>,
    pub hide_thinking: bool,
    pub wordwrap: bool,
    pub verbose: bool,
}

/// The conversation and the settings `/set` changes.
struct Session<'c> {
    client: &'c Client,
    model: String,
    capabilities: Vec<String>,
    system: Option<String>,
    /// `/set parameter` values, sent as request options.
    options: BTreeMap<String, Value>,
    messages: Vec<Message>,
    format: Option<String>,
    think: Option<Value>,
    think_set: bool,
    hide_thinking: bool,
    wordwrap: bool,
    verbose: bool,
    keep_alive: Option<Value>,
}

enum Flow {
    Continue,
    Exit,
}

/// The interactive session, until `/bye`, `/exit` or Ctrl-D.
/// `shown` is the model's `/api/show`, which `corral run` already asked for.
pub async fn interactive(client: &Client, start: Start, shown: ShowResponse) -> anyhow::Result<()> {
    let mut s = Session {
        client,
        model: start.model.clone(),
        capabilities: Vec::new(),
        system: None,
        options: BTreeMap::new(),
        messages: Vec::new(),
        format: start.format.clone(),
        think_set: start.think.is_some(),
        think: start.think.clone(),
        hide_thinking: start.hide_thinking,
        wordwrap: start.wordwrap,
        verbose: start.verbose,
        keep_alive: start.keep_alive.clone(),
    };
    s.adopt(&shown);
    // Load the model before the first prompt, with the spinner; Ctrl-C here leaves, with the
    // status of a command SIGINT ended (130), as the one-shot run does.
    if !s.preload().await? {
        return Err(crate::Interrupted.into());
    }
    s.replay(&shown);

    let mut editor = LineEditor::new(history_file(), !no_history())?;
    let mut block = Block::default();
    loop {
        match editor.read(block.is_open())? {
            Read::Eof => {
                println!();
                return Ok(());
            }
            Read::Interrupted { empty } => {
                if block.is_open() {
                    block.cancel();
                } else if empty {
                    println!("Use Ctrl + d or /bye to exit.");
                }
            }
            Read::Line(line) => {
                if let Flow::Exit = s.line(line, &mut editor, &mut block).await? {
                    return Ok(());
                }
            }
        }
    }
}

/// `~/.corral/history`.
fn history_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".corral").join("history"))
}

/// `CORRAL_NOHISTORY` (else `OLLAMA_NOHISTORY`): any value but an empty one or a false one.
fn no_history() -> bool {
    let v = std::env::var("CORRAL_NOHISTORY")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| std::env::var("OLLAMA_NOHISTORY").ok());
    match v.as_deref().map(str::trim) {
        None | Some("") => false,
        Some(v) => !matches!(v, "0" | "f" | "F" | "false" | "FALSE" | "False"),
    }
}

/// The rest of `line` after its first `n` words, trimmed.
fn after_words(line: &str, n: usize) -> &str {
    let mut rest = line.trim_start();
    for _ in 0..n {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        rest = &rest[end..];
    }
    rest.trim()
}

/// A value as Go's `%v` prints it: `0.7`, `42`, `[a b]`.
fn plain_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(plain_value).collect::<Vec<_>>().join(" ")
        ),
        other => other.to_string(),
    }
}

impl Session<'_> {
    async fn describe(&self, model: &str) -> anyhow::Result<ShowResponse> {
        describe(self.client, model).await
    }

    /// Take on a model's capabilities: thinking is on by default where the model can think,
    /// unless the user chose.
    fn adopt(&mut self, shown: &ShowResponse) {
        self.capabilities = shown.capabilities.clone();
        if !self.think_set {
            self.think = self
                .capabilities
                .iter()
                .any(|c| c == "thinking")
                .then_some(Value::Bool(true));
        }
    }

    /// Load the model (an empty generate), with the spinner. False if Ctrl-C stopped it.
    async fn preload(&self) -> anyhow::Result<bool> {
        let req = corral_api::GenerateRequest {
            model: self.model.clone(),
            keep_alive: self.keep_alive.clone(),
            ..Default::default()
        };
        let _spinner = Spinner::start();
        let load = self
            .client
            .stream("/api/generate", &req, |_: corral_api::GenerateResponse| {
                Ok(())
            });
        tokio::select! {
            r = load => r.map(|()| true),
            _ = tokio::signal::ctrl_c() => Ok(false),
        }
    }

    /// Show the conversation a saved model starts with (its Modelfile's MESSAGEs).
    fn replay(&self, shown: &ShowResponse) {
        for m in &shown.messages {
            match m.role.as_str() {
                "user" => println!(">>> {}", m.content),
                "assistant" => {
                    let mut a = Answer::new(self.style(), Spinner::none());
                    let _ = a.push("", &m.content);
                    let _ = a.finish();
                    println!("\n");
                }
                _ => {}
            }
        }
    }

    fn style(&self) -> Style {
        Style {
            wrap: display::wrap_width(self.wordwrap),
            colour: std::io::stdout().is_terminal(),
            hide_thinking: self.hide_thinking,
        }
    }

    async fn line(
        &mut self,
        line: String,
        editor: &mut LineEditor,
        block: &mut Block,
    ) -> anyhow::Result<Flow> {
        if block.is_open() {
            if let Some((kind, text)) = block.push(&line) {
                self.block_done(kind, text).await?;
            }
            return Ok(Flow::Continue);
        }
        if let Some(rest) = line.strip_prefix("\"\"\"") {
            if let Some((kind, text)) = block.start(BlockKind::Message, rest) {
                self.block_done(kind, text).await?;
            }
            return Ok(Flow::Continue);
        }
        let text = line.trim();
        if text.is_empty() {
            return Ok(Flow::Continue);
        }
        // A pasted text of several lines is a message even if it starts with `/`.
        if text.starts_with('/') && !text.contains('\n') {
            return self.command(text, editor, block).await;
        }
        self.chat(text.to_string()).await?;
        Ok(Flow::Continue)
    }

    async fn block_done(&mut self, kind: BlockKind, text: String) -> anyhow::Result<()> {
        match kind {
            BlockKind::System => {
                self.set_system(text);
                Ok(())
            }
            BlockKind::Message if text.is_empty() => Ok(()),
            BlockKind::Message => self.chat(text).await,
        }
    }

    async fn command(
        &mut self,
        line: &str,
        editor: &mut LineEditor,
        block: &mut Block,
    ) -> anyhow::Result<Flow> {
        let args: Vec<&str> = line.split_whitespace().collect();
        match args[0] {
            "/bye" | "/exit" => return Ok(Flow::Exit),
            "/?" | "/help" => eprint!(
                "{}",
                match args.get(1).map(|a| a.trim_start_matches('/')) {
                    Some("set") => help::USAGE_SET,
                    Some("show") => help::USAGE_SHOW,
                    Some("shortcut" | "shortcuts") => help::USAGE_SHORTCUTS,
                    _ => help::USAGE,
                }
            ),
            "/set" => self.set(line, &args, editor, block),
            "/show" => self.show(&args).await,
            "/load" => self.load(&args).await?,
            "/save" => self.save(&args).await,
            "/clear" => {
                self.reset_conversation();
                println!("Cleared session context");
            }
            other => println!("Unknown command '{other}'. Type /? for help"),
        }
        Ok(Flow::Continue)
    }

    fn set(&mut self, line: &str, args: &[&str], editor: &mut LineEditor, block: &mut Block) {
        let Some(what) = args.get(1) else {
            eprint!("{}", help::USAGE_SET);
            return;
        };
        match *what {
            "parameter" => {
                if args.len() < 4 {
                    eprint!("{}", help::USAGE_PARAMETERS);
                    return;
                }
                let name = args[2];
                let values: Vec<String> = args[3..].iter().map(|v| v.to_string()).collect();
                match corral_modelfile::parse_parameter(name, &values) {
                    Ok(v) => {
                        self.options.insert(name.to_string(), v);
                        println!("Set parameter '{name}' to '{}'", values.join(", "));
                    }
                    Err(e) => println!("Couldn't set parameter: {e:?}"),
                }
            }
            "system" => {
                let text = after_words(line, 2);
                if text.is_empty() {
                    eprint!("{}", help::USAGE_SET);
                } else if let Some(rest) = text.strip_prefix("\"\"\"") {
                    if let Some((_, text)) = block.start(BlockKind::System, rest) {
                        self.set_system(text);
                    }
                } else {
                    self.set_system(text.to_string());
                }
            }
            "history" => editor.enable_history(),
            "nohistory" => editor.save_history = false,
            "wordwrap" => {
                self.wordwrap = true;
                println!("Set 'wordwrap' mode.");
            }
            "nowordwrap" => {
                self.wordwrap = false;
                println!("Set 'nowordwrap' mode.");
            }
            "format" => match args.get(2) {
                Some(&"json") if args.len() == 3 => {
                    self.format = Some("json".into());
                    println!("Set format to 'json' mode.");
                }
                _ => println!("Invalid or missing format. For 'json' mode use '/set format json'"),
            },
            "noformat" => {
                self.format = None;
                println!("Disabled format.");
            }
            "verbose" => {
                self.verbose = true;
                println!("Set 'verbose' mode.");
            }
            "quiet" => {
                self.verbose = false;
                println!("Set 'quiet' mode.");
            }
            "think" => {
                let level = args.get(2).copied();
                let Some(value) = think_setting(level.unwrap_or("true")) else {
                    println!(
                        "Couldn't set think mode: invalid think value {:?} (must be true, \
                         false, high, medium, or low)",
                        level.unwrap_or_default()
                    );
                    return;
                };
                self.warn_no_thinking();
                self.think = Some(value);
                self.think_set = true;
                match level {
                    Some(l) => println!("Set 'think' mode to '{l}'."),
                    None => println!("Set 'think' mode."),
                }
            }
            "nothink" => {
                self.warn_no_thinking();
                self.think = Some(Value::Bool(false));
                self.think_set = true;
                println!("Set 'nothink' mode.");
            }
            _ => println!("Unknown command '/set {what}'. Type /? for help"),
        }
    }

    fn warn_no_thinking(&self) {
        if !self.capabilities.iter().any(|c| c == "thinking") {
            eprintln!(
                "warning: model {:?} does not support thinking output",
                self.model
            );
        }
    }

    /// No turns left; the session's system message, if set, starts the conversation again.
    fn reset_conversation(&mut self) {
        self.messages.clear();
        if let Some(sys) = &self.system {
            self.messages.push(Message::new("system", sys.clone()));
        }
    }

    /// `/set system`: the session's system message, replacing one set just before.
    fn set_system(&mut self, text: String) {
        self.system = Some(text.clone());
        let m = Message::new("system", text);
        match self.messages.last_mut() {
            Some(last) if last.role == "system" => *last = m,
            _ => self.messages.push(m),
        }
        println!("Set system message.");
    }

    async fn show(&self, args: &[&str]) {
        let Some(what) = args.get(1) else {
            eprint!("{}", help::USAGE_SHOW);
            return;
        };
        // The session's system message and parameters go with the request, so that
        // `/show modelfile` is the Modelfile of this session (as Ollama's REPL asks).
        let body = serde_json::json!({
            "model": self.model,
            "system": self.system,
            "options": (!self.options.is_empty()).then_some(&self.options),
        });
        let r: ShowResponse = match self.client.post("/api/show", &body).await {
            Ok(r) => r,
            Err(e) => {
                println!("error: couldn't get model: {e}");
                return;
            }
        };
        match *what {
            "info" => eprint!("{}", crate::show_text(&r, false)),
            "license" if r.license.is_empty() => {
                println!("No license was specified for this model.")
            }
            "license" => println!("{}", r.license),
            "modelfile" => println!("{}", r.modelfile),
            "parameters" => {
                println!("Model defined parameters:");
                if r.parameters.is_empty() {
                    println!("  No additional parameters were specified for this model.");
                } else {
                    for l in r.parameters.lines() {
                        println!("  {l}");
                    }
                }
                println!();
                if !self.options.is_empty() {
                    println!("User defined parameters:");
                    for (k, v) in &self.options {
                        println!("  {k:<30} {}", plain_value(v));
                    }
                    println!();
                }
            }
            "system" => match self
                .system
                .as_deref()
                .or(Some(r.system.as_str()).filter(|s| !s.is_empty()))
            {
                Some(s) => println!("{s}\n"),
                None => println!("No system message was specified for this model."),
            },
            "template" if r.template.is_empty() => {
                println!("No prompt template was specified for this model.")
            }
            "template" => println!("{}", r.template),
            _ => println!("Unknown command '/show {what}'. Type /? for help"),
        }
    }

    async fn load(&mut self, args: &[&str]) -> anyhow::Result<()> {
        if args.len() != 2 {
            println!("Usage:\n  /load <modelname>");
            return Ok(());
        }
        let model = args[1].to_string();
        println!("Loading model '{model}'");
        let shown = match self.describe(&model).await {
            Ok(r) => r,
            Err(e) if is_not_found(&e) => {
                println!("Couldn't find model '{model}'");
                return Ok(());
            }
            Err(e) => {
                println!("error: {e}");
                return Ok(());
            }
        };
        let previous = std::mem::replace(&mut self.model, model);
        match self.preload().await {
            Ok(true) => {}
            Ok(false) => {
                println!();
                self.model = previous;
                return Ok(());
            }
            Err(e) => {
                println!("error: {e}");
                self.model = previous;
                return Ok(());
            }
        }
        self.adopt(&shown);
        self.reset_conversation();
        self.replay(&shown);
        Ok(())
    }

    async fn save(&self, args: &[&str]) {
        if args.len() != 2 {
            println!("Usage:\n  /save <modelname>");
            return;
        }
        let req = CreateRequest {
            model: args[1].to_string(),
            from: Some(self.model.clone()),
            system: self.system.clone(),
            parameters: (!self.options.is_empty()).then(|| self.options.clone()),
            messages: (!self.messages.is_empty()).then(|| self.messages.clone()),
            ..Default::default()
        };
        let result = self
            .client
            .stream(
                "/api/create",
                &req,
                |_: corral_api::ProgressResponse| Ok(()),
            )
            .await;
        match result {
            Ok(()) => println!("Created new model '{}'", args[1]),
            Err(e) => println!("error: {e}"),
        }
    }

    /// Send a message and show the answer. Ctrl-C stops it: what was shown stays in the
    /// conversation (the request is dropped, so the server stops it and frees its slot).
    async fn chat(&mut self, text: String) -> anyhow::Result<()> {
        let mut messages = self.messages.clone();
        messages.push(Message::new("user", text.clone()));
        let req = ChatRequest {
            model: self.model.clone(),
            messages,
            format: self.format.as_deref().map(crate::run::format_value),
            options: (!self.options.is_empty()).then(|| self.options.clone()),
            keep_alive: self.keep_alive.clone(),
            think: self.think.clone(),
            ..Default::default()
        };
        let mut answer = Answer::new(self.style(), Spinner::start());
        let mut metrics = Metrics::default();
        let outcome = {
            let stream = self.client.stream("/api/chat", &req, |r: ChatResponse| {
                answer.push(
                    r.message.thinking.as_deref().unwrap_or(""),
                    &r.message.content,
                )?;
                if r.done {
                    metrics = r.metrics;
                }
                Ok(())
            });
            tokio::select! {
                r = stream => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            }
        };
        answer.finish()?;
        let keep = |s: &mut Self, answer: &Answer| {
            s.messages.push(Message::new("user", text.clone()));
            let mut m = Message::new("assistant", answer.content.clone());
            if !answer.thinking.is_empty() {
                m.thinking = Some(answer.thinking.clone());
            }
            s.messages.push(m);
        };
        match outcome {
            Some(Ok(())) => {
                println!("\n");
                keep(self, &answer);
                if self.verbose {
                    eprint!("{}", crate::stats_block(&metrics));
                }
            }
            // Standard output closed under the session (`corral run m | head`): it ends, as
            // a one-shot run does there.
            Some(Err(e)) if crate::stdout_closed(&e) => return Err(e),
            Some(Err(e)) => {
                if !answer.is_empty() {
                    println!();
                }
                println!("Error: {e}");
            }
            None => {
                // Stopped: the prompt goes on a line of its own.
                println!();
                if !answer.content.is_empty() {
                    keep(self, &answer);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_after_a_command() {
        assert_eq!(
            after_words("/set system  You are   a pirate ", 2),
            "You are   a pirate"
        );
        assert_eq!(after_words("/set system", 2), "");
    }

    #[test]
    fn values_print_as_ollama_prints_them() {
        assert_eq!(plain_value(&serde_json::json!(0.0)), "0");
        assert_eq!(plain_value(&serde_json::json!(0.7)), "0.7");
        assert_eq!(plain_value(&serde_json::json!(42)), "42");
        assert_eq!(plain_value(&serde_json::json!(["a", "b"])), "[a b]");
    }
}
