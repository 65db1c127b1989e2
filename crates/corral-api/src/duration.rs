//! `keep_alive` values: Go duration strings (`"5m"`, `"1h30m"`, `"-1s"`), or numbers of seconds.
//! Negative means "keep loaded forever"; zero means "unload once the request is done".

use std::time::Duration;

use serde_json::Value;

/// How long a model stays loaded after its last request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    Forever,
    For(Duration),
}

/// Ollama's default keep-alive.
pub const DEFAULT_KEEP_ALIVE: KeepAlive = KeepAlive::For(Duration::from_secs(300));

/// A `keep_alive` that could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid keep_alive {0:?}: expected a duration such as \"5m\", \"1h30m\" or a number of seconds")]
pub struct KeepAliveError(pub String);

impl KeepAlive {
    /// From JSON: a number of seconds or a duration string.
    pub fn from_json(v: &Value) -> Result<Self, KeepAliveError> {
        match v {
            Value::Number(n) => n
                .as_f64()
                .map(Self::from_secs_f64)
                .ok_or_else(|| KeepAliveError(n.to_string())),
            Value::String(s) => Self::parse(s),
            other => Err(KeepAliveError(other.to_string())),
        }
    }

    /// From text: a Go duration, or a plain number of seconds (as `OLLAMA_KEEP_ALIVE` allows).
    pub fn parse(s: &str) -> Result<Self, KeepAliveError> {
        let t = s.trim();
        if let Ok(secs) = t.parse::<f64>() {
            return Ok(Self::from_secs_f64(secs));
        }
        parse_go_duration(t)
            .map(|(neg, d)| {
                if neg {
                    KeepAlive::Forever
                } else {
                    KeepAlive::For(d)
                }
            })
            .ok_or_else(|| KeepAliveError(s.to_string()))
    }

    fn from_secs_f64(secs: f64) -> Self {
        if secs < 0.0 {
            KeepAlive::Forever
        } else {
            KeepAlive::For(Duration::from_secs_f64(secs.min(1e12)))
        }
    }
}

/// Parse Go's `time.ParseDuration` syntax: an optional sign, then one or more
/// `<decimal><unit>` groups with units ns, us, µs, ms, s, m, h. Returns (negative, magnitude).
pub fn parse_go_duration(s: &str) -> Option<(bool, Duration)> {
    let (neg, mut rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some((neg, Duration::ZERO));
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += num * scale;
    }
    Some((neg, Duration::from_secs_f64(total.min(1e12))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keep_alive_forms() {
        let secs = |s| KeepAlive::For(Duration::from_secs_f64(s));
        let cases: &[(Value, Option<KeepAlive>)] = &[
            (json!("5m"), Some(secs(300.0))),
            (json!("1h30m"), Some(secs(5400.0))),
            (json!("1.5s"), Some(secs(1.5))),
            (json!("300ms"), Some(secs(0.3))),
            (json!("0"), Some(secs(0.0))),
            (json!(0.0), Some(secs(0.0))),
            (json!(-1.0), Some(KeepAlive::Forever)),
            (json!("-1m"), Some(KeepAlive::Forever)),
            (json!("-1"), Some(KeepAlive::Forever)),
            (json!("30"), Some(secs(30.0))),
            (json!(10), Some(secs(10.0))),
            (json!("5 minutes"), None),
            (json!("m"), None),
            (json!(""), None),
            (json!(true), None),
        ];
        for (input, want) in cases {
            assert_eq!(KeepAlive::from_json(input).ok(), *want, "{input}");
        }
    }
}
