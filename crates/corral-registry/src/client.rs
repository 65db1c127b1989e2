//! One repository on one registry: requests with authentication, and the registry's errors
//! turned into messages that name the problem.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode, Url};

use crate::auth::{self, Challenge, Credentials};
use crate::RegistryError;

/// How to reach a registry.
#[derive(Debug, Clone)]
pub struct Options {
    /// Plain HTTP instead of HTTPS (`--insecure`).
    pub insecure: bool,
    /// A transfer that receives nothing for this long is retried.
    pub stall_timeout: Duration,
    /// Tries per blob part before a pull gives up.
    pub tries: u32,
    /// Blobs larger than this are fetched in parallel ranged parts of about this size.
    pub part_size: u64,
    /// Most parts of one blob fetched at once.
    pub max_parts: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            insecure: false,
            stall_timeout: Duration::from_secs(30),
            tries: 5,
            part_size: 16 << 20,
            max_parts: 8,
        }
    }
}

/// A repository (`namespace/model`) on a registry host, with the authorization it earned.
pub struct Repo {
    pub(crate) http: reqwest::Client,
    pub(crate) host: String,
    /// `namespace/model`.
    pub(crate) path: String,
    base: Url,
    creds: Option<Credentials>,
    /// `Authorization` value that the last challenge earned.
    authorization: tokio::sync::Mutex<Option<String>>,
    /// `pull` or `pull,push`: what a bearer token must allow.
    actions: &'static str,
    pub(crate) options: Options,
}

impl Repo {
    pub fn new(
        name: &corral_store::Name,
        options: Options,
        push: bool,
    ) -> Result<Repo, RegistryError> {
        let scheme = if options.insecure { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{}/", name.host)).map_err(|e| {
            RegistryError::Other(format!("invalid registry host {}: {e}", name.host))
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("corral/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RegistryError::Other(format!("HTTP client: {e}")))?;
        Ok(Repo {
            http,
            host: name.host.clone(),
            path: format!("{}/{}", name.namespace, name.model),
            base,
            creds: auth::credentials_for(&name.host),
            authorization: Default::default(),
            actions: if push { "pull,push" } else { "pull" },
            options,
        })
    }

    /// `<base>/v2/<namespace>/<model>/<rest>`.
    pub fn url(&self, rest: &str) -> Url {
        self.base
            .join(&format!("v2/{}/{rest}", self.path))
            .expect("repository paths are valid URLs")
    }

    /// A `Location` header, which may be relative, as a URL.
    pub fn resolve(&self, location: &str) -> Result<Url, RegistryError> {
        self.base.join(location).map_err(|e| {
            RegistryError::Other(format!("registry sent a bad Location {location:?}: {e}"))
        })
    }

    /// Send a request built by `make` (called again when a challenge has to be answered, so a
    /// body can be rebuilt), answering the registry's `WWW-Authenticate` challenge once.
    pub async fn send(
        &self,
        what: &str,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let mut answered = false;
        loop {
            let mut req = make(&self.http);
            let sent_auth = self.authorization.lock().await.clone();
            if let Some(a) = &sent_auth {
                req = req.header(AUTHORIZATION, a);
            }
            let resp = req.send().await.map_err(|e| {
                let mut chain = error_chain(&e);
                // rustls reading a plain-HTTP answer as TLS: say what that means.
                if !self.options.insecure && chain.contains("InvalidContentType") {
                    chain.push_str(
                        " (the registry may speak plain HTTP, not HTTPS: use --insecure for it)",
                    );
                }
                RegistryError::Transport(format!("{what}: {chain}"))
            })?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(auth::parse_challenge);
            if answered || challenge.is_none() {
                return Err(self.refused(sent_auth.is_some()));
            }
            let challenge = challenge.expect("checked");
            let value = self.answer(&challenge).await?;
            *self.authorization.lock().await = Some(value);
            answered = true;
        }
    }

    fn refused(&self, with_credentials: bool) -> RegistryError {
        let msg = match (&self.creds, with_credentials) {
            (Some(c), true) => format!(
                "{} refused the credentials of user '{}' from {} (wrong user name or password?)",
                self.host, c.user, c.source
            ),
            _ => format!(
                "{} requires authentication: set CORRAL_REGISTRY_USER and CORRAL_REGISTRY_PASSWORD for the server, or add the registry to {}",
                self.host,
                auth::config_file().map_or("a Docker config file".into(), |p| p.display().to_string())
            ),
        };
        RegistryError::Unauthorized(msg)
    }

    /// The `Authorization` value for a challenge: basic credentials, or a bearer token fetched
    /// from the realm the registry names.
    async fn answer(&self, c: &Challenge) -> Result<String, RegistryError> {
        match c.scheme.as_str() {
            "basic" => self
                .creds
                .as_ref()
                .map(Credentials::basic_header)
                .ok_or_else(|| self.refused(false)),
            "bearer" => {
                let realm = c.param("realm").ok_or_else(|| {
                    RegistryError::Other(format!(
                        "{} sent a bearer challenge without a realm",
                        self.host
                    ))
                })?;
                let mut url = Url::parse(realm).map_err(|e| {
                    RegistryError::Other(format!(
                        "{} named a bad token realm {realm:?}: {e}",
                        self.host
                    ))
                })?;
                let scope = c
                    .param("scope")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("repository:{}:{}", self.path, self.actions));
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = c.param("service") {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", &scope);
                }
                let mut req = self.http.get(url);
                if let Some(cr) = &self.creds {
                    req = req.header(AUTHORIZATION, cr.basic_header());
                }
                let resp = req.send().await.map_err(|e| {
                    RegistryError::Transport(format!("get token from {realm}: {}", error_chain(&e)))
                })?;
                if resp.status() == StatusCode::UNAUTHORIZED
                    || resp.status() == StatusCode::FORBIDDEN
                {
                    return Err(self.refused(self.creds.is_some()));
                }
                if !resp.status().is_success() {
                    return Err(RegistryError::Other(format!(
                        "token server {realm} answered {}",
                        resp.status()
                    )));
                }
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                // Capped as manifests are: a hostile token server may send without end.
                let body = read_limited(resp, corral_store::MAX_MANIFEST_BYTES)
                    .await
                    .map_err(|e| match e {
                        RegistryError::Invalid(m) => {
                            RegistryError::Invalid(format!("token server {realm}: {m}"))
                        }
                        other => other,
                    })?;
                let t: Token = serde_json::from_slice(&body).map_err(|e| {
                    RegistryError::Other(format!("token server {realm} sent no token: {e}"))
                })?;
                let token = t
                    .token
                    .or(t.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        RegistryError::Other(format!("token server {realm} sent no token"))
                    })?;
                Ok(format!("Bearer {token}"))
            }
            other => Err(RegistryError::Other(format!(
                "{} asks for unsupported authentication '{other}'",
                self.host
            ))),
        }
    }

    /// An unexpected answer as an error, with the registry's own message when it sent one.
    pub async fn unexpected(&self, what: &str, resp: Response) -> RegistryError {
        let status = resp.status();
        // Error bodies are read up to 64 KiB only: the message is in the first few bytes.
        let body = read_limited(resp, MAX_ERROR_BYTES)
            .await
            .unwrap_or_default();
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let e = v.get("errors")?.get(0)?;
                Some(format!(
                    "{}: {}",
                    e.get("code")?.as_str()?,
                    e.get("message")?.as_str()?
                ))
            })
            .unwrap_or_else(|| status.to_string());
        if status == StatusCode::FORBIDDEN {
            return RegistryError::Unauthorized(format!(
                "{what}: {} denied access: {detail}",
                self.host
            ));
        }
        RegistryError::Other(format!("{what}: {detail}"))
    }
}

/// The most of an error answer that is read.
pub const MAX_ERROR_BYTES: u64 = 64 << 10;

/// A whole body, refusing one over `limit` bytes (a hostile registry may send no end).
pub async fn read_limited(resp: Response, limit: u64) -> Result<Vec<u8>, RegistryError> {
    use futures::StreamExt;
    let mut out = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| RegistryError::Transport(error_chain(&e)))?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(RegistryError::Invalid(format!(
                "the registry sent more than {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// An error with its causes, as reqwest's own Display leaves them out.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        src = c.source();
    }
    s
}
