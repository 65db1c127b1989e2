//! Go templates come from Modelfiles and from requests (`template` on generate), so one must
//! not be able to take down, or tie up, the runner that renders it.
//!
//! gotmpl already bounds what would overflow the stack: actions and parentheses nest at most
//! 100 deep when parsed, `{{ template }}` calls and nested actions at most 200 deep when run,
//! a template is named by a string (so its calls are known before it runs), and `range` has an
//! iteration budget. It catches panics in the functions we give it. What is left here:
//! - templates that call themselves are refused: gotmpl stops such a template at its depth
//!   limit, but one that calls itself twice runs 2^200 calls before it gets there;
//! - templates whose calls fan out (`a` calls `b` twice, `b` calls `c` twice, ...) are refused
//!   past `MAX_TEMPLATE_CALLS`, for the same reason without recursion;
//! - whatever else gotmpl does runs under `catch_unwind`, so a panic in the engine is a
//!   template error, not a dead runner.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use gotmpl::parse::{ListNode, Node, Parser};

use crate::TemplateError;

/// `{{ template }}` calls one rendering of the main template may make, counted through the
/// templates it calls (a call inside `range` counts once): far beyond any chat template.
pub(crate) const MAX_TEMPLATE_CALLS: u64 = 10_000;

/// The templates `list` calls, once per call.
fn calls(list: &ListNode, out: &mut Vec<String>) {
    for node in &list.nodes {
        match node {
            Node::Template(t) => out.push(t.name.to_string()),
            Node::List(l) => calls(l, out),
            Node::If(b) | Node::Range(b) | Node::With(b) => {
                calls(&b.body, out);
                if let Some(e) = &b.else_body {
                    calls(e, out);
                }
            }
            Node::Define(d) => calls(&d.body, out),
            Node::Text(_) | Node::Action(_) | Node::Break(_) | Node::Continue(_) => {}
        }
    }
}

/// Refuses a parsed template (`source`, as `t`) that can call itself, directly or through
/// others (Go allows recursion that the data ends; no chat template needs it), or whose calls
/// expand to more than `MAX_TEMPLATE_CALLS`.
pub(crate) fn check_calls(source: &str, t: &gotmpl::Template) -> Result<(), TemplateError> {
    // gotmpl keeps the main template's tree to itself; parsing again gives it.
    let (main, _) = Parser::new(source, "{{", "}}")
        .and_then(Parser::parse)
        .map_err(|e| TemplateError::Parse(e.to_string()))?;
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in t.templates() {
        let mut out = Vec::new();
        if let Some(body) = t.lookup(name) {
            calls(body, &mut out);
        }
        graph.insert(name.to_string(), out);
    }
    check_graph(&main_calls(&main), &graph)
}

fn main_calls(main: &ListNode) -> Vec<String> {
    let mut out = Vec::new();
    calls(main, &mut out);
    out
}

/// `main`: the calls of the main template; `graph`: each defined template's calls.
fn check_graph(
    main: &[String],
    graph: &BTreeMap<String, Vec<String>>,
) -> Result<(), TemplateError> {
    // Depth-first from each template, along the calls, looking for a way back to it.
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = graph[start].iter().collect();
        while let Some(n) = stack.pop() {
            if n == start {
                return Err(TemplateError::Parse(format!(
                    "template {start:?} calls itself: recursive templates are not supported"
                )));
            }
            if seen.insert(n) {
                if let Some(next) = graph.get(n) {
                    stack.extend(next.iter());
                }
            }
        }
    }
    // Without cycles, the calls a template makes, counting those of the templates it calls.
    fn expanded<'a>(
        name: &'a str,
        graph: &'a BTreeMap<String, Vec<String>>,
        memo: &mut BTreeMap<&'a str, u64>,
    ) -> u64 {
        if let Some(n) = memo.get(name) {
            return *n;
        }
        let n = graph.get(name).map_or(0, |callees| {
            callees.iter().fold(0u64, |sum, c| {
                sum.saturating_add(1)
                    .saturating_add(expanded(c, graph, memo))
            })
        });
        memo.insert(name, n);
        n
    }
    let mut memo = BTreeMap::new();
    let total = main.iter().fold(0u64, |sum, c| {
        sum.saturating_add(1)
            .saturating_add(expanded(c, graph, &mut memo))
    });
    if total > MAX_TEMPLATE_CALLS {
        return Err(TemplateError::Parse(format!(
            "template calls expand to more than {MAX_TEMPLATE_CALLS}"
        )));
    }
    Ok(())
}

/// Runs `f`, turning a panic inside the template engine into a template error with its
/// message.
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
    use crate::go::parse;

    #[test]
    fn recursion_is_found_through_any_path() {
        let direct = r#"{{ define "a" }}x{{ template "a" . }}{{ end }}{{ template "a" }}"#;
        assert!(parse(direct)
            .err()
            .unwrap()
            .to_string()
            .contains("\"a\" calls itself"));
        // Even where the main template does not call it.
        let mutual = r#"{{ define "a" }}{{ template "b" }}{{ end }}{{ define "b" }}{{ if 1 }}{{ template "a" }}{{ end }}{{ end }}"#;
        assert!(parse(mutual).is_err());
        // A block defines a template and calls it.
        assert!(parse(r#"{{ block "a" . }}{{ template "a" }}{{ end }}"#).is_err());
        // A name that is the start of another is not a call of it.
        let prefix = r#"{{ define "a" }}{{ template "ab" }}{{ end }}{{ define "ab" }}y{{ end }}{{ template "a" }}"#;
        assert!(parse(prefix).is_ok());
    }

    #[test]
    fn calls_that_fan_out_are_bounded() {
        // t0 is called 2^20 times without any recursion.
        let mut src = r#"{{ define "t0" }}x{{ end }}"#.to_string();
        for i in 1..=20 {
            src += &format!(
                r#"{{{{ define "t{i}" }}}}{{{{ template "t{p}" }}}}{{{{ template "t{p}" }}}}{{{{ end }}}}"#,
                p = i - 1
            );
        }
        let e = parse(&(src.clone() + r#"{{ template "t20" }}"#))
            .err()
            .unwrap();
        assert!(e.to_string().contains("expand to more than 10000"), "{e}");
        // Fewer levels render.
        let t = parse(&(src + r#"{{ template "t3" }}"#)).unwrap();
        assert_eq!(
            t.execute_to_string(&gotmpl::Value::Nil).unwrap(),
            "xxxxxxxx"
        );
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
