//! Fault injection for tests, off unless `CORRAL_RUNNER_FAULT` is set (test-only; never set
//! it in production). The server passes its environment to its runners, so a test sets it on
//! the server. Forms:
//!
//! - `fail@load`: exit with status 1 and a message, as a model that cannot load;
//! - `stall@load`: hang while loading (tests the load timeout);
//! - `crash@token:N`: abort (SIGABRT) when the Nth token of this runner is produced;
//! - `crash@tensor:N`: abort when a runner started to quantize or convert begins its Nth
//!   tensor;
//! - `stall@token:N`: stop making progress at the Nth token (tests the stall timeout);
//! - `stall@idle`: hang once idle after a first answer (tests the health check);
//! - `fail@gpu-load`: loading with any layers offloaded fails, as a driver that refuses the
//!   load (tests the fall-back to the CPU on a real device: lavapipe in the test suite).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Load,
    Token,
    /// Idle, after at least one answer.
    Idle,
    /// Loading with layers offloaded.
    GpuLoad,
    /// Quantizing or converting, as a tensor begins.
    Tensor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Fail,
    Stall,
    Crash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fault {
    action: Action,
    point: Point,
    after: u64,
}

fn parse(s: &str) -> Option<Fault> {
    let (action, rest) = s.trim().split_once('@')?;
    let action = match action {
        "fail" => Action::Fail,
        "stall" => Action::Stall,
        "crash" => Action::Crash,
        _ => return None,
    };
    let (point, after) = match rest.split_once(':') {
        Some(("token", n)) => (Point::Token, n.parse().ok()?),
        Some(("tensor", n)) => (Point::Tensor, n.parse().ok()?),
        None if rest == "load" => (Point::Load, 0),
        None if rest == "idle" => (Point::Idle, 0),
        None if rest == "gpu-load" => (Point::GpuLoad, 0),
        _ => return None,
    };
    Some(Fault {
        action,
        point,
        after,
    })
}

fn configured() -> Option<Fault> {
    static FAULT: OnceLock<Option<Fault>> = OnceLock::new();
    *FAULT.get_or_init(|| {
        let v = std::env::var("CORRAL_RUNNER_FAULT").ok()?;
        let f = parse(&v);
        if f.is_none() {
            tracing::warn!("ignoring CORRAL_RUNNER_FAULT={v:?}: not a known fault");
        }
        f
    })
}

/// Called at each point; does nothing unless a fault is configured for it.
pub fn at(point: Point) {
    // Tokens or tensors, whichever the process counts (a runner serves or quantizes).
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let Some(f) = configured().filter(|f| f.point == point) else {
        return;
    };
    let counted = matches!(point, Point::Token | Point::Tensor);
    if counted && COUNT.fetch_add(1, Ordering::Relaxed) + 1 != f.after {
        return;
    }
    tracing::warn!(?f, "injecting fault");
    match f.action {
        Action::Fail => {
            eprintln!("Error: injected failure at {point:?}");
            std::process::exit(1);
        }
        Action::Crash => std::process::abort(),
        Action::Stall => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            parse("crash@token:3"),
            Some(Fault {
                action: Action::Crash,
                point: Point::Token,
                after: 3
            })
        );
        assert_eq!(
            parse("fail@load"),
            Some(Fault {
                action: Action::Fail,
                point: Point::Load,
                after: 0
            })
        );
        assert_eq!(
            parse("crash@tensor:40").map(|f| (f.point, f.after)),
            Some((Point::Tensor, 40))
        );
        assert_eq!(parse("stall@token:x"), None);
        assert_eq!(parse("boom@load"), None);
    }
}
