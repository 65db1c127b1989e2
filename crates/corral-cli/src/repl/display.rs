//! Showing an answer as it streams: the spinner until the first piece, thinking set apart
//! (`Thinking...` / `...done thinking.`, dimmed on a terminal), and word wrap.

use std::io::IsTerminal;
use std::time::Duration;

use super::wrap::Wrapper;

pub const GREY: &str = "\x1b[38;5;245m";
pub const BOLD: &str = "\x1b[1m";
pub const RESET: &str = "\x1b[0m";

/// Ollama's spinner, on stderr while nothing has arrived; drawn only on a terminal.
pub struct Spinner(Option<indicatif::ProgressBar>);

impl Spinner {
    pub fn start() -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner}")
                .expect("spinner template")
                .tick_strings(&["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏", " "]),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        Self(Some(bar))
    }

    /// No spinner (not a terminal, or nothing to wait for).
    pub fn none() -> Self {
        Self(None)
    }

    pub fn stop(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How answers are shown.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Wrap at this many columns (None: no wrap).
    pub wrap: Option<usize>,
    /// Escape codes for dimmed thinking.
    pub colour: bool,
    pub hide_thinking: bool,
}

/// The width to wrap answers at: stdout's terminal width, if it is a terminal and wrap is on.
pub fn wrap_width(wordwrap: bool) -> Option<usize> {
    if !wordwrap || !std::io::stdout().is_terminal() {
        return None;
    }
    terminal_size::terminal_size_of(std::io::stdout())
        .map(|(w, _)| w.0 as usize)
        .filter(|&w| w >= 10)
}

/// One answer being written to stdout.
pub struct Answer {
    style: Style,
    spinner: Spinner,
    wrapper: Option<Wrapper>,
    thinking_open: bool,
    thinking_ends_with_newline: bool,
    /// What was shown of the answer (thinking aside): kept in the conversation.
    pub content: String,
    pub thinking: String,
}

impl Answer {
    pub fn new(style: Style, spinner: Spinner) -> Self {
        Self {
            wrapper: style.wrap.map(Wrapper::new),
            style,
            spinner,
            thinking_open: false,
            thinking_ends_with_newline: true,
            content: String::new(),
            thinking: String::new(),
        }
    }

    /// A piece of the stream: its thinking and its content.
    pub fn push(&mut self, thinking: &str, content: &str) -> std::io::Result<()> {
        let mut out = String::new();
        if !thinking.is_empty() {
            self.thinking.push_str(thinking);
            if !self.style.hide_thinking {
                self.spinner.stop();
                if !self.thinking_open {
                    self.thinking_open = true;
                    out.push_str(&self.opening());
                }
                out.push_str(&self.wrapped(thinking));
                self.thinking_ends_with_newline = out.ends_with('\n');
            }
        }
        if !content.is_empty() {
            self.spinner.stop();
            self.content.push_str(content);
            out.push_str(&self.close_thinking());
            out.push_str(&self.wrapped(content));
        }
        crate::out(&out)
    }

    /// The end of the stream (or of what was shown of it).
    pub fn finish(&mut self) -> std::io::Result<()> {
        self.spinner.stop();
        let mut out = self
            .wrapper
            .as_mut()
            .map(Wrapper::finish)
            .unwrap_or_default();
        if !out.is_empty() {
            self.thinking_ends_with_newline = out.ends_with('\n');
        }
        // An answer that ended while thinking still closes the thinking (and its colour).
        out.push_str(&self.close_thinking());
        crate::out(&out)
    }

    /// True when nothing at all was written.
    pub fn is_empty(&self) -> bool {
        self.content.is_empty() && (self.thinking.is_empty() || self.style.hide_thinking)
    }

    fn wrapped(&mut self, text: &str) -> String {
        match self.wrapper.as_mut() {
            Some(w) => w.push(text),
            None => text.to_string(),
        }
    }

    fn opening(&self) -> String {
        if self.style.colour {
            format!("{GREY}{BOLD}Thinking...\n{RESET}{GREY}")
        } else {
            "Thinking...\n".into()
        }
    }

    fn close_thinking(&mut self) -> String {
        if !self.thinking_open {
            return String::new();
        }
        self.thinking_open = false;
        let mut out = self
            .wrapper
            .as_mut()
            .map(Wrapper::finish)
            .unwrap_or_default();
        let ended_with_newline = if out.is_empty() {
            self.thinking_ends_with_newline
        } else {
            out.ends_with('\n')
        };
        if !ended_with_newline {
            out.push('\n');
        }
        if self.style.colour {
            out.push_str(&format!("{GREY}{BOLD}...done thinking.\n\n{RESET}"));
        } else {
            out.push_str("...done thinking.\n\n");
        }
        // The answer starts a fresh line.
        self.wrapper = self.style.wrap.map(Wrapper::new);
        out
    }
}
