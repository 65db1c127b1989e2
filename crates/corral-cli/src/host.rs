//! Where the server listens and the client connects: `CORRAL_HOST`, else `OLLAMA_HOST`, else
//! `127.0.0.1:11434`, in Ollama's forms (`host`, `host:port`, `:port`, `http://host:port`,
//! `https://host/path`). As in Ollama, a port left out is 11434 without a scheme, 80 with
//! `http://` and 443 with `https://`, and a path after the host is the base the client's
//! requests go under (a server behind a reverse proxy at `https://example.com/ollama`).

use std::net::{SocketAddr, ToSocketAddrs};

pub const DEFAULT_PORT: u16 = 11434;

/// A resolved host setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Where the API lives under the host: empty, or `/path` (the client's base, not the
    /// server's: a server listens at its root).
    pub path: String,
}

impl Host {
    /// From the environment.
    pub fn from_env() -> anyhow::Result<Host> {
        let v = ["CORRAL_HOST", "OLLAMA_HOST"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
            .unwrap_or_default();
        Host::parse(&v)
    }

    /// Parse one of Ollama's host forms; empty means the default.
    pub fn parse(s: &str) -> anyhow::Result<Host> {
        let s = s.trim().trim_end_matches('/');
        let (scheme, rest, default_port) = match s.split_once("://") {
            Some(("http", r)) => ("http", r, 80),
            Some(("https", r)) => ("https", r, 443),
            Some(_) => anyhow::bail!("invalid host {s:?}: scheme must be http or https"),
            None => ("http", s, DEFAULT_PORT),
        };
        let (rest, path) = match rest.split_once('/') {
            Some((r, p)) => (r, format!("/{}", p.trim_end_matches('/'))),
            None => (rest, String::new()),
        };
        // Brackets only around a whole IPv6 address, as a URL has them: `http://[::1` would
        // otherwise listen on, or call, an address nobody wrote.
        if rest.contains(['[', ']']) {
            let inner = rest.strip_prefix('[').and_then(|r| r.split_once(']'));
            let whole = inner.is_some_and(|(addr, after)| {
                is_ipv6(addr) && (after.is_empty() || after.starts_with(':'))
            });
            if !whole {
                anyhow::bail!("invalid host {s:?}: brackets must enclose an IPv6 address");
            }
        }
        // A port is what follows the last colon, unless that colon is inside an IPv6 address
        // (`::1`, `[::1]`).
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && (!h.contains(':') || h.ends_with(']')) => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| anyhow::anyhow!("invalid port in host {s:?}"))?;
                (h, port)
            }
            _ => (rest, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = if host.is_empty() { "127.0.0.1" } else { host };
        // Colons without brackets are an IPv6 address, whole (`::1`); a port after one needs
        // the brackets.
        if host.contains(':') && !is_ipv6(host) {
            anyhow::bail!(
                "invalid host {s:?}: {host:?} is not an IPv6 address (with a port, an IPv6 address goes in brackets: [::1]:{DEFAULT_PORT})"
            );
        }
        Ok(Host {
            scheme: scheme.to_string(),
            host: host.to_string(),
            port,
            path,
        })
    }

    /// The base URL a client uses.
    pub fn url(&self) -> String {
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{}://{}:{}{}", self.scheme, h, self.port, self.path)
    }

    /// The address a server binds.
    pub fn socket_addr(&self) -> anyhow::Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| anyhow::anyhow!("cannot resolve host {}: {e}", self.host))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("cannot resolve host {}", self.host))
    }
}

/// An IPv6 address, with or without a zone (`fe80::1%eth0`).
fn is_ipv6(s: &str) -> bool {
    let addr = s.split_once('%').map_or(s, |(a, _)| a);
    addr.parse::<std::net::Ipv6Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms() {
        let cases = [
            ("", "http://127.0.0.1:11434"),
            ("0.0.0.0", "http://0.0.0.0:11434"),
            (":8080", "http://127.0.0.1:8080"),
            ("localhost:1234", "http://localhost:1234"),
            ("http://example.com:99/", "http://example.com:99"),
            ("https://example.com", "https://example.com:443"),
            ("[::1]:5000", "http://[::1]:5000"),
            ("::1", "http://[::1]:11434"),
            ("[::1]", "http://[::1]:11434"),
            // With a scheme and no port, the scheme's port, as Ollama reads it.
            ("http://gpu-box", "http://gpu-box:80"),
            // A path is the client's base under the host.
            (
                "https://example.com/ollama/",
                "https://example.com:443/ollama",
            ),
            ("http://proxy:8080/a/b", "http://proxy:8080/a/b"),
        ];
        for (input, want) in cases {
            assert_eq!(Host::parse(input).unwrap().url(), want, "{input}");
        }
        assert!(Host::parse("ftp://x").is_err());
        assert!(Host::parse("x:notaport").is_err());
        assert_eq!(
            Host::parse("[fe80::1%eth0]:80").unwrap().url(),
            "http://[fe80::1%eth0]:80"
        );
        let e = Host::parse("::1:11715").unwrap_err().to_string();
        assert!(e.contains("goes in brackets: [::1]:11434"), "{e}");
        for bad in [
            "http://[::1",
            "[::1",
            "::1]:80",
            "[[::1]]",
            "[::1]x",
            "[127.0.0.1]:11434",
            "[localhost]",
        ] {
            let e = Host::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("brackets must enclose an IPv6 address"),
                "{bad}: {e}"
            );
        }
    }
}
