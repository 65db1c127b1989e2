//! The types `create --quantize` makes: llama.cpp's file types, as `general.file_type` numbers
//! and the names `corral show` prints.

use std::fmt;
use std::str::FromStr;

/// A type a model's weights can be quantized to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantType {
    /// As `corral show` prints it (`Q4_K_M`).
    pub name: &'static str,
    /// llama.cpp's `llama_ftype`, the GGUF's `general.file_type`.
    pub ftype: u32,
}

const fn t(name: &'static str, ftype: u32) -> QuantType {
    QuantType { name, ftype }
}

/// Every type Corral quantizes to. The importance-matrix types (IQ*) are left out: llama.cpp
/// refuses them without an imatrix, which a Modelfile cannot give.
pub const QUANT_TYPES: &[QuantType] = &[
    t("Q4_0", 2),
    t("Q4_1", 3),
    t("Q8_0", 7),
    t("Q5_0", 8),
    t("Q5_1", 9),
    t("Q2_K", 10),
    t("Q3_K_S", 11),
    t("Q3_K_M", 12),
    t("Q3_K_L", 13),
    t("Q4_K_S", 14),
    t("Q4_K_M", 15),
    t("Q5_K_S", 16),
    t("Q5_K_M", 17),
    t("Q6_K", 18),
];

impl FromStr for QuantType {
    type Err = String;

    /// Case-insensitive, as Ollama's `-q q4_K_M`.
    fn from_str(s: &str) -> Result<Self, String> {
        let wanted = s.trim();
        QUANT_TYPES
            .iter()
            .find(|q| q.name.eq_ignore_ascii_case(wanted))
            .copied()
            .ok_or_else(|| {
                let names: Vec<String> =
                    QUANT_TYPES.iter().map(|q| q.name.to_lowercase()).collect();
                format!(
                    "unsupported quantization type '{wanted}': use one of {}",
                    names.join(", ")
                )
            })
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Whether a model of this file type (`F16`, as `corral show` prints it) can be quantized:
/// only unquantized weights can; quantizing twice loses more than it saves.
pub fn is_quantize_source(file_type: &str) -> bool {
    matches!(file_type, "F32" | "F16" | "BF16")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_any_case_and_unknown_ones_list_the_choices() {
        let q: QuantType = "q4_k_m".parse().unwrap();
        assert_eq!((q.name, q.ftype), ("Q4_K_M", 15));
        assert_eq!(" Q8_0 ".parse::<QuantType>().unwrap().ftype, 7);
        let e = "q3_x".parse::<QuantType>().unwrap_err();
        assert!(e.contains("unsupported quantization type 'q3_x'"), "{e}");
        assert!(e.contains("q4_k_m") && e.contains("q8_0"), "{e}");
        assert!(is_quantize_source("F16") && !is_quantize_source("Q4_1"));
    }
}
