//! Rope settings: the base, and the scaling (`linear`, Llama 3.1's `llama3`, Phi 3.5's
//! `longrope`) of a `config.json` in Transformers' older layout or its `rope_parameters`.

use serde_json::Value as Json;

use super::float;
use crate::ConvertError;

/// The rope settings of `config.json` for a kind of layer: Transformers 5 writes them in
/// `rope_parameters` (for Gemma 3 one object per kind of layer), older versions at the top
/// level (`rope_theta`, `rope_scaling`, `rope_local_base_freq`).
pub(super) fn rope_parameters<'a>(config: &'a Json, layer_type: &str) -> &'a Json {
    let p = &config["rope_parameters"];
    match &p[layer_type] {
        Json::Object(_) => &p[layer_type],
        _ if p["rope_theta"].is_number() => p,
        _ => config,
    }
}

pub(super) enum Rope {
    None,
    Linear(f32),
    Llama3(Llama3Scaling),
    LongRope(LongRope),
}

/// Phi 3.5's and 4's LongRoPE: a factor per rotated frequency for contexts up to the
/// original length (`short_factor`) and beyond it (`long_factor`).
pub(super) struct LongRope {
    long: Vec<f32>,
    short: Vec<f32>,
    /// The context the model was trained at before its extension.
    pub(super) original: f64,
}

impl LongRope {
    /// The long and short factors, checked against the head's `rotated` dimensions, and the
    /// attention factor llama.cpp's converter writes for a `context` longer than the
    /// original: sqrt(1 + ln(scale) / ln(original)), 1 when it is not longer.
    pub(super) fn checked(
        &self,
        rotated: u64,
        context: u64,
    ) -> Result<(Vec<f32>, Vec<f32>, f32), ConvertError> {
        let n = (rotated / 2) as usize;
        if self.long.len() != n || self.short.len() != n {
            return Err(ConvertError::Invalid {
                file: "config.json".into(),
                why: format!(
                    "rope_scaling's long_factor and short_factor have {} and {} values; the \
                     {rotated} rotated dimensions of a head need {n} each",
                    self.long.len(),
                    self.short.len()
                ),
            });
        }
        let scale = context as f64 / self.original;
        let attn = match scale > 1.0 {
            true => (1.0 + scale.ln() / self.original.ln()).sqrt(),
            false => 1.0,
        };
        Ok((self.long.clone(), self.short.clone(), attn as f32))
    }
}

/// Llama 3.1's rope scaling, as `config.json` gives it.
pub(super) struct Llama3Scaling {
    factor: f32,
    low: f32,
    high: f32,
    original: f32,
}

pub(super) fn rope_scaling(config: &Json) -> Result<Rope, ConvertError> {
    let (s, default) = match &config["rope_scaling"] {
        Json::Null => (rope_parameters(config, "full_attention"), "default"),
        s => (s, ""),
    };
    if s.is_null() || std::ptr::eq(s, config) {
        return Ok(Rope::None);
    }
    let kind = s["rope_type"]
        .as_str()
        .or(s["type"].as_str())
        .unwrap_or(default);
    let get = |k: &str, d: f64| float(s, k, d);
    match kind {
        "default" => Ok(Rope::None),
        "linear" => Ok(Rope::Linear(get("factor", 1.0)?)),
        "llama3" => Ok(Rope::Llama3(Llama3Scaling {
            factor: get("factor", 8.0)?,
            low: get("low_freq_factor", 1.0)?,
            high: get("high_freq_factor", 4.0)?,
            original: get("original_max_position_embeddings", 8192.0)?,
        })),
        // "su" is its name in Phi 3's first configs.
        "longrope" | "su" => {
            let invalid = |why: String| ConvertError::Invalid {
                file: "config.json".into(),
                why,
            };
            let factors = |key: &str| -> Result<Vec<f32>, ConvertError> {
                s[key]
                    .as_array()
                    .and_then(|a| a.iter().map(|x| x.as_f64().map(|x| x as f32)).collect())
                    .ok_or_else(|| {
                        invalid(format!("rope_scaling's {key} is not a list of numbers"))
                    })
            };
            let key = "original_max_position_embeddings";
            let original = s[key]
                .as_f64()
                .or(config[key].as_f64())
                .filter(|&n| n > 1.0)
                .ok_or_else(|| invalid(format!("LongRoPE needs {key}")))?;
            Ok(Rope::LongRope(LongRope {
                long: factors("long_factor")?,
                short: factors("short_factor")?,
                original,
            }))
        }
        other => Err(ConvertError::Unsupported(format!(
            "config.json: rope_scaling {other:?} is not supported (only linear, llama3 and \
             longrope)"
        ))),
    }
}

/// The per-frequency factors of Llama 3.1's rope scaling (`rope_freqs.weight`), as llama.cpp's
/// converter computes them: high frequencies kept, low ones divided by `factor`, a smooth
/// blend between.
pub(super) fn llama3_rope_factors(theta: f32, head_dim: u64, s: &Llama3Scaling) -> Vec<f32> {
    let low_wavelen = s.original / s.low;
    let high_wavelen = s.original / s.high;
    (0..head_dim)
        .step_by(2)
        .map(|i| {
            let freq = 1.0 / theta.powf(i as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                s.factor
            } else {
                let smooth = (s.original / wavelen - s.low) / (s.high - s.low);
                1.0 / ((1.0 - smooth) / s.factor + smooth)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longrope_factors_are_checked_and_the_attention_factor_follows_the_context() {
        // Phi 3.5 mini: heads of 96 rotated whole, 4096 extended to 131072.
        let c = serde_json::json!({"original_max_position_embeddings": 4096,
            "rope_scaling": {"type": "longrope", "long_factor": vec![1.5; 48],
                             "short_factor": vec![1.0; 48]}});
        let Ok(Rope::LongRope(s)) = rope_scaling(&c) else {
            panic!()
        };
        let (long, short, attn) = s.checked(96, 131072).unwrap();
        assert_eq!((long.len(), short.len(), long[0]), (48, 48, 1.5));
        // sqrt(1 + ln 32 / ln 4096) = sqrt(1 + 5/12)
        assert!((attn - (17.0f32 / 12.0).sqrt()).abs() < 1e-6, "{attn}");
        assert_eq!(s.checked(96, 4096).unwrap().2, 1.0);
        // Phi 4 mini rotates 96 of its 128: 48 factors, not 64.
        let e = s.checked(128, 131072).err().unwrap().to_string();
        assert!(
            e.contains("48 and 48 values; the 128 rotated dimensions"),
            "{e}"
        );
        let e = rope_scaling(&serde_json::json!({"rope_scaling": {"type": "su",
            "long_factor": [1.0], "short_factor": [1.0]}}))
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("LongRoPE needs original_max_position_embeddings"),
            "{e}"
        );
    }

    #[test]
    fn llama3_rope_factors_keep_high_frequencies_and_scale_low_ones() {
        // Llama 3.1 8B: theta 500000, head size 128, factor 8, 1, 4, 8192.
        let s = Llama3Scaling {
            factor: 8.0,
            low: 1.0,
            high: 4.0,
            original: 8192.0,
        };
        let f = llama3_rope_factors(500000.0, 128, &s);
        assert_eq!(f.len(), 64);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[63], 8.0);
        assert!(f.windows(2).all(|w| w[0] <= w[1]), "{f:?}");
        assert!(
            f.iter().any(|&x| x > 1.0 && x < 8.0),
            "a blend between: {f:?}"
        );
    }

    #[test]
    fn unknown_rope_scaling_is_refused() {
        let c = serde_json::json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}});
        let e = rope_scaling(&c).err().unwrap().to_string();
        assert!(e.contains("\"yarn\" is not supported"), "{e}");
    }
}
