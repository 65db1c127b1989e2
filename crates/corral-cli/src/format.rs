//! Ollama's ways of printing sizes, times and durations, and its plain tables.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Decimal units, as Ollama's `format.HumanBytes`: `98 MB`, `1.3 GB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [(f64, &str); 4] = [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "KB")];
    let Some((value, unit)) = UNITS
        .iter()
        .find(|(s, _)| b as f64 >= *s)
        .map(|(s, u)| (b as f64 / s, *u))
    else {
        return format!("{b} B");
    };
    if value >= 10.0 || value.fract() == 0.0 {
        format!("{} {unit}", value as u64)
    } else {
        format!("{value:.1} {unit}")
    }
}

/// Docker's human duration, as Ollama's `format.HumanTime` uses it.
fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let h = s / 3600;
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=89 => "About a minute".into(),
        90..=3599 => format!("{} minutes", (s + 30) / 60),
        _ if h < 2 => "About an hour".into(),
        _ if h < 48 => format!("{h} hours"),
        _ if h < 24 * 7 * 2 => format!("{} days", h / 24),
        _ if h < 24 * 30 * 2 => format!("{} weeks", h / 24 / 7),
        _ if h < 24 * 365 * 2 => format!("{} months", h / 24 / 30),
        _ => format!("{} years", h / 24 / 365),
    }
}

/// `2 minutes ago`, `4 minutes from now`, `Forever` for times more than 20 years away (as
/// Ollama's `HumanTime` says it: a model kept loaded with a negative keep_alive).
pub fn human_time(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if (t - now).num_days().abs() > 20 * 365 {
        return "Forever".into();
    }
    if t >= now {
        format!(
            "{} from now",
            human_duration((t - now).to_std().unwrap_or_default())
        )
    } else {
        format!(
            "{} ago",
            human_duration((now - t).to_std().unwrap_or_default())
        )
    }
}

/// Go's `time.Duration.String()`: `1.234567s`, `12.3ms`, `450µs`.
pub fn go_duration(ns: u64) -> String {
    fn trim(v: f64, prec: usize) -> String {
        let s = format!("{v:.prec$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        s
    }
    match ns {
        0 => "0s".into(),
        1..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{}µs", trim(ns as f64 / 1e3, 3)),
        1_000_000..=999_999_999 => format!("{}ms", trim(ns as f64 / 1e6, 6)),
        _ => {
            let secs = ns as f64 / 1e9;
            if secs < 60.0 {
                format!("{}s", trim(secs, 9))
            } else {
                let m = (secs / 60.0).floor() as u64;
                format!("{m}m{}s", trim(secs - (m * 60) as f64, 9))
            }
        }
    }
}

/// Columns padded to their widest cell plus three spaces (Go's tabwriter as Ollama sets it up).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            s += c;
            if i + 1 < cells.len() {
                s += &" ".repeat(widths[i] - c.chars().count() + 3);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        out += &line(r.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(98_362_432), "98 MB");
        assert_eq!(human_bytes(1_300_000_000), "1.3 GB");
        assert_eq!(human_bytes(2_000_000), "2 MB");
        assert_eq!(human_bytes(512), "512 B");
    }

    #[test]
    fn durations() {
        assert_eq!(go_duration(1_234_567_890), "1.23456789s");
        assert_eq!(go_duration(12_300_000), "12.3ms");
        assert_eq!(go_duration(450_000), "450µs");
        assert_eq!(go_duration(61_500_000_000), "1m1.5s");
    }

    #[test]
    fn times() {
        let now = Utc::now();
        assert_eq!(
            human_time(now + chrono::Duration::days(21 * 365), now),
            "Forever"
        );
        assert_eq!(
            human_time(now + chrono::Duration::days(19 * 365), now),
            "19 years from now"
        );
        assert_eq!(
            human_time(now - chrono::Duration::seconds(120), now),
            "2 minutes ago"
        );
        assert_eq!(
            human_time(now + chrono::Duration::seconds(240), now),
            "4 minutes from now"
        );
        assert_eq!(
            human_time(now - chrono::Duration::hours(3), now),
            "3 hours ago"
        );
    }

    #[test]
    fn processor_column() {
        use crate::processor;
        assert_eq!(processor(100, 0, 0), "100% CPU");
        assert_eq!(processor(100, 100, 0), "100% GPU");
        assert_eq!(processor(100, 52, 0), "48%/52% CPU/GPU");
        assert_eq!(processor(100, 100, 100), "100% RPC");
        assert_eq!(processor(100, 65, 65), "35%/65% CPU/RPC");
        assert_eq!(processor(100, 80, 50), "20%/30%/50% CPU/GPU/RPC");
    }

    #[test]
    fn tables() {
        let t = table(&["NAME", "ID"], &[vec!["smol:latest".into(), "abc".into()]]);
        assert_eq!(t, "NAME          ID\nsmol:latest   abc\n");
    }
}
