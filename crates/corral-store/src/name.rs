use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub const DEFAULT_HOST: &str = "registry.ollama.ai";
pub const DEFAULT_NAMESPACE: &str = "library";
pub const DEFAULT_TAG: &str = "latest";

/// A model name `[host/][namespace/]model[:tag]`, with Ollama's defaults filled in.
///
/// Each part is checked against a strict character set (letters, digits, `_`, `.`, `-`,
/// starting with a letter or digit; the host may also hold a `:port`), so a name can never
/// contain a path separator or a `..` component.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name {
    pub host: String,
    pub namespace: String,
    pub model: String,
    pub tag: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid model name {0:?}")]
    Invalid(String),
}

fn valid_part(s: &str, max: usize, extra: &[u8]) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c) || extra.contains(c))
}

impl FromStr for Name {
    type Err = NameError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = || NameError::Invalid(input.to_string());
        let s = input.trim();
        // Tags follow the last ':' after the last '/'; a ':' before it is a host's port.
        let slash = s.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match s[slash..].rfind(':') {
            Some(i) => (&s[..slash + i], &s[slash + i + 1..]),
            None => (s, DEFAULT_TAG),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let (host, namespace, model) = match parts.as_slice() {
            [m] => (DEFAULT_HOST, DEFAULT_NAMESPACE, *m),
            [ns, m] => (DEFAULT_HOST, *ns, *m),
            [h, ns, m] => (*h, *ns, *m),
            _ => return Err(bad()),
        };
        let ok = valid_part(host, 350, b":")
            && valid_part(namespace, 80, b"")
            && valid_part(model, 80, b"")
            && valid_part(tag, 80, b"");
        if !ok {
            return Err(bad());
        }
        Ok(Name {
            host: host.to_string(),
            namespace: namespace.to_string(),
            model: model.to_string(),
            tag: tag.to_string(),
        })
    }
}

impl Name {
    /// Same model, ignoring case.
    pub fn eq_fold(&self, other: &Name) -> bool {
        self.host.eq_ignore_ascii_case(&other.host)
            && self.namespace.eq_ignore_ascii_case(&other.namespace)
            && self.model.eq_ignore_ascii_case(&other.model)
            && self.tag.eq_ignore_ascii_case(&other.tag)
    }

    /// The manifest's path relative to `<root>/manifests`.
    pub fn manifest_path(&self) -> PathBuf {
        [&self.host, &self.namespace, &self.model, &self.tag]
            .iter()
            .collect()
    }

    /// The shortest form that parses back to the same name, as `ollama list` shows it:
    /// the default host and namespace are left out, the tag is always shown.
    pub fn display_short(&self) -> String {
        if self.host != DEFAULT_HOST {
            format!(
                "{}/{}/{}:{}",
                self.host, self.namespace, self.model, self.tag
            )
        } else if self.namespace != DEFAULT_NAMESPACE {
            format!("{}/{}:{}", self.namespace, self.model, self.tag)
        } else {
            format!("{}:{}", self.model, self.tag)
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}:{}",
            self.host, self.namespace, self.model, self.tag
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        let cases: &[(&str, Option<&str>)] = &[
            ("smol", Some("registry.ollama.ai/library/smol:latest")),
            ("smol:cpu", Some("registry.ollama.ai/library/smol:cpu")),
            ("me/smol", Some("registry.ollama.ai/me/smol:latest")),
            (
                "localhost:5000/me/smol:v1",
                Some("localhost:5000/me/smol:v1"),
            ),
            ("hf.co/user/repo:Q4_K_M", Some("hf.co/user/repo:Q4_K_M")),
            (
                "llama3.2:1b-instruct-q4_0",
                Some("registry.ollama.ai/library/llama3.2:1b-instruct-q4_0"),
            ),
            ("", None),
            ("..", None),
            ("../etc/passwd", None),
            ("a/../b", None),
            ("a/b/c/d", None),
            ("smol:", None),
            ("smol:../x", None),
            ("-smol", None),
            ("sm ol", None),
            ("smol/", None),
            ("/smol", None),
            ("a\\b", None),
            (":tag", None),
        ];
        for (input, want) in cases {
            let got = input.parse::<Name>().ok().map(|n| n.to_string());
            assert_eq!(got.as_deref(), *want, "{input:?}");
        }
        assert_eq!(
            "SMOL".parse::<Name>().unwrap().display_short(),
            "SMOL:latest"
        );
        assert!("Smol:Latest"
            .parse::<Name>()
            .unwrap()
            .eq_fold(&"smol".parse().unwrap()));
    }

    proptest! {
        #[test]
        fn parsed_names_stay_inside_the_store(s in "\\PC{0,40}") {
            if let Ok(n) = s.parse::<Name>() {
                let p = n.manifest_path();
                prop_assert_eq!(p.components().count(), 4);
                for c in p.components() {
                    prop_assert!(matches!(c, std::path::Component::Normal(_)));
                }
                prop_assert_eq!(n.display_short().parse::<Name>().unwrap(), n);
            }
        }
    }
}
