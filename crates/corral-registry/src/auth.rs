//! Registry credentials and `WWW-Authenticate` challenges.
//!
//! Credentials come from the server's environment (`CORRAL_REGISTRY_USER` and
//! `CORRAL_REGISTRY_PASSWORD`, `OLLAMA_` spellings accepted) or from a Docker-style config file
//! (`CORRAL_REGISTRY_AUTH_FILE`, else `$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`), so a `docker login` already done works. They are sent only when a
//! registry asks for them.

use std::path::PathBuf;

use base64::Engine as _;

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    /// Where they came from, for error messages.
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The value of an `Authorization: Basic` header.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

fn env(name: &str) -> Option<String> {
    [format!("CORRAL_{name}"), format!("OLLAMA_{name}")]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// The config file credentials are read from.
pub fn config_file() -> Option<PathBuf> {
    if let Some(p) = env("REGISTRY_AUTH_FILE") {
        return Some(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// Credentials for `host` (`name:port` as in model names), if any are configured.
pub fn credentials_for(host: &str) -> Option<Credentials> {
    if let (Some(user), Some(password)) = (env("REGISTRY_USER"), env("REGISTRY_PASSWORD")) {
        return Some(Credentials {
            user,
            password,
            source: "CORRAL_REGISTRY_USER and CORRAL_REGISTRY_PASSWORD".into(),
        });
    }
    let path = config_file()?;
    let text = std::fs::read_to_string(&path).ok()?;
    let mut c = from_config(&text, host)?;
    c.source = path.display().to_string();
    Some(c)
}

/// Credentials for `host` in the text of a Docker config file: `auths.<host>` with `auth`
/// (base64 of `user:password`) or `username` and `password`; keys may carry a scheme.
pub fn from_config(text: &str, host: &str) -> Option<Credentials> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let auths = v.get("auths")?.as_object()?;
    let entry = auths.iter().find_map(|(k, e)| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        k.eq_ignore_ascii_case(host).then_some(e)
    })?;
    let s = |k: &str| entry.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let (user, password) = match s("auth") {
        Some(a) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .ok()?;
            let raw = String::from_utf8(raw).ok()?;
            let (u, p) = raw.split_once(':')?;
            (u.to_string(), p.to_string())
        }
        None => (s("username")?, s("password")?),
    };
    Some(Credentials {
        user,
        password,
        source: String::new(),
    })
}

/// One `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer`, lower-cased.
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// Parse `Scheme key="value", key2=value2`. Registries send one challenge per header; the
/// grammar is small enough that a parser crate would add more than it saves.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = r.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            value = out;
            rest = &r[end?..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        params.push((key, value));
        rest = rest.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(r#"Basic realm="corral-test""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.param("realm"), Some("corral-test"));

        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:me/m:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.example/token"));
        assert_eq!(c.param("service"), Some("registry.example"));
        assert_eq!(c.param("scope"), Some("repository:me/m:pull,push"));

        let c = parse_challenge(r#"Bearer realm=https://a/t, error="invalid \"token\"""#).unwrap();
        assert_eq!(c.param("realm"), Some("https://a/t"));
        assert_eq!(c.param("error"), Some(r#"invalid "token""#));

        assert_eq!(parse_challenge("Basic").unwrap().params, vec![]);
        assert_eq!(parse_challenge(""), None);
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
    }

    #[test]
    fn docker_config() {
        let text = r#"{"auths": {
            "https://reg.example:5000": {"auth": "YWxpY2U6czNjcjp0"},
            "other.example": {"username": "bob", "password": "pw"}
        }}"#;
        let c = from_config(text, "reg.example:5000").unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("alice", "s3cr:t"));
        let c = from_config(text, "OTHER.example").unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("bob", "pw"));
        assert!(from_config(text, "third.example").is_none());
        assert!(from_config("not json", "reg.example:5000").is_none());
        assert_eq!(
            c.basic_header(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("bob:pw")
            )
        );
    }
}
