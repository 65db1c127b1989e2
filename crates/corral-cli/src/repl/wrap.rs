//! Word wrap for answers as they stream in: words are never split across lines (unless one is
//! longer than a whole line), and widths are terminal columns, so wide characters count twice.
//!
//! Ollama prints each character at once and, when a word overflows, moves the cursor back
//! over it and reprints it on the next line. Here a word is held until it ends (a space, a
//! newline, a wide character or the end of the answer) and then placed, so the output is
//! plain text with no cursor movement: the same on a terminal, in a log or in a pipe. Tokens
//! mostly carry a leading space, so a word shows up as the token after it arrives.

use unicode_width::UnicodeWidthChar;

/// Wraps a stream of text at `width` columns.
#[derive(Debug)]
pub struct Wrapper {
    width: usize,
    /// Columns used on the current line.
    column: usize,
    /// The word being collected, and its width.
    word: String,
    word_width: usize,
    /// Blanks after the last placed word, written only if the next word fits after them.
    blanks: String,
    /// The current line was started by a wrap: its leading blanks are dropped.
    wrapped: bool,
}

impl Wrapper {
    /// A wrapper for lines of `width` columns (at least 1).
    pub fn new(width: usize) -> Self {
        Self {
            width: width.max(1),
            column: 0,
            word: String::new(),
            word_width: 0,
            blanks: String::new(),
            wrapped: false,
        }
    }

    /// Feed a piece of the answer; returns what can be printed now.
    pub fn push(&mut self, text: &str) -> String {
        let mut out = String::new();
        for ch in text.chars() {
            match ch {
                '\n' => {
                    self.place_word(&mut out);
                    self.blanks.clear();
                    out.push('\n');
                    self.column = 0;
                    self.wrapped = false;
                }
                ' ' | '\t' => {
                    self.place_word(&mut out);
                    if !(self.wrapped && self.column == 0) {
                        self.blanks.push(ch);
                    }
                }
                '\r' => {}
                _ => {
                    let w = ch.width().unwrap_or(0);
                    if w >= 2 {
                        // Wide characters (CJK) are words of their own: lines may break
                        // between any two of them.
                        self.place_word(&mut out);
                        self.word.push(ch);
                        self.word_width = w;
                        self.place_word(&mut out);
                    } else {
                        if self.word_width + w > self.width {
                            // A word longer than a line: break it where the line ends.
                            self.place_word(&mut out);
                        }
                        self.word.push(ch);
                        self.word_width += w;
                    }
                }
            }
        }
        out
    }

    /// The end of the answer: whatever is held back.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        self.place_word(&mut out);
        self.blanks.clear();
        out
    }

    /// True when nothing has been printed on the current line.
    pub fn at_line_start(&self) -> bool {
        self.column == 0 && self.word.is_empty()
    }

    fn place_word(&mut self, out: &mut String) {
        if self.word.is_empty() {
            return;
        }
        let blanks = blanks_width(&self.blanks, self.column);
        if self.column > 0 && self.column + blanks + self.word_width > self.width {
            out.push('\n');
            self.column = 0;
            self.wrapped = true;
        } else {
            out.push_str(&self.blanks);
            self.column += blanks;
        }
        self.blanks.clear();
        out.push_str(&self.word);
        self.column += self.word_width;
        self.word.clear();
        self.word_width = 0;
        if self.column >= self.width {
            // A full line: the terminal would wrap the next character by itself.
            out.push('\n');
            self.column = 0;
            self.wrapped = true;
        }
    }
}

/// Columns taken by blanks written at `column` (tabs go to the next multiple of eight).
fn blanks_width(blanks: &str, column: usize) -> usize {
    let mut c = column;
    for ch in blanks.chars() {
        if ch == '\t' {
            c = (c / 8 + 1) * 8;
        } else {
            c += 1;
        }
    }
    c - column
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(width: usize, pieces: &[&str]) -> String {
        let mut w = Wrapper::new(width);
        let mut out: String = pieces.iter().map(|p| w.push(p)).collect();
        out.push_str(&w.finish());
        out
    }

    fn widths(text: &str) -> Vec<usize> {
        text.lines()
            .map(|l| l.chars().map(|c| c.width().unwrap_or(0)).sum())
            .collect()
    }

    #[test]
    fn words_move_to_the_next_line_whole() {
        let text = "Please provide more details about what you would like to know.";
        let out = wrap(20, &[text]);
        assert_eq!(
            out,
            "Please provide more\ndetails about what\nyou would like to\nknow."
        );
        // Token by token gives the same.
        let tokens: Vec<String> = text.split_inclusive(' ').map(str::to_string).collect();
        let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        assert_eq!(wrap(20, &refs), out);
        // Split inside words too.
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(wrap(20, &refs), out);
    }

    #[test]
    fn newlines_and_indentation_are_kept() {
        assert_eq!(
            wrap(12, &["a b\n\n  - one two three"]),
            "a b\n\n  - one two\nthree"
        );
    }

    #[test]
    fn long_words_are_broken_at_the_line_end() {
        let out = wrap(8, &["see https://example.com/a/very/long/path ok"]);
        assert!(widths(&out).iter().all(|&w| w <= 8), "{out:?}");
        assert_eq!(
            out.replace('\n', ""),
            "seehttps://example.com/a/very/long/path ok"
        );
    }

    #[test]
    fn wide_characters_count_two_columns() {
        let out = wrap(10, &["日本語のテキストを折り返す"]);
        assert!(widths(&out).iter().all(|&w| w <= 10), "{out:?}");
        assert_eq!(widths(&out)[0], 10);
        assert_eq!(out.replace('\n', ""), "日本語のテキストを折り返す");
    }
}
