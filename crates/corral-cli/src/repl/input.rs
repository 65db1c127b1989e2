//! Reading what the user types: the line editor (rustyline: editing keys, history, bracketed
//! paste, the dimmed placeholder) and the `"""` multi-line messages built from its lines.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustyline::error::ReadlineError;
use rustyline::history::{FileHistory, History as _};
use rustyline::{
    Cmd, ConditionalEventHandler, Config, Event, EventContext, EventHandler, KeyEvent, RepeatCount,
};

pub const PROMPT: &str = ">>> ";
pub const CONTINUATION: &str = "... ";
pub const PLACEHOLDER: &str = "Send a message (/? for help)";
pub const BLOCK_PLACEHOLDER: &str = "Use \"\"\" to end multi-line input";

/// One thing read from the terminal.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Line(String),
    /// Ctrl-C; `empty` when nothing had been typed on the line.
    Interrupted {
        empty: bool,
    },
    /// Ctrl-D on an empty line.
    Eof,
}

/// The line editor with the REPL's history.
pub struct LineEditor {
    editor: rustyline::Editor<Helper, FileHistory>,
    history_file: Option<PathBuf>,
    /// Lines go to the history file (`/set history`); off by `CORRAL_NOHISTORY` or `/set
    /// nohistory`. Either way they stay in this session's history for the Up key.
    pub save_history: bool,
    line_was_empty: Arc<AtomicBool>,
}

impl LineEditor {
    /// An editor whose history lives in `history_file` (read now, written after each line).
    pub fn new(history_file: Option<PathBuf>, save_history: bool) -> anyhow::Result<Self> {
        let config = Config::builder()
            .auto_add_history(false)
            .max_history_size(100)?
            .build();
        let mut editor = rustyline::Editor::with_config(config)?;
        editor.set_helper(Some(Helper {
            placeholder: PLACEHOLDER,
        }));
        let line_was_empty = Arc::new(AtomicBool::new(true));
        editor.bind_sequence(
            KeyEvent::ctrl('C'),
            EventHandler::Conditional(Box::new(InterruptProbe(line_was_empty.clone()))),
        );
        if let Some(f) = &history_file {
            if f.exists() {
                // A history file that cannot be read is not worth stopping for.
                let _ = editor.load_history(f);
            }
        }
        Ok(Self {
            editor,
            history_file,
            save_history,
            line_was_empty,
        })
    }

    /// Read one line with `prompt` (and the placeholder that goes with it).
    pub fn read(&mut self, continuation: bool) -> anyhow::Result<Read> {
        let (prompt, placeholder) = if continuation {
            (CONTINUATION, BLOCK_PLACEHOLDER)
        } else {
            (PROMPT, PLACEHOLDER)
        };
        if let Some(h) = self.editor.helper_mut() {
            h.placeholder = placeholder;
        }
        self.line_was_empty.store(true, Ordering::Relaxed);
        // rustyline blocks on the terminal; this thread lends itself to it.
        match tokio::task::block_in_place(|| self.editor.readline(prompt)) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    self.editor.add_history_entry(line.as_str())?;
                    self.save();
                }
                Ok(Read::Line(line))
            }
            Err(ReadlineError::Interrupted) => Ok(Read::Interrupted {
                empty: self.line_was_empty.load(Ordering::Relaxed),
            }),
            Err(ReadlineError::Eof) => Ok(Read::Eof),
            // Reading the terminal cannot break a pipe: writing the prompt to a closed
            // standard output did.
            Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                Err(crate::StdoutClosed.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn save(&mut self) {
        if !self.save_history {
            return;
        }
        if let Some(f) = &self.history_file {
            if let Some(dir) = f.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            // rustyline writes the file whole each time, through a temporary file.
            if let Err(e) = self.editor.history_mut().save(f) {
                eprintln!("warning: could not save history to {}: {e}", f.display());
            }
        }
    }

    /// `/set history`: start saving again, this session's lines included.
    pub fn enable_history(&mut self) {
        self.save_history = true;
        self.save();
    }
}

/// Notes whether the line was empty when Ctrl-C was pressed, then interrupts as usual.
struct InterruptProbe(Arc<AtomicBool>);

impl ConditionalEventHandler for InterruptProbe {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext) -> Option<Cmd> {
        self.0.store(ctx.line().is_empty(), Ordering::Relaxed);
        Some(Cmd::Interrupt)
    }
}

/// The placeholder on an empty line, dimmed; never completed into the line.
#[derive(rustyline::Helper, rustyline::Completer, rustyline::Validator)]
struct Helper {
    placeholder: &'static str,
}

struct Placeholder(&'static str);

impl rustyline::hint::Hint for Placeholder {
    fn display(&self) -> &str {
        self.0
    }
    fn completion(&self) -> Option<&str> {
        None
    }
}

impl rustyline::hint::Hinter for Helper {
    type Hint = Placeholder;
    fn hint(&self, line: &str, _pos: usize, _: &rustyline::Context<'_>) -> Option<Placeholder> {
        line.is_empty().then_some(Placeholder(self.placeholder))
    }
}

impl rustyline::highlight::Highlighter for Helper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> std::borrow::Cow<'h, str> {
        format!("{}{hint}{}", super::display::GREY, super::display::RESET).into()
    }
}

/// What a `"""` block is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Message,
    System,
}

/// A multi-line block being typed: it starts at a line beginning with `"""` (or `/set system
/// """`) and ends at a line ending with `"""`; its lines are joined with `\n`.
#[derive(Debug, Default)]
pub struct Block {
    open: Option<BlockKind>,
    text: String,
}

impl Block {
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Start a block with the text after the opening `"""`. Returns the whole text at once
    /// when the same line closes it (`"""one line"""`).
    pub fn start(&mut self, kind: BlockKind, rest: &str) -> Option<(BlockKind, String)> {
        self.text.clear();
        self.open = Some(kind);
        self.push(rest)
    }

    /// Add a line; returns the block's kind and text when this line closes it.
    pub fn push(&mut self, line: &str) -> Option<(BlockKind, String)> {
        let kind = self.open?;
        match line.strip_suffix("\"\"\"") {
            Some(before) => {
                self.text.push_str(before);
                self.open = None;
                Some((kind, std::mem::take(&mut self.text)))
            }
            None => {
                self.text.push_str(line);
                self.text.push('\n');
                None
            }
        }
    }

    /// Ctrl-C inside a block drops it.
    pub fn cancel(&mut self) {
        self.open = None;
        self.text.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_join_lines_until_a_closing_quote() {
        let mut b = Block::default();
        assert_eq!(b.start(BlockKind::Message, "hello"), None);
        assert!(b.is_open());
        assert_eq!(b.push("big"), None);
        assert_eq!(
            b.push("world\"\"\""),
            Some((BlockKind::Message, "hello\nbig\nworld".to_string()))
        );
        assert!(!b.is_open());
        assert_eq!(
            b.start(BlockKind::Message, "one line\"\"\""),
            Some((BlockKind::Message, "one line".to_string()))
        );
        // A bare opening line starts the text with a newline, as Ollama's does.
        assert_eq!(b.start(BlockKind::System, ""), None);
        assert_eq!(
            b.push("\"\"\""),
            Some((BlockKind::System, "\n".to_string()))
        );
        b.start(BlockKind::Message, "x");
        b.cancel();
        assert!(!b.is_open());
        assert_eq!(b.push("y\"\"\""), None);
    }
}
