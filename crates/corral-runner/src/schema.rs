//! Why a JSON schema cannot become a grammar, in words. llama.cpp's converter reports only
//! that it failed (`ffi error -3`), and takes some schemas it cannot enforce (a pattern that is
//! not a regular expression becomes a grammar that matches something else). So a schema is
//! read here for the mistakes people make: a type that is no JSON type, an empty `enum`, a
//! `$ref` to nothing or to itself alone, a `pattern` that is not an anchored regular
//! expression, bounds the wrong way round, repetitions too large to expand.

use serde_json::Value;

/// Repetition counts (`minItems`, `minLength`, `{n}` in a pattern) that llama.cpp expands
/// into this many grammar rules fail past a few thousand; named when a conversion fails.
const LARGE_REPEAT: u64 = 1000;

const TYPES: [&str; 7] = [
    "string", "number", "integer", "boolean", "object", "array", "null",
];

/// A problem that makes the schema unusable whatever llama.cpp does with it: checked before
/// conversion. (`pattern`s only: every other mistake makes the conversion fail, and is then
/// explained by [`explain`].)
pub(crate) fn check(schema: &Value) -> Result<(), String> {
    walk(schema, "", &mut |path, s| match s.get("pattern") {
        Some(Value::String(p)) => {
            pattern_problem(p).map(|why| format!("{path}pattern {p:?}: {why}"))
        }
        Some(other) => Some(format!("{path}pattern must be a string, not {other}")),
        None => None,
    })
    .map_or(Ok(()), Err)
}

/// Why llama.cpp could not convert (or enforce) `schema`, if a known mistake explains it.
pub(crate) fn explain(schema: &Value) -> Option<String> {
    if is_only_self_ref(schema) {
        return Some("the schema is only a $ref to itself, with nothing to match".into());
    }
    walk(schema, "", &mut |path, s| problem(schema, path, s))
}

/// Visits every subschema (depth-first, with its JSON pointer) until `f` finds a problem.
fn walk(
    s: &Value,
    path: &str,
    f: &mut dyn FnMut(&str, &Value) -> Option<String>,
) -> Option<String> {
    let Value::Object(map) = s else {
        return None;
    };
    let at = |key: &str| format!("{path}{key}/");
    if let Some(p) = f(path, s) {
        return Some(p);
    }
    for key in ["items", "additionalProperties", "not", "contains"] {
        if let Some(sub) = map.get(key) {
            if let Some(p) = walk(sub, &at(key), f) {
                return Some(p);
            }
        }
    }
    for key in ["properties", "$defs", "definitions", "patternProperties"] {
        if let Some(Value::Object(subs)) = map.get(key) {
            for (name, sub) in subs {
                if let Some(p) = walk(sub, &format!("{path}{key}/{name}/"), f) {
                    return Some(p);
                }
            }
        }
    }
    for key in ["anyOf", "oneOf", "allOf", "prefixItems"] {
        if let Some(Value::Array(subs)) = map.get(key) {
            for (i, sub) in subs.iter().enumerate() {
                if let Some(p) = walk(sub, &format!("{path}{key}/{i}/"), f) {
                    return Some(p);
                }
            }
        }
    }
    None
}

/// The first mistake in one subschema (not its children).
fn problem(root: &Value, path: &str, s: &Value) -> Option<String> {
    match s.get("type") {
        None => {}
        Some(Value::String(t)) if TYPES.contains(&t.as_str()) => {}
        Some(Value::Array(ts))
            if ts
                .iter()
                .all(|t| t.as_str().is_some_and(|t| TYPES.contains(&t))) => {}
        Some(other) => {
            return Some(format!(
                "{path}type {other} is not a JSON schema type (one of {})",
                TYPES.join(", ")
            ))
        }
    }
    match s.get("enum") {
        None => {}
        Some(Value::Array(v)) if !v.is_empty() => {}
        Some(_) => return Some(format!("{path}enum must be a list of at least one value")),
    }
    if let Some(r) = s.get("$ref") {
        let Some(r) = r.as_str() else {
            return Some(format!("{path}$ref must be a string"));
        };
        let Some(pointer) = r.strip_prefix('#') else {
            return Some(format!(
                "{path}$ref {r:?}: only references inside the schema (\"#/$defs/...\") are supported"
            ));
        };
        if root.pointer(pointer).is_none() {
            return Some(format!("{path}$ref {r:?} points to nothing in the schema"));
        }
        if ref_loop(root, s) {
            return Some(format!(
                "{path}$ref {r:?} leads back to itself through references alone, with nothing to match"
            ));
        }
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
        if let Some(why) = pattern_problem(p) {
            return Some(format!("{path}pattern {p:?}: {why}"));
        }
    }
    for (low, high) in [
        ("minItems", "maxItems"),
        ("minLength", "maxLength"),
        ("minimum", "maximum"),
    ] {
        if let (Some(a), Some(b)) = (
            s.get(low).and_then(Value::as_f64),
            s.get(high).and_then(Value::as_f64),
        ) {
            if a > b {
                return Some(format!("{path}{low} {a} is above {high} {b}"));
            }
        }
    }
    for key in ["minItems", "maxItems", "minLength", "maxLength"] {
        if s.get(key)
            .and_then(Value::as_u64)
            .is_some_and(|n| n > LARGE_REPEAT)
        {
            return Some(format!(
                "{path}{key} {} is more repetitions than a grammar can expand (at most {LARGE_REPEAT})",
                s[key]
            ));
        }
    }
    None
}

/// Whether a schema that is only a `$ref` leads, through schemas that are only `$ref`s, back
/// to one already seen: a grammar rule that starts with itself.
fn ref_loop<'a>(root: &'a Value, mut s: &'a Value) -> bool {
    let mut seen = Vec::new();
    while let Some(r) = s
        .as_object()
        .filter(|m| m.len() == 1)
        .and_then(|m| m.get("$ref"))
        .and_then(Value::as_str)
    {
        if seen.contains(&r) {
            return true;
        }
        seen.push(r);
        match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
            Some(next) => s = next,
            None => return false,
        }
    }
    false
}

fn is_only_self_ref(s: &Value) -> bool {
    s.as_object()
        .is_some_and(|m| m.len() == 1 && m.get("$ref").and_then(Value::as_str) == Some("#"))
}

/// What is wrong with a `pattern` for llama.cpp: it must be anchored (`^...$`, llama.cpp's
/// rule), a regular expression, and repeat nothing more than a grammar can expand.
fn pattern_problem(p: &str) -> Option<String> {
    if !(p.starts_with('^') && p.ends_with('$')) {
        return Some("a pattern must start with ^ and end with $".into());
    }
    let hir = match regex_syntax::Parser::new().parse(p) {
        Ok(h) => h,
        Err(e) => {
            let why = e.to_string();
            let last = why.lines().last().unwrap_or_default().trim();
            let last = last.strip_prefix("error: ").unwrap_or(last);
            return Some(format!("not a regular expression ({last})"));
        }
    };
    let big = |h: &regex_syntax::hir::Hir| {
        fn visit(h: &regex_syntax::hir::Hir) -> bool {
            use regex_syntax::hir::HirKind;
            match h.kind() {
                HirKind::Repetition(r) => {
                    u64::from(r.min) > LARGE_REPEAT
                        || r.max.is_some_and(|m| u64::from(m) > LARGE_REPEAT)
                        || visit(&r.sub)
                }
                HirKind::Capture(c) => visit(&c.sub),
                HirKind::Concat(hs) | HirKind::Alternation(hs) => hs.iter().any(visit),
                _ => false,
            }
        }
        visit(h)
    };
    big(&hir).then(|| {
        format!("it repeats more than a grammar can expand (at most {LARGE_REPEAT} times)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mistakes_are_named() {
        for (schema, want) in [
            (
                json!({"type": "nonsense"}),
                "type \"nonsense\" is not a JSON schema type",
            ),
            (json!({"$ref": "#"}), "only a $ref to itself"),
            (
                json!({"$ref": "#/$defs/nope"}),
                "$ref \"#/$defs/nope\" points to nothing",
            ),
            (
                json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
                "leads back to itself",
            ),
            (
                json!({"$ref": "https://example.com/s.json"}),
                "only references inside the schema",
            ),
            (
                json!({"enum": []}),
                "enum must be a list of at least one value",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "array", "minItems": 5000}}}),
                "properties/a/minItems 5000 is more repetitions",
            ),
            (
                json!({"type": "string", "minLength": 5, "maxLength": 2}),
                "minLength 5 is above maxLength 2",
            ),
            (
                json!({"type": "string", "pattern": "^a{1000000}$"}),
                "repeats more than a grammar can expand",
            ),
            (
                json!({"type": "string", "pattern": "^(((($"}),
                "not a regular expression",
            ),
            (
                json!({"type": "string", "pattern": "[a-z]+"}),
                "must start with ^ and end with $",
            ),
        ] {
            let got = explain(&schema).unwrap_or_default();
            assert!(got.contains(want), "{schema}: {got}");
        }
        assert_eq!(
            explain(&json!({"type": "object", "properties": {"n": {"type": "integer"}}})),
            None
        );
        assert!(
            check(&json!({"properties": {"p": {"type": "string", "pattern": "^[a-$"}}}))
                .unwrap_err()
                .starts_with("properties/p/pattern")
        );
        assert!(check(&json!({"type": "string", "pattern": "^[a-z]{2,5}$"})).is_ok());
    }
}
