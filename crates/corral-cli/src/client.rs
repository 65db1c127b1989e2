//! A small client for the server's API: JSON calls and NDJSON streams.

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::host::Host;

/// One API key from the environment: `CORRAL_API_KEY`, else the first key of the file named by
/// `CORRAL_API_KEY_FILE` (one key a line; blank lines and `#` comments skipped).
pub fn api_key_from_env() -> anyhow::Result<Option<String>> {
    if let Some(k) = std::env::var("CORRAL_API_KEY")
        .ok()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
    {
        return Ok(Some(k));
    }
    match std::env::var_os("CORRAL_API_KEY_FILE").filter(|v| !v.is_empty()) {
        Some(path) => Ok(read_key_file(std::path::Path::new(&path))?
            .into_iter()
            .next()),
        None => Ok(None),
    }
}

/// The keys of a key file; a file with none is an error (it would turn the check off).
pub fn read_key_file(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("CORRAL_API_KEY_FILE {}: {e}", path.display()))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if keys.is_empty() {
        anyhow::bail!("CORRAL_API_KEY_FILE {}: no key in the file", path.display());
    }
    Ok(keys)
}

/// Talks to one server.
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for `host` with the settings the server uses too: the API key
    /// (`CORRAL_API_KEY`, else the first key in `CORRAL_API_KEY_FILE`) and an extra CA
    /// certificate for HTTPS (`CORRAL_TLS_CA`, PEM).
    pub fn from_env(host: &Host) -> anyhow::Result<Client> {
        let mut b = reqwest::Client::builder();
        if let Some(key) = api_key_from_env()? {
            let mut headers = reqwest::header::HeaderMap::new();
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| anyhow::anyhow!("CORRAL_API_KEY holds characters a header cannot"))?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
            b = b.default_headers(headers);
        }
        if let Some(ca) = std::env::var_os("CORRAL_TLS_CA").filter(|v| !v.is_empty()) {
            let pem = std::fs::read(&ca).map_err(|e| {
                anyhow::anyhow!("CORRAL_TLS_CA {}: {e}", std::path::Path::new(&ca).display())
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "CORRAL_TLS_CA {}: not a PEM certificate: {e}",
                    std::path::Path::new(&ca).display()
                )
            })?;
            if certs.is_empty() {
                anyhow::bail!(
                    "CORRAL_TLS_CA {}: no certificate in the file",
                    std::path::Path::new(&ca).display()
                );
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        Ok(Client {
            base: host.url(),
            http: b.build()?,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn connect_error(&self, e: reqwest::Error) -> anyhow::Error {
        if e.is_connect() && self.base.starts_with("https:") {
            // A refused certificate is a connect error too: say what reqwest found.
            let mut cause = String::new();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                cause = s.to_string();
                src = s.source();
            }
            anyhow::anyhow!(
                "could not connect to corral server at {}: {cause} (is `corral serve` running with \
                 CORRAL_TLS_CERT? for a private CA set CORRAL_TLS_CA)",
                self.base
            )
        } else if e.is_connect() {
            anyhow::anyhow!(
                "could not connect to corral server at {}: is `corral serve` running?",
                self.base
            )
        } else if e.is_request() && closed_while_sending(&e) {
            // The server answers a body over its limit with 413 and closes the connection
            // before reading the rest; a client still writing sees a broken pipe, not the 413.
            anyhow::anyhow!(
                "the corral server at {} closed the connection before reading the whole \
                 request: is it larger than the server's CORRAL_MAX_BODY (32 MiB by default)?",
                self.base
            )
        } else {
            e.into()
        }
    }

    /// Turn an error status into the server's `{"error": ...}` message.
    async fn check(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| format!("{status}: {}", body.trim()));
        anyhow::bail!(msg)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        Ok(self
            .send(self.http.get(self.url(path)))
            .await?
            .json()
            .await?)
    }

    /// Send a request; a failed connection or an error status becomes an error.
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| self.connect_error(e))?;
        Self::check(resp).await
    }

    /// POST a JSON body and parse the JSON answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        Ok(self
            .send(self.http.post(self.url(path)).json(body))
            .await?
            .json()
            .await?)
    }

    /// POST (or DELETE) a JSON body, expecting only a success status.
    pub async fn send_ok<B: Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<()> {
        self.send(self.http.request(method, self.url(path)).json(body))
            .await?;
        Ok(())
    }

    pub async fn head_ok(&self, path: &str) -> anyhow::Result<bool> {
        let resp = self
            .http
            .head(self.url(path))
            .send()
            .await
            .map_err(|e| self.connect_error(e))?;
        Ok(resp.status().is_success())
    }

    pub async fn post_body(&self, path: &str, body: reqwest::Body) -> anyhow::Result<()> {
        self.send(self.http.post(self.url(path)).body(body)).await?;
        Ok(())
    }

    /// POST a JSON body and call `on_item` for each object of the NDJSON answer. An
    /// `{"error": ...}` object in the stream becomes an error.
    pub async fn stream<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        mut on_item: impl FnMut(T) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .map_err(|e| self.connect_error(e))?;
        let resp = Self::check(resp).await?;
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut handle = |line: &[u8]| -> anyhow::Result<()> {
            if line.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            let v: serde_json::Value = serde_json::from_slice(line)?;
            if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
                anyhow::bail!(e.to_string());
            }
            on_item(serde_json::from_value(v)?)
        };
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                handle(&line)?;
            }
        }
        handle(&buf)
    }
}

/// Whether a request failed because the peer closed the connection while the body was being
/// written (a broken pipe or a reset, somewhere in the error's causes).
fn closed_while_sending(e: &reqwest::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{BrokenPipe, ConnectionReset};
            if matches!(io.kind(), BrokenPipe | ConnectionReset) {
                return true;
            }
        }
        src = s.source();
    }
    false
}
