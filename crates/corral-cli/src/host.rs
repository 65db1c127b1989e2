//! Where the server listens and the client connects: `CORRAL_HOST`, else `OLLAMA_HOST`, else
//! `127.0.0.1:11434`, in Ollama's forms (`host`, `host:port`, `:port`, `http://host:port`).

use std::net::{SocketAddr, ToSocketAddrs};

pub const DEFAULT_PORT: u16 = 11434;

/// A resolved host setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub scheme: String,
    pub host: String,
    pub port: u16,
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
        let (scheme, rest) = match s.split_once("://") {
            Some((sc, r)) => (sc.to_string(), r),
            None => ("http".to_string(), s),
        };
        if scheme != "http" && scheme != "https" {
            anyhow::bail!("invalid host {s:?}: scheme must be http or https");
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| anyhow::anyhow!("invalid port in host {s:?}"))?;
                (h, port)
            }
            _ => (rest, if scheme == "https" { 443 } else { DEFAULT_PORT }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = if host.is_empty() { "127.0.0.1" } else { host };
        Ok(Host {
            scheme,
            host: host.to_string(),
            port,
        })
    }

    /// The base URL a client uses.
    pub fn url(&self) -> String {
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{}://{}:{}", self.scheme, h, self.port)
    }

    /// The address a server binds.
    pub fn socket_addr(&self) -> anyhow::Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| anyhow::anyhow!("cannot resolve host {}", self.host))
    }
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
        ];
        for (input, want) in cases {
            assert_eq!(Host::parse(input).unwrap().url(), want, "{input}");
        }
        assert!(Host::parse("ftp://x").is_err());
        assert!(Host::parse("x:notaport").is_err());
    }
}
