//! The checks every request passes before routing, in one layer: who may talk to the server
//! (Host, Origin, API key) and how much it may send (body size).
//!
//! Order: the Host check (DNS rebinding), then the Origin check (cross-site requests), then
//! CORS headers and preflights (tower-http), then the API key and the body limit. A refused
//! request reaches no handler, so it changes nothing.
//!
//! Architecture Invariant: no handler runs for a request whose Host, Origin or API key is
//! refused, or whose body is over the limit.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

use crate::error::family_error;

/// Default cap on a request body: far above any real chat, far below what hurts.
pub const DEFAULT_MAX_BODY: u64 = 32 << 20;

/// What the guard allows, resolved from settings at start.
#[derive(Debug, Clone)]
pub struct Security {
    /// Extra allowed origins (`CORRAL_ORIGINS`, else `OLLAMA_ORIGINS`), `*` wildcards.
    pub origins: Vec<String>,
    /// Accepted API keys; empty means none is needed.
    pub api_keys: Vec<String>,
    /// Largest request body, in bytes (blob uploads are exempt).
    pub max_body: u64,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            origins: Vec::new(),
            api_keys: Vec::new(),
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// Ollama's built-in origins: local pages on any port, and desktop/editor app schemes.
fn builtin_origins() -> Vec<String> {
    let mut out = Vec::new();
    for host in ["localhost", "127.0.0.1", "0.0.0.0"] {
        for scheme in ["http", "https"] {
            out.push(format!("{scheme}://{host}"));
            out.push(format!("{scheme}://{host}:*"));
        }
    }
    for scheme in ["app", "file", "tauri", "vscode-webview", "vscode-file"] {
        out.push(format!("{scheme}://*"));
    }
    out
}

/// The guard's state, shared by every request.
#[derive(Debug)]
pub struct Guard {
    /// Names a loopback listener answers to; `None` when it listens on every address.
    local: Option<LocalNames>,
    origins: Vec<String>,
    api_keys: Vec<Vec<u8>>,
    max_body: u64,
}

/// The Host values that mean "this machine".
#[derive(Debug)]
struct LocalNames {
    hostname: String,
    addrs: Vec<IpAddr>,
}

impl Guard {
    pub fn new(listen: SocketAddr, s: &Security) -> Arc<Guard> {
        // As Ollama: only a listener on a loopback address checks Host. One on 0.0.0.0/:: or a
        // public address is meant to be reached under any name.
        let local = listen.ip().is_loopback().then(|| LocalNames {
            hostname: corral_os::hostname(),
            addrs: corral_os::interface_addrs(),
        });
        let mut origins = builtin_origins();
        origins.extend(
            s.origins
                .iter()
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty()),
        );
        Arc::new(Guard {
            local,
            origins,
            api_keys: s.api_keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            max_body: s.max_body,
        })
    }

    /// Whether a Host header names this machine (always, when not on loopback).
    pub fn host_allowed(&self, host: &str) -> bool {
        let Some(local) = &self.local else {
            return true;
        };
        let name = strip_port(host).to_ascii_lowercase();
        let name = name.strip_suffix('.').unwrap_or(&name);
        // No Host at all cannot come from a browser, so it is no rebinding attack.
        if name.is_empty() || name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            return ip.is_loopback() || ip.is_unspecified() || local.addrs.contains(&ip);
        }
        !local.hostname.is_empty() && name == local.hostname
    }

    /// Whether a browser page of this origin may call the API.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim();
        self.origins.iter().any(|p| wildcard_match(p, origin))
    }

    fn key_ok(&self, presented: &[u8]) -> bool {
        // Every key is compared, in constant time, so timing tells nothing about any of them.
        self.api_keys.iter().fold(false, |ok, k| {
            ok | bool::from(k.as_slice().ct_eq(presented))
        })
    }
}

/// `host:port`, `[v6]:port`, `v6`, `host` -> the host part.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((h, _)) if h.contains(':') => host,
        Some((h, _)) => h,
        None => host,
    }
}

/// Glob match where `*` stands for any run of characters (as `OLLAMA_ORIGINS` patterns).
/// Written by hand: a dozen lines, against pulling a glob crate built for paths.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern.eq_ignore_ascii_case(text);
    }
    let text = text.to_ascii_lowercase();
    let mut rest = text.as_str();
    for (i, part) in parts.iter().enumerate() {
        let part = part.to_ascii_lowercase();
        if i == 0 {
            let Some(r) = rest.strip_prefix(part.as_str()) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part.as_str());
        } else {
            match rest.find(part.as_str()) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// The host the client addressed: `Host`, or the URI's authority (HTTP/2).
fn request_host(req: &Request) -> String {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_string))
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// Layer 1: Host and Origin, before CORS handles preflights.
pub async fn check_site(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let host = request_host(&req);
    if !g.host_allowed(&host) {
        tracing::warn!(host = %host, path = %path, "refused: Host is not a name of this machine");
        return family_error(
            &path,
            StatusCode::FORBIDDEN,
            format!(
                "host \"{host}\" is not allowed: this server answers only to local names \
                 (listen on 0.0.0.0 to be reached under other names)"
            ),
        );
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !g.origin_allowed(origin) {
            tracing::warn!(origin = %origin, path = %path, "refused: Origin is not allowed");
            return family_error(
                &path,
                StatusCode::FORBIDDEN,
                format!("origin \"{origin}\" is not allowed (add it to CORRAL_ORIGINS)"),
            );
        }
    }
    next.run(req).await
}

/// CORS for allowed origins (the site check has refused the others by then).
pub fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods(AllowMethods::mirror_request())
        .allow_headers(AllowHeaders::mirror_request())
        .max_age(std::time::Duration::from_secs(12 * 3600))
}

/// Routes with no body limit: blob uploads stream to disk, verified as they go.
fn unlimited(req: &Request) -> bool {
    req.method() == Method::POST && req.uri().path().starts_with("/api/blobs/")
}

/// Layer 2, inside CORS: the API key, then the body limit.
pub async fn check_request(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let open = req.uri().path() == "/" && matches!(*req.method(), Method::GET | Method::HEAD);
    if !g.api_keys.is_empty() && !open {
        let presented = bearer(&req).or_else(|| {
            req.headers()
                .get("x-api-key")
                .map(|v| v.as_bytes().to_vec())
        });
        match presented {
            Some(k) if g.key_ok(&k) => {}
            Some(_) => {
                tracing::warn!(path = %path, "refused: wrong API key");
                return unauthorized(&path, "invalid API key");
            }
            None => {
                return unauthorized(
                    &path,
                    "an API key is required: send it as \"Authorization: Bearer <key>\"",
                )
            }
        }
    }
    if unlimited(&req) {
        return next.run(req).await;
    }
    let too_large = || {
        family_error(
            &path,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than {} (set CORRAL_MAX_BODY to change the limit)",
                human_size(g.max_body)
            ),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > g.max_body => too_large(),
        Some(_) => next.run(req).await,
        // No length given (chunked): read up to the limit here, so that no handler ever holds
        // more than the limit and the refusal has the route's own error shape.
        None => {
            let (parts, body) = req.into_parts();
            match axum::body::to_bytes(body, g.max_body as usize).await {
                Ok(bytes) => {
                    next.run(Request::from_parts(parts, Body::from(bytes)))
                        .await
                }
                Err(_) => too_large(),
            }
        }
    }
}

fn bearer(req: &Request) -> Option<Vec<u8>> {
    let v = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii().to_vec())
}

fn unauthorized(path: &str, message: &str) -> Response {
    let mut resp = family_error(path, StatusCode::UNAUTHORIZED, message.to_string());
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// `33554432` -> `32 MiB`.
pub fn human_size(n: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} bytes")
}

/// A size setting: bytes, or a number with a unit (`32MiB`, `64 MB`, `1g`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        format!("{s:?} is not a size (bytes, or a number with KB, MB, MiB, GB ...)")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => return Err(format!("{s:?}: unknown size unit {other:?}")),
    };
    let bytes = (n * mult as f64).round();
    if bytes < 1.0 {
        return Err(format!("{s:?}: the size must be at least one byte"));
    }
    // `as` would quietly make anything larger the largest u64.
    if bytes >= u64::MAX as f64 {
        return Err(format!("{s:?}: too large a size"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(listen: &str, extra: &[&str]) -> Arc<Guard> {
        Guard::new(
            listen.parse().unwrap(),
            &Security {
                origins: extra.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn hosts_on_a_loopback_listener() {
        let g = guard("127.0.0.1:11434", &[]);
        let host = corral_os::hostname();
        let cases: &[(&str, bool)] = &[
            ("localhost", true),
            ("localhost:11434", true),
            ("LOCALHOST.", true),
            ("app.localhost:80", true),
            ("127.0.0.1:11434", true),
            ("127.9.9.9", true),
            ("[::1]:11434", true),
            ("::1", true),
            ("0.0.0.0:1", true),
            ("", true),
            (&host, true),
            ("evil.example", false),
            ("evil.example:11434", false),
            ("localhost.evil.example", false),
            ("evil-localhost", false),
            ("8.8.8.8", false),
            ("[2001:db8::1]:11434", false),
        ];
        for (h, want) in cases {
            assert_eq!(g.host_allowed(h), *want, "Host {h:?}");
        }
    }

    #[test]
    fn any_host_on_an_open_listener() {
        for listen in ["0.0.0.0:11434", "[::]:11434"] {
            assert!(guard(listen, &[]).host_allowed("evil.example"));
        }
    }

    #[test]
    fn origins() {
        let g = guard(
            "127.0.0.1:1",
            &["https://*.example.com", "http://10.0.0.5:3000"],
        );
        let cases: &[(&str, bool)] = &[
            ("http://localhost", true),
            ("http://localhost:3000", true),
            ("https://127.0.0.1:8443", true),
            ("http://0.0.0.0:80", true),
            ("app://anything", true),
            ("file://", true),
            ("tauri://localhost", true),
            ("vscode-webview://abc", true),
            ("vscode-file://vscode-app", true),
            ("https://chat.example.com", true),
            ("http://10.0.0.5:3000", true),
            ("http://evil.example", false),
            ("http://127.0.0.2:8000", false),
            ("http://localhost.evil.example", false),
            ("https://example.com", false),
            ("http://10.0.0.5:3001", false),
            ("null", false),
        ];
        for (o, want) in cases {
            assert_eq!(g.origin_allowed(o), *want, "Origin {o:?}");
        }
        assert!(guard("127.0.0.1:1", &["*"]).origin_allowed("http://evil.example"));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("a*c*e", "abcde"));
        assert!(!wildcard_match("a*c*e", "abcd"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("x*", "x"));
        assert!(!wildcard_match("*x*y", "yx"));
    }

    #[test]
    fn keys_compare_whole() {
        let g = Guard::new(
            "127.0.0.1:1".parse().unwrap(),
            &Security {
                api_keys: vec!["secret-one".into(), "two".into()],
                ..Default::default()
            },
        );
        assert!(g.key_ok(b"secret-one"));
        assert!(g.key_ok(b"two"));
        assert!(!g.key_ok(b"secret"));
        assert!(!g.key_ok(b"secret-one "));
        assert!(!g.key_ok(b""));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("32MiB").unwrap(), 32 << 20);
        assert_eq!(parse_size("64 MB").unwrap(), 64_000_000);
        assert_eq!(parse_size("1.5k").unwrap(), 1500);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("3 parsecs").is_err());
        assert_eq!(parse_size("1TB").unwrap(), 1_000_000_000_000);
        assert_eq!(parse_size("2 TiB").unwrap(), 2 << 40);
        assert_eq!(
            parse_size("99999999999999999999999").unwrap_err(),
            "\"99999999999999999999999\": too large a size"
        );
        assert_eq!(human_size(32 << 20), "32 MiB");
        assert_eq!(human_size(1000), "1000 bytes");
    }
}
