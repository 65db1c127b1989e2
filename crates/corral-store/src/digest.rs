use std::fmt;
use std::str::FromStr;

/// A sha256 content digest, always 64 lowercase hex digits once parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
pub struct DigestError(pub String);

impl Digest {
    /// From the raw 32-byte hash.
    pub fn from_bytes(hash: &[u8]) -> Self {
        Digest(hex::encode(hash))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// The blob's file name in the store: `sha256-<hex>`.
    pub fn file_name(&self) -> String {
        format!("sha256-{}", self.0)
    }

    /// The first 12 hex digits, as Ollama shows IDs and layers.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    /// Accepts `sha256:<hex>` (the wire form) and `sha256-<hex>` (the file form).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("sha256-"))
            .ok_or_else(|| DigestError(s.to_string()))?;
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Digest(hex.to_ascii_lowercase()))
        } else {
            Err(DigestError(s.to_string()))
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let hex = "a".repeat(64);
        let cases = [
            (format!("sha256:{hex}"), true),
            (format!("sha256-{hex}"), true),
            (format!("sha256:{}", "A".repeat(64)), true),
            (format!("sha256:{}", "a".repeat(63)), false),
            (format!("sha256:{}", "g".repeat(64)), false),
            (format!("sha512:{hex}"), false),
            ("sha256:../../etc/passwd".to_string(), false),
            (format!("sha256:{}/..", "a".repeat(61)), false),
            (hex.clone(), false),
        ];
        for (input, ok) in cases {
            assert_eq!(input.parse::<Digest>().is_ok(), ok, "{input}");
        }
        assert_eq!(
            format!("sha256:{}", "A".repeat(64))
                .parse::<Digest>()
                .unwrap()
                .hex(),
            "a".repeat(64)
        );
    }
}
