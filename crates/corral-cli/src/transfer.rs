//! `corral pull` and `corral push`: the server does the transfer; this shows its progress,
//! one bar per layer on a terminal (indicatif), one line per step otherwise.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use corral_api::{ProgressResponse, TransferRequest};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::Client;
use crate::format::human_bytes;

/// Options of `corral pull` and `corral push`.
#[derive(Debug, Clone, clap::Args)]
pub struct TransferArgs {
    /// Model name, e.g. `llama3.2`, `hf.co/user/repo:Q4_K_M`, `host:5000/me/model:tag`.
    pub model: String,
    /// Use plain HTTP to reach the registry.
    #[arg(long)]
    pub insecure: bool,
}

/// `corral pull`.
pub async fn pull(client: &Client, args: &TransferArgs) -> anyhow::Result<()> {
    transfer(client, "/api/pull", args).await
}

/// `corral push`.
pub async fn push(client: &Client, args: &TransferArgs) -> anyhow::Result<()> {
    transfer(client, "/api/push", args).await
}

async fn transfer(client: &Client, path: &str, args: &TransferArgs) -> anyhow::Result<()> {
    let req = TransferRequest {
        model: args.model.clone(),
        insecure: args.insecure,
        stream: None,
    };
    let mut view = View::new();
    let result = client
        .stream(path, &req, |p: ProgressResponse| {
            view.show(&p);
            Ok(())
        })
        .await;
    view.finish();
    result
}

/// What the user sees of a transfer (or a create): a bar per layer, a bar per counted step
/// (a quantization's tensors), a spinner per other step.
pub(crate) struct View {
    bars: Option<(
        MultiProgress,
        HashMap<String, ProgressBar>,
        Option<ProgressBar>,
    )>,
    /// Without a terminal: the last line printed, so each step is printed once.
    last: String,
}

impl View {
    pub(crate) fn new() -> View {
        let bars = std::io::stderr().is_terminal().then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                HashMap::new(),
                None,
            )
        });
        View {
            bars,
            last: String::new(),
        }
    }

    pub(crate) fn show(&mut self, p: &ProgressResponse) {
        let Some((multi, layers, step)) = &mut self.bars else {
            let line = match (&p.digest, p.total) {
                (Some(_), Some(total)) => format!("{} {}", p.status, human_bytes(total)),
                _ => p.status.clone(),
            };
            if line != self.last {
                let _ = writeln!(std::io::stderr(), "{line}");
                self.last = line;
            }
            return;
        };
        match (&p.digest, p.total) {
            // A layer's bytes, or a counted step (a quantization's tensors): a bar each.
            (digest, Some(total)) => {
                let (key, counts) = match digest {
                    Some(d) => (
                        d.clone(),
                        "{decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} {eta}",
                    ),
                    None => (p.status.clone(), "{pos}/{len}"),
                };
                let bar = layers.entry(key).or_insert_with(|| {
                    if let Some(s) = step.take() {
                        s.finish();
                    }
                    let b = multi.add(ProgressBar::new(total));
                    b.set_style(
                        ProgressStyle::with_template(&format!(
                            "{{msg}} {{percent:>3}}% ▕{{wide_bar}}▏ {counts}"
                        ))
                        .expect("valid template")
                        .progress_chars("█▉▊▋▌▍▎▏ "),
                    );
                    b.set_message(p.status.clone());
                    b
                });
                bar.set_position(p.completed.unwrap_or(0).min(total));
            }
            _ => {
                if let Some(s) = step.take() {
                    s.finish();
                }
                let s = multi.add(ProgressBar::new_spinner());
                s.set_message(p.status.clone());
                s.enable_steady_tick(std::time::Duration::from_millis(100));
                *step = Some(s);
            }
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some((_, layers, step)) = &mut self.bars {
            for b in layers.values() {
                b.abandon();
            }
            if let Some(s) = step.take() {
                s.finish();
            }
        }
    }
}
