//! Bounding text by a token budget before it is copied and tokenized, so that a request far
//! longer than its context costs memory in proportion to the context, not to the request.

/// More bytes than any one token's text takes in the vocabularies Corral runs (their longest
/// pieces are runs of a few dozen spaces or dashes): `n` tokens never cover more than `n` times
/// this, so a text cut to that many bytes still holds every token a truncation would keep.
pub const MAX_TOKEN_BYTES: usize = 128;

/// Cut `text` that could not fit in `n_ctx` tokens down to what truncation would keep from it:
/// the first `keep` tokens' worth and the last `n_ctx` tokens' worth of bytes, at character
/// boundaries. Returns how many bytes were removed (0 when the text could fit).
pub fn bound_to_context(text: &mut String, n_ctx: usize, keep: usize) -> usize {
    let head = keep.saturating_mul(MAX_TOKEN_BYTES);
    let tail = n_ctx.saturating_mul(MAX_TOKEN_BYTES);
    if text.len() <= head.saturating_add(tail) {
        return 0;
    }
    let mut head_end = head;
    while !text.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = text.len() - tail;
    while !text.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    let removed = tail_start - head_end;
    text.replace_range(head_end..tail_start, "");
    removed
}

/// Cut `text` that could not fit in `n_ctx` tokens to its first `n_ctx` tokens' worth of bytes
/// (a fill-in-the-middle suffix keeps the text nearest the middle: its start). Returns how many
/// bytes were removed.
pub fn bound_head(text: &mut String, n_ctx: usize) -> usize {
    let mut end = n_ctx.saturating_mul(MAX_TOKEN_BYTES);
    if text.len() <= end {
        return 0;
    }
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let removed = text.len() - end;
    text.truncate(end);
    removed
}

/// Whether a text is certainly longer than `n_ctx` tokens, without tokenizing it.
pub fn certainly_exceeds(text: &str, n_ctx: usize) -> bool {
    text.len() > n_ctx.saturating_mul(MAX_TOKEN_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_left_alone() {
        let mut t = "hello".to_string();
        assert_eq!(bound_to_context(&mut t, 1, 0), 0);
        assert_eq!(t, "hello");
    }

    #[test]
    fn long_text_keeps_head_and_tail() {
        let mut t = format!(
            "{}{}{}",
            "H".repeat(256),
            "m".repeat(100_000),
            "T".repeat(512)
        );
        let removed = bound_to_context(&mut t, 4, 2);
        assert_eq!(t, format!("{}{}", "H".repeat(256), "T".repeat(512)));
        assert_eq!(removed, 100_000);
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let mut t = "é".repeat(10_000);
        bound_to_context(&mut t, 3, 1);
        assert!(t.len() <= 4 * MAX_TOKEN_BYTES + 2);
        assert!(t.chars().all(|c| c == 'é'));
    }
}
