//! Ollama's Modelfile format.
//!
//! ```text
//! # comment
//! FROM ./model.gguf
//! PARAMETER temperature 0.7
//! PARAMETER stop "<|im_end|>"
//! SYSTEM """You are brief."""
//! TEMPLATE """{{ .Prompt }}"""
//! MESSAGE user Hello
//! ```
//!
//! Keywords are case-insensitive, parameter names and message roles are not. A value is either
//! unquoted (trimmed), `"..."` or `"""..."""`; quoted values may span lines and keep their inner
//! whitespace exactly; there is no escape processing. Errors carry the line they were found on.

use std::collections::BTreeMap;

use corral_api::options::{kind_of, Kind};
use serde_json::Value;

/// The instructions a Modelfile may use.
pub const COMMANDS: &[&str] = &[
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "parameter",
    "message",
    "requires",
    "draft",
];

/// One instruction.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    From(String),
    Parameter {
        name: String,
        value: String,
    },
    Template(String),
    System(String),
    Adapter(String),
    License(String),
    Message {
        role: String,
        content: String,
    },
    Requires(String),
    /// A draft model for speculative decoding: a GGUF path or a model name.
    Draft(String),
}

/// A parsed Modelfile: its commands in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Modelfile {
    pub commands: Vec<Command>,
}

/// What is wrong with a Modelfile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("(line {line}): {message}")]
    Line { line: usize, message: String },
    #[error("no FROM line")]
    NoFrom,
    #[error("unexpected end of file: unterminated {quote} starting on line {line}")]
    UnterminatedQuote { line: usize, quote: &'static str },
}

impl Modelfile {
    /// Parse the text of a Modelfile.
    pub fn parse(text: &str) -> Result<Modelfile, ParseError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut commands = Vec::new();
        let mut rest = text;
        let mut line = 1usize;
        while !rest.is_empty() {
            // One logical line: keyword, then a value that may run over several lines.
            let (raw_line, after) = split_line(rest);
            let trimmed = raw_line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                line += 1;
                rest = after;
                continue;
            }
            let start_line = line;
            let kw_end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
            let keyword = trimmed[..kw_end].to_ascii_lowercase();
            if !COMMANDS.contains(&keyword.as_str()) {
                return Err(ParseError::Line {
                    line: start_line,
                    message: format!(
                        "command must be one of {}",
                        COMMANDS
                            .iter()
                            .map(|c| format!("\"{c}\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            // The value starts after the keyword, in the original text (it may be multi-line).
            let offset = raw_line.len() - raw_line.trim_start().len() + kw_end;
            let from_value = &rest[offset..];
            let (args, consumed) = match keyword.as_str() {
                "parameter" | "message" => {
                    let body = from_value.trim_start_matches([' ', '\t']);
                    let skip = from_value.len() - body.len();
                    let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
                    let name = &body[..name_end];
                    // As Ollama's parser: a PARAMETER or MESSAGE that stops before its value
                    // is an unexpected end, named with its line.
                    let eof = |what: &str| ParseError::Line {
                        line: start_line,
                        message: format!(
                            "unexpected EOF: {} needs {what}",
                            keyword.to_ascii_uppercase()
                        ),
                    };
                    if name.is_empty() {
                        return Err(eof(if keyword == "parameter" {
                            "a name and a value"
                        } else {
                            "a role and a message"
                        }));
                    }
                    let after_name = &body[name_end..];
                    let (value, used) = read_value(after_name, start_line)?;
                    let quoted = after_name.trim_start_matches([' ', '\t']).starts_with('"');
                    if value.is_empty() && !quoted {
                        return Err(eof(&format!("a value after {name:?}")));
                    }
                    ((name.to_string(), value), skip + name_end + used)
                }
                _ => {
                    let (value, used) = read_value(from_value, start_line)?;
                    ((String::new(), value), used)
                }
            };
            let end_line = start_line + rest[..offset + consumed].matches('\n').count();
            rest = &rest[offset + consumed..];
            // After a value only a comment may follow on the same line.
            let (tail, after) = split_line(rest);
            let tail = tail.trim();
            if !tail.is_empty() && !tail.starts_with('#') {
                return Err(ParseError::Line {
                    line: end_line,
                    message: format!("unexpected text after value: {tail:?}"),
                });
            }
            rest = after;
            line = end_line + 1;
            commands.push(to_command(&keyword, args, start_line)?);
        }
        if !commands.iter().any(|c| matches!(c, Command::From(_))) {
            return Err(ParseError::NoFrom);
        }
        Ok(Modelfile { commands })
    }

    /// The FROM value.
    pub fn from(&self) -> &str {
        self.commands
            .iter()
            .rev()
            .find_map(|c| {
                if let Command::From(f) = c {
                    Some(f.as_str())
                } else {
                    None
                }
            })
            .unwrap_or("")
    }

    /// PARAMETER names that Ollama no longer supports: they are dropped (with a warning from
    /// the caller), as Ollama drops them, rather than refused.
    pub fn deprecated_parameters(&self) -> Vec<&str> {
        self.commands
            .iter()
            .filter_map(|c| match c {
                Command::Parameter { name, .. } if is_deprecated(name) => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// PARAMETERs as typed JSON values; repeated `stop` lines accumulate; deprecated ones are
    /// left out.
    pub fn parameters(&self) -> Result<BTreeMap<String, Value>, String> {
        let mut out: BTreeMap<String, Value> = BTreeMap::new();
        for c in &self.commands {
            let Command::Parameter { name, value } = c else {
                continue;
            };
            if is_deprecated(name) {
                continue;
            }
            let v = match (kind_of(name), out.remove(name)) {
                (Some(Kind::StringList), Some(Value::Array(mut list))) => {
                    list.push(Value::from(value.clone()));
                    Value::Array(list)
                }
                _ => parse_parameter(name, std::slice::from_ref(value))?,
            };
            out.insert(name.clone(), v);
        }
        Ok(out)
    }
}

/// One parameter's value from its text: the first word for a number or a flag, every word for
/// a list (`stop`). The errors name the parameter and the value.
pub fn parse_parameter(name: &str, values: &[String]) -> Result<Value, String> {
    if is_deprecated(name) {
        return Err(format!("parameter '{name}' is no longer supported"));
    }
    let kind = kind_of(name).ok_or_else(|| format!("unknown parameter '{name}'"))?;
    let Some(value) = values.first() else {
        return Err(format!("parameter '{name}' needs a value"));
    };
    let invalid = |t: &str| format!("invalid value for parameter '{name}': {value:?} is not {t}");
    Ok(match kind {
        Kind::Int => Value::from(value.parse::<i64>().map_err(|_| invalid("an integer"))?),
        // `nan`, `inf` and `1e400` parse as f64 but are no JSON number (they would become
        // null, and the parameter would vanish): refused like any other non-number.
        Kind::Float => Value::from(
            value
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| invalid("a number"))?,
        ),
        Kind::Bool => Value::from(
            value
                .parse::<bool>()
                .map_err(|_| invalid("true or false"))?,
        ),
        Kind::String => Value::from(value.clone()),
        Kind::StringList => Value::Array(values.iter().cloned().map(Value::from).collect()),
    })
}

impl std::fmt::Display for Modelfile {
    /// The Modelfile as text that parses back to the same commands.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.commands {
            match c {
                Command::From(v) => writeln!(f, "FROM {}", quote(v))?,
                Command::Parameter { name, value } => {
                    writeln!(f, "PARAMETER {name} {}", quote(value))?
                }
                Command::Template(v) => writeln!(f, "TEMPLATE {}", quote(v))?,
                Command::System(v) => writeln!(f, "SYSTEM {}", quote(v))?,
                Command::Adapter(v) => writeln!(f, "ADAPTER {}", quote(v))?,
                Command::Draft(v) => writeln!(f, "DRAFT {}", quote(v))?,
                Command::License(v) => writeln!(f, "LICENSE {}", quote(v))?,
                Command::Message { role, content } => {
                    writeln!(f, "MESSAGE {role} {}", quote(content))?
                }
                Command::Requires(v) => writeln!(f, "REQUIRES {}", quote(v))?,
            }
        }
        Ok(())
    }
}

/// Write a value so the parser reads it back unchanged: bare when that is safe (a `#` after
/// the keyword is part of the value, not a comment), else in `"""` (which cannot hold `"""`
/// or end in `"`), else in `"` (which cannot hold `"`). Every value the parser can produce
/// fits one of the three.
fn is_deprecated(name: &str) -> bool {
    corral_api::options::DEPRECATED.contains(&name)
}

/// A value written so that the parser reads it back unchanged: bare when it can be, else in
/// `"""` (which keeps newlines and quotes), else in `"`.
pub fn quote(v: &str) -> String {
    let bare_ok = !v.is_empty()
        && v.trim() == v
        && !v.contains('\n')
        && !v.contains('\r')
        && !v.starts_with('"');
    if bare_ok {
        v.to_string()
    } else if !v.contains("\"\"\"") && !v.ends_with('"') {
        format!("\"\"\"{v}\"\"\"")
    } else {
        format!("\"{v}\"")
    }
}

fn split_line(s: &str) -> (&str, &str) {
    match s.find('\n') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

/// Read a value at the start of `s` (after the keyword). Returns the value and the bytes used,
/// up to (not including) the end of its last line.
fn read_value(s: &str, line: usize) -> Result<(String, usize), ParseError> {
    let body = s.trim_start_matches([' ', '\t']);
    let skip = s.len() - body.len();
    for (quote, name) in [("\"\"\"", "\"\"\""), ("\"", "\"")] {
        if let Some(inner) = body.strip_prefix(quote) {
            let end = inner
                .find(quote)
                .ok_or(ParseError::UnterminatedQuote { line, quote: name })?;
            return Ok((
                inner[..end].to_string(),
                skip + quote.len() + end + quote.len(),
            ));
        }
    }
    let (value, _) = split_line(body);
    let used = skip + value.len();
    Ok((value.trim().to_string(), used))
}

fn to_command(
    keyword: &str,
    (name, value): (String, String),
    line: usize,
) -> Result<Command, ParseError> {
    let err = |message: String| ParseError::Line { line, message };
    Ok(match keyword {
        "from" => {
            if value.is_empty() {
                return Err(err("missing value for FROM".into()));
            }
            Command::From(value)
        }
        "parameter" => Command::Parameter { name, value },
        "template" => Command::Template(value),
        "system" => Command::System(value),
        "adapter" => Command::Adapter(value),
        "draft" => {
            if value.is_empty() {
                return Err(err("missing value for DRAFT".into()));
            }
            Command::Draft(value)
        }
        "license" => Command::License(value),
        "requires" => Command::Requires(value),
        "message" => {
            if !["system", "user", "assistant"].contains(&name.as_str()) {
                return Err(err(
                    "message role must be one of \"system\", \"user\", or \"assistant\"".into(),
                ));
            }
            Command::Message {
                role: name,
                content: value,
            }
        }
        _ => unreachable!("keyword checked against COMMANDS"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Vec<Command>, String> {
        Modelfile::parse(s)
            .map(|m| m.commands)
            .map_err(|e| e.to_string())
    }
    fn from(s: &str) -> Command {
        Command::From(s.into())
    }

    #[test]
    fn table() {
        use Command::*;
        let param = |n: &str, v: &str| Parameter {
            name: n.into(),
            value: v.into(),
        };
        let cases: Vec<(&str, Result<Vec<Command>, String>)> = vec![
            ("FROM ./m.gguf", Ok(vec![from("./m.gguf")])),
            ("from   m.gguf  \n", Ok(vec![from("m.gguf")])),
            ("# c\n\nFROM m\n# c2\n", Ok(vec![from("m")])),
            ("FROM m\nPARAMETER temperature 0.5", Ok(vec![from("m"), param("temperature", "0.5")])),
            ("FROM m\nPARAMETER stop \"<|im_end|>\"", Ok(vec![from("m"), param("stop", "<|im_end|>")])),
            ("FROM m\nSYSTEM \"\"\"  two\n lines \"\"\"", Ok(vec![from("m"), System("  two\n lines ".into())])),
            ("FROM m\nSYSTEM \"a\nb\"\nPARAMETER top_k 1", Ok(vec![from("m"), System("a\nb".into()), param("top_k", "1")])),
            ("FROM m\nTEMPLATE {{ .Prompt }}", Ok(vec![from("m"), Template("{{ .Prompt }}".into())])),
            ("FROM m\nMESSAGE user Hi there", Ok(vec![from("m"), Message { role: "user".into(), content: "Hi there".into() }])),
            ("FROM m\r\nSYSTEM be brief\r\n", Ok(vec![from("m"), System("be brief".into())])),
            ("\u{feff}FROM m", Ok(vec![from("m")])),
            ("PARAMETER num_gpu 0\nFROM m", Ok(vec![param("num_gpu", "0"), from("m")])),
            ("FROM m\nFOO bar", Err("(line 2): command must be one of \"from\", \"license\", \"template\", \"system\", \"adapter\", \"parameter\", \"message\", \"requires\", \"draft\"".into())),
            ("FROM m\n\n\nMESSAGE robot hi", Err("(line 4): message role must be one of \"system\", \"user\", or \"assistant\"".into())),
            ("FROM m\nSYSTEM \"\"\"never closed", Err("unexpected end of file: unterminated \"\"\" starting on line 2".into())),
            ("SYSTEM hi", Err("no FROM line".into())),
            ("", Err("no FROM line".into())),
            ("FROM", Err("(line 1): missing value for FROM".into())),
            ("FROM m\nSYSTEM \"\"\"a\nb\"\"\"\nBAD x", Err("(line 4): command must be one of \"from\", \"license\", \"template\", \"system\", \"adapter\", \"parameter\", \"message\", \"requires\", \"draft\"".into())),
        ];
        for (input, want) in cases {
            assert_eq!(p(input), want, "{input:?}");
        }
    }

    /// More rules, one row each: the input and the commands after FROM (or the error).
    #[test]
    fn more_rules() {
        use Command::*;
        let param = |n: &str, v: &str| Parameter {
            name: n.into(),
            value: v.into(),
        };
        let msg = |r: &str, c: &str| Message {
            role: r.into(),
            content: c.into(),
        };
        let ok =
            |c: Vec<Command>| -> Result<Vec<Command>, String> { Ok([vec![from("m")], c].concat()) };
        let cmd_err = |line: usize| -> Result<Vec<Command>, String> {
            Err(format!("(line {line}): command must be one of \"from\", \"license\", \"template\", \"system\", \"adapter\", \"parameter\", \"message\", \"requires\", \"draft\""))
        };
        let cases: Vec<(&str, Result<Vec<Command>, String>)> = vec![
            // keywords are case-insensitive
            ("from m\nsystem s", ok(vec![System("s".into())])),
            ("From m\nSyStEm s", ok(vec![System("s".into())])),
            ("FROM m\nparameter top_k 5", ok(vec![param("top_k", "5")])),
            ("FROM m\nPaRaMeTeR top_k 5", ok(vec![param("top_k", "5")])),
            ("FROM m\ntemplate t", ok(vec![Template("t".into())])),
            ("FROM m\nlicense l", ok(vec![License("l".into())])),
            ("FROM m\nadapter ./a.gguf", ok(vec![Adapter("./a.gguf".into())])),
            ("FROM m\nDRAFT ./small.gguf", ok(vec![Draft("./small.gguf".into())])),
            ("FROM m\nDRAFT", Err("(line 2): missing value for DRAFT".into())),
            ("FROM m\nrequires 0.5.0", ok(vec![Requires("0.5.0".into())])),
            ("FROM m\nmessage user hi", ok(vec![msg("user", "hi")])),
            // parameter names and roles keep their case
            ("FROM m\nPARAMETER Top_K 5", ok(vec![param("Top_K", "5")])),
            ("FROM m\nMESSAGE User hi", Err("(line 2): message role must be one of \"system\", \"user\", or \"assistant\"".into())),
            ("FROM m\nMESSAGE system be kind", ok(vec![msg("system", "be kind")])),
            ("FROM m\nMESSAGE assistant \"\"\"Sure.\nHere.\"\"\"", ok(vec![msg("assistant", "Sure.\nHere.")])),
            ("FROM m\nMESSAGE tool x", Err("(line 2): message role must be one of \"system\", \"user\", or \"assistant\"".into())),
            // unquoted values are trimmed; inner spaces stay
            ("FROM m\nSYSTEM    spaced   out   ", ok(vec![System("spaced   out".into())])),
            ("FROM m\nSYSTEM\ttabbed", ok(vec![System("tabbed".into())])),
            ("FROM m\nPARAMETER stop    <end>   ", ok(vec![param("stop", "<end>")])),
            // quoted values keep everything inside, exactly
            ("FROM m\nSYSTEM \"  padded  \"", ok(vec![System("  padded  ".into())])),
            ("FROM m\nSYSTEM \"\"\"\n\nblank lines\n\n\"\"\"", ok(vec![System("\n\nblank lines\n\n".into())])),
            ("FROM m\nSYSTEM \"\"\"has \"quotes\" inside\"\"\"", ok(vec![System("has \"quotes\" inside".into())])),
            ("FROM m\nSYSTEM \"\"\"# not a comment\"\"\"", ok(vec![System("# not a comment".into())])),
            ("FROM m\nSYSTEM \"\"\"\"\"\"", ok(vec![System("".into())])),
            ("FROM m\nSYSTEM \"\"", ok(vec![System("".into())])),
            ("FROM m\nTEMPLATE \"\"\"{{ if .System }}{{ .System }}{{ end }}\n{{ .Prompt }}\"\"\"", ok(vec![Template("{{ if .System }}{{ .System }}{{ end }}\n{{ .Prompt }}".into())])),
            ("FROM m\nTEMPLATE \"{{ .Prompt }}\"", ok(vec![Template("{{ .Prompt }}".into())])),
            // no escape processing
            ("FROM m\nSYSTEM a\\nb", ok(vec![System("a\\nb".into())])),
            ("FROM m\nSYSTEM \"tab\\there\"", ok(vec![System("tab\\there".into())])),
            // comments and blank lines
            ("# first\nFROM m\n# between\n\nSYSTEM s\n# last", ok(vec![System("s".into())])),
            ("   # indented comment\nFROM m", Ok(vec![from("m")])),
            ("FROM m\nSYSTEM \"\"\"x\"\"\" # trailing comment", ok(vec![System("x".into())])),
            ("FROM m\nSYSTEM s # not a comment here", ok(vec![System("s # not a comment here".into())])),
            ("\n\n\nFROM m\n\n", Ok(vec![from("m")])),
            // repeated instructions
            ("FROM m\nPARAMETER stop a\nPARAMETER stop b", ok(vec![param("stop", "a"), param("stop", "b")])),
            ("FROM a\nFROM m", Ok(vec![from("a"), from("m")])),
            ("FROM m\nSYSTEM one\nSYSTEM two", ok(vec![System("one".into()), System("two".into())])),
            ("FROM m\nLICENSE \"\"\"MIT\nfull text\"\"\"\nLICENSE Apache", ok(vec![License("MIT\nfull text".into()), License("Apache".into())])),
            // FROM forms
            ("FROM ~/models/m.gguf", Ok(vec![from("~/models/m.gguf")])),
            ("FROM /abs/m.gguf", Ok(vec![from("/abs/m.gguf")])),
            ("FROM llama3.2:1b", Ok(vec![from("llama3.2:1b")])),
            ("FROM \"./with space.gguf\"", Ok(vec![from("./with space.gguf")])),
            // errors, with their lines
            (
                "FROM m\nPARAMETER",
                Err("(line 2): unexpected EOF: PARAMETER needs a name and a value".into()),
            ),
            (
                "FROM m\nMESSAGE",
                Err("(line 2): unexpected EOF: MESSAGE needs a role and a message".into()),
            ),
            (
                "FROM m\n\nPARAMETER temperature\n",
                Err("(line 3): unexpected EOF: PARAMETER needs a value after \"temperature\"".into()),
            ),
            (
                "FROM m\nMESSAGE user   ",
                Err("(line 2): unexpected EOF: MESSAGE needs a value after \"user\"".into()),
            ),
            ("FROM m\n\nSYSTEM \"open", Err("unexpected end of file: unterminated \" starting on line 3".into())),
            ("FROM m\nTEMPLATE \"\"\"a\nb\nc", Err("unexpected end of file: unterminated \"\"\" starting on line 2".into())),
            ("FROM m\nSYSTEM \"x\" y", Err("(line 2): unexpected text after value: \"y\"".into())),
            ("FROM m\nSYSTEM \"\"\"a\nb\"\"\" extra", Err("(line 3): unexpected text after value: \"extra\"".into())),
            ("FROM m\nINSTRUCTION x", cmd_err(2)),
            ("# c\n\nFROM m\n\nSYSTEM \"\"\"\n\n\"\"\"\nOOPS", cmd_err(8)),
            ("FROMX m", cmd_err(1)),
            ("FROM m\n  BAD indented", cmd_err(2)),
            ("# only a comment", Err("no FROM line".into())),
            ("SYSTEM s\nPARAMETER top_k 1", Err("no FROM line".into())),
        ];
        for (input, want) in cases {
            assert_eq!(p(input), want, "{input:?}");
        }
    }

    #[test]
    fn utf16_files_are_read_by_the_cli_and_a_bom_is_skipped_here() {
        assert_eq!(
            p("\u{feff}FROM m\nSYSTEM s"),
            Ok(vec![from("m"), Command::System("s".into())])
        );
    }

    fn value() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::string::string_regex("[a-zA-Z0-9 \"#{}.:\n\t<|>-]{0,20}").unwrap()
    }

    proptest::proptest! {
        #[test]
        fn printing_and_parsing_again_gives_the_same_commands(
            sys in value(), tmpl in value(), stop in value(), content in value(),
            quote_kind in 0usize..3, role in 0usize..3,
        ) {
            let q = |v: &str| match quote_kind {
                0 => format!("\"\"\"{v}\"\"\""),
                1 => format!("\"{v}\""),
                _ => v.replace('\n', " "),
            };
            let role = ["system", "user", "assistant"][role];
            let text = format!(
                "FROM ./m.gguf\nSYSTEM {}\nTEMPLATE {}\nPARAMETER stop {}\nMESSAGE {role} {}\n",
                q(&sys), q(&tmpl), q(&stop), q(&content)
            );
            if let Ok(parsed) = Modelfile::parse(&text) {
                let printed = parsed.to_string();
                let again = Modelfile::parse(&printed);
                proptest::prop_assert_eq!(Ok(parsed), again, "printed:\n{}", printed);
            }
        }
    }

    #[test]
    fn parameters_are_typed_and_stops_accumulate() {
        let m = Modelfile::parse("FROM m\nPARAMETER temperature 0\nPARAMETER stop a\nPARAMETER stop \"b c\"\nPARAMETER num_gpu 0").unwrap();
        let p = m.parameters().unwrap();
        assert_eq!(p["temperature"], serde_json::json!(0.0));
        assert_eq!(p["stop"], serde_json::json!(["a", "b c"]));
        assert_eq!(p["num_gpu"], serde_json::json!(0));
        let bad = Modelfile::parse("FROM m\nPARAMETER Temperature 1").unwrap();
        assert_eq!(
            bad.parameters().unwrap_err(),
            "unknown parameter 'Temperature'"
        );
        let bad = Modelfile::parse("FROM m\nPARAMETER num_ctx big").unwrap();
        assert_eq!(
            bad.parameters().unwrap_err(),
            "invalid value for parameter 'num_ctx': \"big\" is not an integer"
        );
        for v in ["nan", "inf", "1e400"] {
            let bad = Modelfile::parse(&format!("FROM m\nPARAMETER temperature {v}")).unwrap();
            assert_eq!(
                bad.parameters().unwrap_err(),
                format!("invalid value for parameter 'temperature': {v:?} is not a number")
            );
        }
    }

    #[test]
    fn deprecated_parameters_are_dropped_not_refused() {
        let m = Modelfile::parse(
            "FROM m\nPARAMETER mirostat 2\nPARAMETER penalize_newline true\nPARAMETER tfs_z 1\nPARAMETER top_k 3",
        )
        .unwrap();
        assert_eq!(
            m.deprecated_parameters(),
            vec!["mirostat", "penalize_newline", "tfs_z"]
        );
        let p = m.parameters().unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), vec!["top_k"]);
    }

    #[test]
    fn values_with_newlines_and_quotes_print_back_the_same() {
        // (A value that ends with a quote cannot be written back: the format has no escapes.)
        for v in ["### User:\n", "say \"hi\" now", "\"lead", "a\r\nb", " pad "] {
            let m = Modelfile {
                commands: vec![
                    Command::From("m".into()),
                    Command::Parameter {
                        name: "stop".into(),
                        value: v.into(),
                    },
                ],
            };
            assert_eq!(Modelfile::parse(&m.to_string()), Ok(m.clone()), "{v:?}");
        }
    }
}
