//! Go templates come from Modelfiles and from requests (`template` on generate), so one must
//! not be able to take down the runner that renders it. gtmpl recurses on the call stack as it
//! parses nested actions and as it runs `{{ template }}` calls (its own limit, Go's 100,000
//! nested calls, is far past what a thread's stack holds), and it panics on some inputs (a
//! `printf` width over 65535). So before gtmpl sees a template, its nesting is bounded and
//! templates that call themselves are refused; what gtmpl does is run under `catch_unwind`, so
//! a panic is a template error, not a dead runner.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::TemplateError;

/// Actions nested inside each other (`if`, `range`, `with`, `define`, `block`), and
/// parentheses inside one action: far beyond any real template (Ollama's nest 4 or 5 deep),
/// far below what the stack holds.
pub(crate) const MAX_NESTING: usize = 100;

/// The line (from 1) at byte `at`.
fn line_at(source: &str, at: usize) -> usize {
    source[..at].matches('\n').count() + 1
}

/// Checks the nesting of actions and parentheses, and that `template` and `block` name their
/// template with a string (gtmpl also takes a pipeline, which Go does not, and whose target
/// cannot be checked for recursion before it runs).
pub(crate) fn check_shape(source: &str) -> Result<(), TemplateError> {
    let mut depth = 0usize;
    let mut rest = 0;
    while let Some(open) = source[rest..].find("{{") {
        let start = rest + open + 2;
        let Some(len) = source[start..].find("}}") else {
            break;
        };
        let action = source[start..start + len]
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        rest = start + len + 2;
        if action.starts_with("/*") {
            continue;
        }
        let line = || line_at(source, start);
        let mut words = action.split_whitespace();
        match words.next() {
            Some("if" | "range" | "with" | "define" | "block") => depth += 1,
            Some("end") => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_NESTING {
            return Err(TemplateError::Parse(format!(
                "line {}: actions nested more than {MAX_NESTING} deep",
                line()
            )));
        }
        if matches!(action.split_whitespace().next(), Some("template" | "block")) {
            let named = words
                .next()
                .is_some_and(|w| w.starts_with('"') || w.starts_with('`'));
            if !named {
                return Err(TemplateError::Parse(format!(
                    "line {}: a template must be named with a string",
                    line()
                )));
            }
        }
        let mut parens = 0usize;
        for c in action.chars() {
            match c {
                '(' => parens += 1,
                ')' => parens = parens.saturating_sub(1),
                _ => {}
            }
            if parens > MAX_NESTING {
                return Err(TemplateError::Parse(format!(
                    "line {}: parentheses nested more than {MAX_NESTING} deep",
                    line()
                )));
            }
        }
    }
    Ok(())
}

/// Refuses a template that can call itself, directly or through others: without data to end
/// it, such a template recurses until the runner's stack is gone. (Go allows recursion that
/// the data ends; no chat template needs it.) `bodies` are each defined template's text as
/// gtmpl prints it back (`{{template name}}` for a call).
pub(crate) fn check_recursion(bodies: &BTreeMap<String, String>) -> Result<(), TemplateError> {
    let calls = |body: &str| -> BTreeSet<String> {
        bodies
            .keys()
            .filter(|name| {
                let call = format!("{{{{template {name}");
                body.match_indices(&call).any(|(i, _)| {
                    let after = &body[i + call.len()..];
                    after.starts_with("}}") || after.starts_with(' ')
                })
            })
            .cloned()
            .collect()
    };
    let graph: BTreeMap<&String, BTreeSet<String>> =
        bodies.iter().map(|(n, b)| (n, calls(b))).collect();
    // Depth-first from each template, along the calls, looking for a way back to it.
    for start in bodies.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<String> = graph[start].iter().cloned().collect();
        while let Some(n) = stack.pop() {
            if &n == start {
                return Err(TemplateError::Parse(format!(
                    "template {start:?} calls itself: recursive templates are not supported"
                )));
            }
            if seen.insert(n.clone()) {
                if let Some(next) = graph.get(&n) {
                    stack.extend(next.iter().cloned());
                }
            }
        }
    }
    Ok(())
}

/// Runs `f`, turning a panic inside gtmpl into a template error with its message.
pub(crate) fn no_panic<T>(
    f: impl FnOnce() -> Result<T, TemplateError>,
    kind: fn(String) -> TemplateError,
) -> Result<T, TemplateError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the template engine failed".to_string());
        Err(kind(message))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_bounded() {
        let deep = "{{ if 1 }}".repeat(MAX_NESTING + 1) + &"{{ end }}".repeat(MAX_NESTING + 1);
        assert!(check_shape(&deep)
            .unwrap_err()
            .to_string()
            .contains("nested more than 100 deep"));
        let ok = "{{ if 1 }}".repeat(MAX_NESTING) + &"{{ end }}".repeat(MAX_NESTING);
        assert!(check_shape(&ok).is_ok());
        let parens = format!("{{{{ {}1{} }}}}", "(".repeat(101), ")".repeat(101));
        assert!(check_shape(&parens).is_err());
        // Comments and sibling blocks do not count.
        let siblings = "{{/* ((((( */}}".to_string() + &"{{ if 1 }}x{{ end }}".repeat(500);
        assert!(check_shape(&siblings).is_ok());
        assert!(check_shape("{{ template .Name }}").is_err());
        assert!(check_shape("{{ template \"a\" . }}").is_ok());
    }

    #[test]
    fn recursion_is_found_through_any_path() {
        let bodies = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(n, b)| (n.to_string(), b.to_string()))
                .collect()
        };
        let direct = bodies(&[("", "{{template a}}"), ("a", "x{{template a .}}")]);
        assert!(check_recursion(&direct)
            .unwrap_err()
            .to_string()
            .contains("\"a\" calls itself"));
        let mutual = bodies(&[
            ("", "{{template a}}"),
            ("a", "{{template b}}"),
            ("b", "{{template a}}"),
        ]);
        assert!(check_recursion(&mutual).is_err());
        // A name that is the start of another is not a call of it.
        let prefix = bodies(&[
            ("", "{{template ab}}"),
            ("a", "{{template ab}}"),
            ("ab", "y"),
        ]);
        assert!(check_recursion(&prefix).is_ok());
    }

    #[test]
    fn a_panic_is_an_error() {
        let r: Result<(), _> = no_panic(
            || panic!("Formatting argument out of range"),
            TemplateError::Render,
        );
        assert_eq!(
            r.unwrap_err().to_string(),
            "template error: Formatting argument out of range"
        );
    }
}
