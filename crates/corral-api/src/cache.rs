//! KV cache types and the flash attention setting: parsed here (no C++), turned into
//! llama.cpp's values by the engine.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What the KV cache stores keys and values as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvCacheType {
    #[default]
    F16,
    Q8_0,
    Q4_0,
}

impl KvCacheType {
    pub const NAMES: &'static str = "\"f16\", \"q8_0\" or \"q4_0\"";

    pub fn as_str(self) -> &'static str {
        match self {
            KvCacheType::F16 => "f16",
            KvCacheType::Q8_0 => "q8_0",
            KvCacheType::Q4_0 => "q4_0",
        }
    }

    /// Bytes per cell relative to f16 (ggml's blocks: 32 values in 34 bytes for q8_0, in 18
    /// for q4_0, against 64).
    pub fn size_ratio(self) -> f64 {
        match self {
            KvCacheType::F16 => 1.0,
            KvCacheType::Q8_0 => 34.0 / 64.0,
            KvCacheType::Q4_0 => 18.0 / 64.0,
        }
    }

    /// A quantized cache: llama.cpp needs flash attention to quantize the values.
    pub fn is_quantized(self) -> bool {
        self != KvCacheType::F16
    }
}

impl FromStr for KvCacheType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "f16" => Ok(KvCacheType::F16),
            "q8_0" => Ok(KvCacheType::Q8_0),
            "q4_0" => Ok(KvCacheType::Q4_0),
            other => Err(format!(
                "unknown KV cache type \"{other}\": expected {}",
                Self::NAMES
            )),
        }
    }
}

impl fmt::Display for KvCacheType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Flash attention: llama.cpp decides (`auto`, where the device supports it), on, or off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlashAttention {
    #[default]
    Auto,
    On,
    Off,
}

impl FlashAttention {
    pub fn as_str(self) -> &'static str {
        match self {
            FlashAttention::Auto => "auto",
            FlashAttention::On => "on",
            FlashAttention::Off => "off",
        }
    }
}

impl FromStr for FlashAttention {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(FlashAttention::Auto),
            "1" | "on" | "true" | "yes" => Ok(FlashAttention::On),
            "0" | "off" | "false" | "no" => Ok(FlashAttention::Off),
            other => Err(format!(
                "unknown flash attention setting \"{other}\": expected auto, 1/on or 0/off"
            )),
        }
    }
}

impl fmt::Display for FlashAttention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_both_ways() {
        for t in [KvCacheType::F16, KvCacheType::Q8_0, KvCacheType::Q4_0] {
            assert_eq!(t.as_str().parse::<KvCacheType>().unwrap(), t);
        }
        assert_eq!("Q8_0".parse::<KvCacheType>().unwrap(), KvCacheType::Q8_0);
        assert!("q5_1".parse::<KvCacheType>().unwrap_err().contains("q5_1"));
        assert_eq!("1".parse::<FlashAttention>().unwrap(), FlashAttention::On);
        assert_eq!(
            "off".parse::<FlashAttention>().unwrap(),
            FlashAttention::Off
        );
        assert_eq!("".parse::<FlashAttention>().unwrap(), FlashAttention::Auto);
        assert!("maybe".parse::<FlashAttention>().is_err());
        assert!(KvCacheType::Q4_0.size_ratio() < KvCacheType::Q8_0.size_ratio());
    }
}
