//! Tools and tool calls as Ollama's Go templates see them, and how they print.
//!
//! In Ollama a template gets Go structs: `.Function.Name`, `.Function.Parameters.Properties`
//! are fields, while the keys of `properties` and of a call's `arguments` are the user's own
//! (sorted when ranged over, as Go ranges over maps). Printed bare (`{{ . }}`, `{{ .Function }}`,
//! `{{ .Function.Arguments }}`), the types with a `String()` method in Ollama's `api/types.go`
//! print what `json.Marshal` gives: struct fields in declaration order under their JSON names,
//! empty `omitempty` fields left out, map keys sorted. Library templates rely on that (llama3.2
//! prints each tool with `{{ . }}`, qwen2.5 writes `"function": {{ .Function }}`). Such values
//! are `gotmpl::Value::Stringer`s: they print as that JSON and are maps and lists for the rest.
//!
//! With a `String()` in Ollama: `Tools`, `Tool`, `ToolFunction`, `ToolFunctionParameters`, the
//! arguments of a call and the `properties` map (JSON), `PropertyType` (`string`, or
//! `[string null]`). A single `ToolProperty` has none, so Go would print its struct with
//! pointer addresses; it prints its JSON here. A tool call and its `.Function` have none
//! either: Go prints them as structs, `{id {index name arguments}}`, and so do we.
//!
//! The structs below mirror Ollama's so that serde writes their JSON in Go's field order.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;

use gotmpl::Value as GoValue;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// `null` or a missing field reads as the type's zero value, as Go's decoder leaves it.
fn zero_if_null<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `api.Tool`.
#[derive(Debug, Default, Deserialize, Serialize)]
struct Tool {
    #[serde(rename = "type", default, deserialize_with = "zero_if_null")]
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    items: Option<Value>,
    #[serde(default, deserialize_with = "zero_if_null")]
    function: ToolFunction,
}

/// `api.ToolFunction`.
#[derive(Debug, Default, Deserialize, Serialize)]
struct ToolFunction {
    #[serde(default, deserialize_with = "zero_if_null")]
    name: String,
    #[serde(
        default,
        deserialize_with = "zero_if_null",
        skip_serializing_if = "String::is_empty"
    )]
    description: String,
    #[serde(default, deserialize_with = "zero_if_null")]
    parameters: ToolFunctionParameters,
}

/// `api.ToolFunctionParameters`; `properties` is a pointer in Go, `null` when unset.
#[derive(Debug, Default, Deserialize, Serialize)]
struct ToolFunctionParameters {
    #[serde(rename = "type", default, deserialize_with = "zero_if_null")]
    kind: String,
    #[serde(rename = "$defs", default, skip_serializing_if = "Option::is_none")]
    defs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    items: Option<Value>,
    #[serde(
        default,
        deserialize_with = "zero_if_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    required: Vec<String>,
    #[serde(default)]
    properties: Option<BTreeMap<String, ToolProperty>>,
}

/// `api.ToolProperty`.
#[derive(Debug, Default, Deserialize, Serialize)]
struct ToolProperty {
    #[serde(
        rename = "anyOf",
        default,
        deserialize_with = "zero_if_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    any_of: Vec<ToolProperty>,
    #[serde(
        rename = "type",
        default,
        deserialize_with = "zero_if_null",
        skip_serializing_if = "PropertyType::is_empty"
    )]
    kind: PropertyType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    items: Option<Value>,
    #[serde(
        default,
        deserialize_with = "zero_if_null",
        skip_serializing_if = "String::is_empty"
    )]
    description: String,
    #[serde(
        rename = "enum",
        default,
        deserialize_with = "zero_if_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    enum_values: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    properties: Option<BTreeMap<String, ToolProperty>>,
}

/// `api.PropertyType`: one type name or several; written back as a string when there is one.
#[derive(Debug, Default)]
struct PropertyType(Vec<String>);

impl PropertyType {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Its `String()`: the name, or Go's `[a b]` for several.
    fn text(&self) -> String {
        match self.0.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(" ")),
        }
    }
}

impl<'de> Deserialize<'de> for PropertyType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(PropertyType(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }))
    }
}

impl Serialize for PropertyType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

/// `.Tools`: the request's tools as Ollama's types, printing as their JSON; an error when one
/// of them is not a tool (Ollama refuses such a request).
pub(crate) fn tools_value(tools: &[Value]) -> Result<GoValue, String> {
    let tools: Vec<Tool> = tools
        .iter()
        .map(|t| Tool::deserialize(t).map_err(|e| format!("tools: {e}")))
        .collect::<Result<_, _>>()?;
    let items: Vec<GoValue> = tools.iter().map(tool_value).collect();
    // A nil `api.Tools` prints `null`.
    let text = if tools.is_empty() {
        "null".to_string()
    } else {
        go_json(&tools)
    };
    Ok(GoValue::stringer(GoValue::from(items), text))
}

fn object(fields: impl IntoIterator<Item = (&'static str, GoValue)>) -> GoValue {
    let map: BTreeMap<String, GoValue> = fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    GoValue::from(map)
}

fn any_value(v: &Option<Value>) -> GoValue {
    v.as_ref().map_or(GoValue::Nil, json_to_go)
}

fn strings(v: &[String]) -> GoValue {
    GoValue::from(
        v.iter()
            .map(|s| GoValue::from(s.as_str()))
            .collect::<Vec<_>>(),
    )
}

fn tool_value(t: &Tool) -> GoValue {
    let f = &t.function;
    let p = &f.parameters;
    let parameters = GoValue::stringer(
        object([
            ("Type", GoValue::from(p.kind.as_str())),
            ("Defs", any_value(&p.defs)),
            ("Items", any_value(&p.items)),
            ("Required", strings(&p.required)),
            ("Properties", properties_value(&p.properties)),
        ]),
        go_json(p),
    );
    let function = GoValue::stringer(
        object([
            ("Name", GoValue::from(f.name.as_str())),
            ("Description", GoValue::from(f.description.as_str())),
            ("Parameters", parameters),
        ]),
        go_json(f),
    );
    GoValue::stringer(
        object([
            ("Type", GoValue::from(t.kind.as_str())),
            ("Items", any_value(&t.items)),
            ("Function", function),
        ]),
        go_json(t),
    )
}

/// A `properties` map: ranged over by name, printing as its JSON (`{}` when unset, as
/// Ollama's template map prints).
fn properties_value(props: &Option<BTreeMap<String, ToolProperty>>) -> GoValue {
    let Some(props) = props else {
        return GoValue::stringer(object([]), "{}");
    };
    let map: BTreeMap<String, GoValue> = props
        .iter()
        .map(|(name, p)| (name.clone(), property_value(p)))
        .collect();
    GoValue::stringer(GoValue::from(map), go_json(props))
}

fn property_value(p: &ToolProperty) -> GoValue {
    let any_of: Vec<GoValue> = p.any_of.iter().map(property_value).collect();
    let enum_values: Vec<GoValue> = p.enum_values.iter().map(json_to_go).collect();
    let nested = match &p.properties {
        Some(_) => properties_value(&p.properties),
        None => GoValue::Nil,
    };
    let fields = object([
        ("AnyOf", GoValue::from(any_of)),
        // `PropertyType` is a list of names that prints as its `String()`.
        ("Type", GoValue::stringer(strings(&p.kind.0), p.kind.text())),
        ("Items", any_value(&p.items)),
        ("Description", GoValue::from(p.description.as_str())),
        ("Enum", GoValue::from(enum_values)),
        ("Properties", nested),
    ]);
    GoValue::stringer(fields, go_json(p))
}

/// A message's tool call (`{"id", "function": {"index", "name", "arguments"}}`) as Ollama's
/// template struct: `.ID`, `.Function.Index`, `.Function.Name`, `.Function.Arguments`.
pub(crate) fn tool_call_value(call: &Value) -> GoValue {
    let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
    let f = call.get("function").unwrap_or(&Value::Null);
    let index = f.get("index").and_then(Value::as_i64).unwrap_or(0);
    let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
    let arguments = arguments_value(f.get("arguments").unwrap_or(&Value::Null));
    // Go prints these structs (they have no `String()`) as `{field field ...}`.
    let function_text = format!("{{{index} {name} {arguments}}}");
    let function = GoValue::stringer(
        object([
            ("Index", GoValue::Int(index)),
            ("Name", GoValue::from(name)),
            ("Arguments", arguments),
        ]),
        function_text.as_str(),
    );
    let text = format!("{{{id} {function_text}}}");
    GoValue::stringer(
        object([("ID", GoValue::from(id)), ("Function", function)]),
        text,
    )
}

/// A call's arguments: a map with the model's keys, printing as its JSON (`{}` when none). An
/// OpenAI-style JSON string is read as the object it holds; a string that holds none stays a
/// string.
fn arguments_value(arguments: &Value) -> GoValue {
    let parsed;
    let arguments = match arguments {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => {
                parsed = v;
                &parsed
            }
            _ => return GoValue::from(s.as_str()),
        },
        other => other,
    };
    match arguments {
        Value::Object(_) => GoValue::stringer(json_to_go(arguments), go_json(arguments)),
        Value::Null => GoValue::stringer(object([]), "{}"),
        other => json_to_go(other),
    }
}

/// Ollama's `toTypeScriptType`: a property's type as TypeScript (`string | null`); `any` for
/// anything that is not a property.
pub(crate) fn typescript_type(v: &GoValue) -> String {
    let v = v.underlying();
    let field = |name| v.field(name).map(GoValue::underlying);
    if let Some(GoValue::List(any_of)) = field("AnyOf") {
        if !any_of.is_empty() {
            return any_of
                .iter()
                .map(typescript_type)
                .collect::<Vec<_>>()
                .join(" | ");
        }
    }
    let Some(GoValue::List(types)) = field("Type") else {
        return "any".to_string();
    };
    if types.is_empty() {
        return "any".to_string();
    }
    types
        .iter()
        .map(|t| match t.as_str() {
            Some("string") => "string",
            Some("number" | "integer") => "number",
            Some("boolean") => "boolean",
            Some("array") => "any[]",
            Some("object") => "Record<string, any>",
            Some("null") => "null",
            _ => "any",
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// JSON data (a tool's `items`, a call's arguments) as template values.
pub(crate) fn json_to_go(v: &Value) -> GoValue {
    match v {
        Value::Null => GoValue::Nil,
        Value::Bool(b) => GoValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => GoValue::Int(i),
            (None, Some(u)) => GoValue::Uint(u),
            _ => GoValue::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => GoValue::from(s.as_str()),
        Value::Array(a) => GoValue::from(a.iter().map(json_to_go).collect::<Vec<_>>()),
        Value::Object(o) => {
            let map: BTreeMap<String, GoValue> =
                o.iter().map(|(k, v)| (k.clone(), json_to_go(v))).collect();
            GoValue::from(map)
        }
    }
}

/// Ollama's `json` function (Go's `json.Marshal`) for a template value: a value that prints as
/// JSON is that JSON; maps are objects with their keys as they are, sorted.
pub(crate) fn value_json(v: &GoValue) -> String {
    let mut out = String::new();
    write_value_json(v, &mut out);
    out
}

fn write_value_json(v: &GoValue, out: &mut String) {
    match v {
        GoValue::Stringer(s) => {
            if serde_json::from_str::<serde::de::IgnoredAny>(&s.text).is_ok() {
                out.push_str(&s.text);
            } else {
                write_value_json(&s.value, out);
            }
        }
        GoValue::Nil | GoValue::Function(_) => out.push_str("null"),
        GoValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        GoValue::Int(n) => {
            let _ = write!(out, "{n}");
        }
        GoValue::Uint(n) => {
            let _ = write!(out, "{n}");
        }
        GoValue::Float(f) => out.push_str(&go_json(f)),
        GoValue::String(s) => out.push_str(&go_json(&**s)),
        GoValue::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value_json(item, out);
            }
            out.push(']');
        }
        GoValue::Map(m) => {
            out.push('{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&go_json(&**k));
                out.push(':');
                write_value_json(v, out);
            }
            out.push('}');
        }
    }
}

/// `v` as Go's `json.Marshal` writes it. serde writes the structure (fields in declaration
/// order; `serde_json` maps are sorted, as Go sorts map keys); `GoFormatter` adds what Go's
/// encoder does differently from serde_json's, which serde_json has no option for.
pub(crate) fn go_json<T: Serialize + ?Sized>(v: &T) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    // Writing to a Vec does not fail, and these values have string keys only.
    if v.serialize(&mut ser).is_err() {
        return "null".to_string();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// What Go's `encoding/json` writes differently: `<`, `>`, `&`, U+2028 and U+2029 escaped as
/// `\u003c`..., control characters other than `\n`, `\r`, `\t` as `\u00XX`, and floats as Go
/// formats them (`1`, not `1.0`; `1e-7`, `1e+21`).
struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escaped.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        escape: serde_json::ser::CharEscape,
    ) -> io::Result<()> {
        use serde_json::ser::CharEscape;
        let s = match escape {
            CharEscape::Quote => "\\\"".to_string(),
            CharEscape::ReverseSolidus => "\\\\".to_string(),
            CharEscape::LineFeed => "\\n".to_string(),
            CharEscape::CarriageReturn => "\\r".to_string(),
            CharEscape::Tab => "\\t".to_string(),
            CharEscape::Backspace => "\\u0008".to_string(),
            CharEscape::FormFeed => "\\u000c".to_string(),
            CharEscape::AsciiControl(b) => format!("\\u{b:04x}"),
            // `CharEscape` is non-exhaustive in newer serde_json; its other escapes are
            // the same in Go.
            #[allow(unreachable_patterns)]
            _ => return serde_json::ser::CompactFormatter.write_char_escape(writer, escape),
        };
        writer.write_all(s.as_bytes())
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(go_float(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        writer.write_all(go_float(f64::from(value)).as_bytes())
    }
}

/// A float as Go's JSON encoder writes it: plain decimals from 1e-6 to 1e21, else exponent form
/// with a sign (`1e-7`, `1e+21`).
fn go_float(f: f64) -> String {
    if !f.is_finite() {
        // Go refuses these; `json.Marshal` fails and Ollama's `json` prints nothing.
        return "null".to_string();
    }
    let abs = f.abs();
    if abs == 0.0 || (1e-6..1e21).contains(&abs) {
        // Rust's shortest round-trip decimal, without exponent, as Go's 'f' format.
        return format!("{f}");
    }
    let e = format!("{f:e}");
    match e.split_once('e') {
        Some((m, exp)) if !exp.starts_with('-') => format!("{m}e+{exp}"),
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_is_written_as_go_writes_it() {
        assert_eq!(
            go_json(&json!({"b": [1.0, 0.5, 1e-7, 1e21], "a": "<x> & \u{8}\u{1}\n"})),
            r#"{"a":"\u003cx\u003e \u0026 \u0008\u0001\n","b":[1,0.5,1e-7,1e+21]}"#
        );
    }

    #[test]
    fn property_types_read_and_print_as_ollama() {
        let p: ToolProperty =
            serde_json::from_value(json!({"type": ["string", "null"], "description": null}))
                .unwrap();
        assert_eq!(p.kind.text(), "[string null]");
        assert_eq!(go_json(&p), r#"{"type":["string","null"]}"#);
        assert_eq!(typescript_type(&property_value(&p)), "string | null");
        let one: ToolProperty = serde_json::from_value(json!({"type": "integer"})).unwrap();
        assert_eq!(go_json(&one), r#"{"type":"integer"}"#);
        assert_eq!(typescript_type(&property_value(&one)), "number");
        let any_of: ToolProperty =
            serde_json::from_value(json!({"anyOf": [{"type": "array"}, {"type": "object"}]}))
                .unwrap();
        assert_eq!(
            typescript_type(&property_value(&any_of)),
            "any[] | Record<string, any>"
        );
        assert_eq!(typescript_type(&GoValue::from("x")), "any");
    }
}
