//! `corral run MODEL [PROMPT]`: one answer when a prompt is given or piped in, else the
//! interactive session (`repl`).

use std::io::{IsTerminal, Read};

use anyhow::Context;
use corral_api::{
    EmbedRequest, EmbedResponse, GenerateRequest, GenerateResponse, Metrics, ShowResponse,
};
use serde_json::Value;

use crate::client::Client;
use crate::repl::display::{Answer, Spinner, Style};

/// `corral run` options.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Model to run.
    pub model: String,
    /// Prompt; read from stdin when stdin is not a terminal.
    pub prompt: Vec<String>,
    /// Print timings and token counts after each answer.
    #[arg(long)]
    pub verbose: bool,
    /// How long to keep the model loaded (e.g. 5m, 0, -1).
    #[arg(long, allow_hyphen_values = true)]
    pub keepalive: Option<String>,
    /// Response format (e.g. json).
    #[arg(long)]
    pub format: Option<String>,
    /// Enable thinking mode: true/false or high/medium/low for supported models.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub think: Option<String>,
    /// Hide thinking output (if provided).
    #[arg(long)]
    pub hidethinking: bool,
    /// Don't wrap words to the next line automatically.
    #[arg(long)]
    pub nowordwrap: bool,
    /// Use an insecure registry (plain HTTP, any certificate) when the model is pulled first.
    #[arg(long)]
    pub insecure: bool,
    /// For embedding models: cut inputs longer than the context (the server's default: true).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub truncate: Option<bool>,
    /// For embedding models: keep this many dimensions of the vector.
    #[arg(long)]
    pub dimensions: Option<u32>,
}

/// `/api/show` for one model.
pub(crate) async fn describe(client: &Client, model: &str) -> anyhow::Result<ShowResponse> {
    client
        .post("/api/show", &serde_json::json!({ "model": model }))
        .await
}

/// The server's answer for a model it does not have.
pub(crate) fn is_not_found(e: &anyhow::Error) -> bool {
    e.to_string().ends_with("not found")
}

/// A think setting as the API takes it: `true` (or nothing), `false`, or a level; None for
/// anything else.
pub(crate) fn think_setting(text: &str) -> Option<Value> {
    match text {
        "" | "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        "high" | "medium" | "low" => Some(Value::String(text.into())),
        _ => None,
    }
}

/// `--think`'s value as the API takes it.
fn think_value(flag: Option<&str>) -> anyhow::Result<Option<Value>> {
    match flag {
        None => Ok(None),
        Some(text) => think_setting(text).map(Some).ok_or_else(|| {
            anyhow::anyhow!(
                "invalid value for --think: {text:?} (must be true, false, high, medium, or low)"
            )
        }),
    }
}

/// `--format`'s value as the API takes it, as Ollama's CLI sends it: `json`, or the text as
/// JSON (a schema); text that is not JSON goes as a string, which the server refuses by name.
pub(crate) fn format_value(text: &str) -> Value {
    match text {
        "json" => Value::String(text.into()),
        _ => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into())),
    }
}

/// `corral run`.
pub async fn run(client: &Client, args: RunArgs) -> anyhow::Result<()> {
    let mut think = think_value(args.think.as_deref())?;
    // As with Ollama, a model that is not here yet is pulled first.
    let shown = match describe(client, &args.model).await {
        Ok(r) => Some(r),
        Err(e) if is_not_found(&e) => {
            let pull = crate::transfer::TransferArgs {
                model: args.model.clone(),
                insecure: args.insecure,
            };
            crate::transfer::pull(client, &pull).await?;
            None
        }
        Err(e) => return Err(e),
    };
    let mut parts = Vec::new();
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        // Bytes that are not UTF-8 become U+FFFD, as Ollama's CLI passes them on, rather than
        // refusing the whole input.
        let mut bytes = Vec::new();
        stdin.lock().read_to_end(&mut bytes).context("read stdin")?;
        let s = String::from_utf8_lossy(&bytes).into_owned();
        if !s.trim().is_empty() {
            parts.push(s);
        }
    }
    parts.extend(args.prompt.iter().cloned());
    let keep_alive = args.keepalive.clone().map(Value::String);
    // An embedding model embeds the text and prints the vector, as Ollama's run does.
    let shown = match shown {
        Some(r) => r,
        None => describe(client, &args.model).await?,
    };
    if shown.capabilities.iter().any(|c| c == "embedding") {
        if parts.is_empty() {
            anyhow::bail!(
                "embedding models require input text. Usage: corral run {} [your text here]",
                args.model
            );
        }
        let req = EmbedRequest {
            model: args.model.clone(),
            input: Value::String(parts.join(" ")),
            truncate: args.truncate,
            dimensions: args.dimensions,
            keep_alive,
            ..Default::default()
        };
        let resp: EmbedResponse = client.post("/api/embed", &req).await?;
        let first = resp
            .embeddings
            .first()
            .ok_or_else(|| anyhow::anyhow!("no embeddings returned"))?;
        crate::out(&format!("{}\n", serde_json::to_string(first)?))?;
        return Ok(());
    }
    if parts.is_empty() {
        if std::io::stdin().is_terminal() {
            let start = crate::repl::Start {
                model: args.model.clone(),
                keep_alive,
                format: args.format.clone(),
                think,
                hide_thinking: args.hidethinking,
                wordwrap: !args.nowordwrap,
                verbose: args.verbose,
            };
            return crate::repl::interactive(client, start, shown).await;
        }
        // No prompt and no terminal (`corral run MODEL < /dev/null`, a warm-up script): load
        // the model and say nothing, as Ollama does.
        let req = GenerateRequest {
            model: args.model.clone(),
            keep_alive,
            stream: Some(false),
            ..Default::default()
        };
        return client
            .stream("/api/generate", &req, |_: GenerateResponse| Ok(()))
            .await;
    }
    // As the session: a model that can think does, unless --think said otherwise.
    if think.is_none() && shown.capabilities.iter().any(|c| c == "thinking") {
        think = Some(Value::Bool(true));
    }
    let req = GenerateRequest {
        model: args.model.clone(),
        prompt: parts.join(" "),
        keep_alive,
        format: args.format.as_deref().map(format_value),
        think,
        ..Default::default()
    };
    // One answer: plain text (no colours, no spinner), wrapped only on a terminal.
    let style = Style {
        wrap: crate::repl::display::wrap_width(!args.nowordwrap),
        colour: false,
        hide_thinking: args.hidethinking,
    };
    let mut answer = Answer::new(style, Spinner::none());
    let mut metrics = Metrics::default();
    client
        .stream("/api/generate", &req, |r: GenerateResponse| {
            answer.push(r.thinking.as_deref().unwrap_or(""), &r.response)?;
            if r.done {
                metrics = r.metrics;
            }
            Ok(())
        })
        .await?;
    answer.finish()?;
    crate::out("\n")?;
    if args.verbose {
        eprint!("{}", crate::stats_block(&metrics));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_flag_values() {
        assert_eq!(think_value(Some("true")).unwrap(), Some(Value::Bool(true)));
        assert_eq!(think_value(Some("low")).unwrap(), Some(Value::from("low")));
        assert_eq!(think_value(None).unwrap(), None);
        assert_eq!(
            think_value(Some("loud")).unwrap_err().to_string(),
            "invalid value for --think: \"loud\" (must be true, false, high, medium, or low)"
        );
    }
}
