//! The vendor visibility variables, parsed into an explicit decision with a reason.
//!
//! Corral's rules, the same for every variable: unset means all of that vendor's devices;
//! empty (or only whitespace) and `-1` mean none; otherwise a comma-separated list of indices
//! or `GPU-<uuid>` / `MIG-<uuid>` ids, whitespace trimmed, duplicates dropped, invalid entries
//! ignored with a warning (and a list with no valid entry means none). The runner gets the
//! variable back in this normalized form, so the vendor runtime sees exactly what was decided.

use serde::{Deserialize, Serialize};

/// GPU vendors and the variables that hide their devices.
pub const VARIABLES: &[(&str, &str)] = &[
    ("CUDA_VISIBLE_DEVICES", "CUDA"),
    ("HIP_VISIBLE_DEVICES", "ROCm"),
    ("ROCR_VISIBLE_DEVICES", "ROCm"),
    ("GPU_DEVICE_ORDINAL", "ROCm"),
    ("GGML_VK_VISIBLE_DEVICES", "Vulkan"),
];

/// One device named in a list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DeviceId {
    Index(u32),
    Uuid(String),
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceId::Index(i) => write!(f, "{i}"),
            DeviceId::Uuid(u) => f.write_str(u),
        }
    }
}

/// What a variable allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "visible", content = "devices", rename_all = "lowercase")]
pub enum Visibility {
    All,
    None,
    Some(Vec<DeviceId>),
}

/// The decision for one variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub variable: String,
    pub vendor: String,
    pub value: Option<String>,
    pub visibility: Visibility,
    /// Entries that were dropped, each with why.
    pub ignored: Vec<String>,
    /// In words, for people: "CUDA devices hidden: CUDA_VISIBLE_DEVICES is empty".
    pub reason: String,
    /// The value passed to runners (`None`: leave it unset).
    pub normalized: Option<String>,
}

/// Parse one variable's value (`None` when unset).
pub fn decide(variable: &str, vendor: &str, value: Option<&str>) -> Decision {
    let mut ignored = Vec::new();
    let (visibility, reason) = match value {
        None => (
            Visibility::All,
            format!("all {vendor} devices visible: {variable} is unset"),
        ),
        Some(v) if v.trim().is_empty() => (
            Visibility::None,
            format!("{vendor} devices hidden: {variable} is empty"),
        ),
        Some(v) if v.trim() == "-1" => (
            Visibility::None,
            format!("{vendor} devices hidden: {variable} is -1"),
        ),
        Some(v) => {
            let mut ids: Vec<DeviceId> = Vec::new();
            for raw in v.split(',') {
                let e = raw.trim();
                let id = if let Ok(i) = e.parse::<u32>() {
                    Some(DeviceId::Index(i))
                } else if (e.starts_with("GPU-") || e.starts_with("MIG-"))
                    && e.len() > 4
                    && e[4..]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '/')
                {
                    Some(DeviceId::Uuid(e.to_string()))
                } else {
                    None
                };
                match id {
                    Some(id) if ids.contains(&id) => ignored.push(format!("{e:?} (duplicate)")),
                    Some(id) => ids.push(id),
                    None => ignored.push(format!("{e:?} (not an index or a GPU-/MIG- id)")),
                }
            }
            if ids.is_empty() {
                (
                    Visibility::None,
                    format!("{vendor} devices hidden: {variable}={v:?} names no valid device"),
                )
            } else {
                let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
                let reason = format!(
                    "{vendor} devices limited to {} by {variable}",
                    list.join(",")
                );
                (Visibility::Some(ids), reason)
            }
        }
    };
    let normalized = match &visibility {
        Visibility::All => None,
        Visibility::None => Some("-1".to_string()),
        Visibility::Some(ids) => Some(
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
    };
    Decision {
        variable: variable.to_string(),
        vendor: vendor.to_string(),
        value: value.map(str::to_string),
        visibility,
        ignored,
        reason,
        normalized,
    }
}

/// Decisions for every variable, read through `get` (the environment, in practice).
pub fn decide_all(get: impl Fn(&str) -> Option<String>) -> Vec<Decision> {
    VARIABLES
        .iter()
        .map(|(var, vendor)| decide(var, vendor, get(var).as_deref()))
        .collect()
}

/// Whether a backend's devices are hidden by the decisions (`CUDA`, `ROCm`/`HIP`, `Vulkan`).
pub fn backend_hidden(decisions: &[Decision], backend: &str) -> bool {
    let vendor = match backend.to_ascii_lowercase().as_str() {
        "cuda" => "CUDA",
        "rocm" | "hip" => "ROCm",
        "vulkan" => "Vulkan",
        _ => return false,
    };
    decisions
        .iter()
        .any(|d| d.vendor == vendor && d.visibility == Visibility::None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use DeviceId::*;

    /// (visibility, ignored entries, normalized value)
    type Outcome = (Visibility, usize, Option<String>);

    fn vis(v: Option<&str>) -> Outcome {
        let d = decide("CUDA_VISIBLE_DEVICES", "CUDA", v);
        (d.visibility, d.ignored.len(), d.normalized)
    }

    #[test]
    fn table() {
        let some = |ids: Vec<DeviceId>| Visibility::Some(ids);
        let n = |s: &str| Some(s.to_string());
        let cases: Vec<(Option<&str>, Outcome)> = vec![
            (None, (Visibility::All, 0, None)),
            (Some(""), (Visibility::None, 0, n("-1"))),
            (Some("   "), (Visibility::None, 0, n("-1"))),
            (Some("\t"), (Visibility::None, 0, n("-1"))),
            (Some("-1"), (Visibility::None, 0, n("-1"))),
            (Some(" -1 "), (Visibility::None, 0, n("-1"))),
            (Some("0"), (some(vec![Index(0)]), 0, n("0"))),
            (Some("1"), (some(vec![Index(1)]), 0, n("1"))),
            (Some("0,1"), (some(vec![Index(0), Index(1)]), 0, n("0,1"))),
            (Some("1,0"), (some(vec![Index(1), Index(0)]), 0, n("1,0"))),
            (
                Some(" 0 , 1 "),
                (some(vec![Index(0), Index(1)]), 0, n("0,1")),
            ),
            (Some("0,0"), (some(vec![Index(0)]), 1, n("0"))),
            (
                Some("1,0,1,0"),
                (some(vec![Index(1), Index(0)]), 2, n("1,0")),
            ),
            (Some("abc"), (Visibility::None, 1, n("-1"))),
            (Some("0,abc"), (some(vec![Index(0)]), 1, n("0"))),
            (Some("abc,1"), (some(vec![Index(1)]), 1, n("1"))),
            (Some("0,-1"), (some(vec![Index(0)]), 1, n("0"))),
            (Some("-2"), (Visibility::None, 1, n("-1"))),
            (Some("1.5"), (Visibility::None, 1, n("-1"))),
            (Some("0,,1"), (some(vec![Index(0), Index(1)]), 1, n("0,1"))),
            (Some(","), (Visibility::None, 2, n("-1"))),
            (Some("0,"), (some(vec![Index(0)]), 1, n("0"))),
            (
                Some("GPU-8d8f6a1e-1b2c-4d5e-8f90-a1b2c3d4e5f6"),
                (
                    some(vec![Uuid(
                        "GPU-8d8f6a1e-1b2c-4d5e-8f90-a1b2c3d4e5f6".into(),
                    )]),
                    0,
                    n("GPU-8d8f6a1e-1b2c-4d5e-8f90-a1b2c3d4e5f6"),
                ),
            ),
            (
                Some("MIG-GPU-8d8f6a1e/1/0"),
                (
                    some(vec![Uuid("MIG-GPU-8d8f6a1e/1/0".into())]),
                    0,
                    n("MIG-GPU-8d8f6a1e/1/0"),
                ),
            ),
            (
                Some("MIG-4f1e2d3c-aaaa-bbbb-cccc-0123456789ab"),
                (
                    some(vec![Uuid(
                        "MIG-4f1e2d3c-aaaa-bbbb-cccc-0123456789ab".into(),
                    )]),
                    0,
                    n("MIG-4f1e2d3c-aaaa-bbbb-cccc-0123456789ab"),
                ),
            ),
            (
                Some("GPU-abc,0"),
                (
                    some(vec![Uuid("GPU-abc".into()), Index(0)]),
                    0,
                    n("GPU-abc,0"),
                ),
            ),
            (Some("GPU-"), (Visibility::None, 1, n("-1"))),
            (Some("GPU-a b"), (Visibility::None, 1, n("-1"))),
            (Some("gpu-abc"), (Visibility::None, 1, n("-1"))),
            (
                Some("GPU-abc,GPU-abc"),
                (some(vec![Uuid("GPU-abc".into())]), 1, n("GPU-abc")),
            ),
            (Some("00"), (some(vec![Index(0)]), 0, n("0"))),
            (Some("0,00"), (some(vec![Index(0)]), 1, n("0"))),
            (Some("4294967296"), (Visibility::None, 1, n("-1"))),
            (Some("+1"), (some(vec![Index(1)]), 0, n("1"))),
            (Some("0;1"), (Visibility::None, 1, n("-1"))),
            (Some("all"), (Visibility::None, 1, n("-1"))),
        ];
        for (input, want) in cases {
            assert_eq!(vis(input), want, "{input:?}");
        }
    }

    #[test]
    fn reasons_say_why() {
        assert_eq!(
            decide("CUDA_VISIBLE_DEVICES", "CUDA", Some("")).reason,
            "CUDA devices hidden: CUDA_VISIBLE_DEVICES is empty"
        );
        assert_eq!(
            decide("CUDA_VISIBLE_DEVICES", "CUDA", Some("-1")).reason,
            "CUDA devices hidden: CUDA_VISIBLE_DEVICES is -1"
        );
        assert_eq!(
            decide("HIP_VISIBLE_DEVICES", "ROCm", None).reason,
            "all ROCm devices visible: HIP_VISIBLE_DEVICES is unset"
        );
        assert_eq!(
            decide("CUDA_VISIBLE_DEVICES", "CUDA", Some("abc")).reason,
            "CUDA devices hidden: CUDA_VISIBLE_DEVICES=\"abc\" names no valid device"
        );
        let d = decide("GGML_VK_VISIBLE_DEVICES", "Vulkan", Some("1,x"));
        assert_eq!(
            d.reason,
            "Vulkan devices limited to 1 by GGML_VK_VISIBLE_DEVICES"
        );
        assert_eq!(d.ignored, vec!["\"x\" (not an index or a GPU-/MIG- id)"]);
        let all = decide_all(|v| (v == "CUDA_VISIBLE_DEVICES").then(|| "".to_string()));
        assert!(
            backend_hidden(&all, "CUDA")
                && !backend_hidden(&all, "Vulkan")
                && !backend_hidden(&all, "CPU")
        );
    }

    proptest! {
        #[test]
        fn any_value_gives_a_stable_decision(v in "[0-9a-zA-Z ,\\-/]{0,30}") {
            let d = decide("CUDA_VISIBLE_DEVICES", "CUDA", Some(&v));
            // The normalized form means the same thing when read again, and has no duplicates.
            let again = decide("CUDA_VISIBLE_DEVICES", "CUDA", d.normalized.as_deref());
            prop_assert_eq!(&again.visibility, &d.visibility);
            prop_assert!(again.ignored.is_empty());
            if let Visibility::Some(ids) = &d.visibility {
                let mut uniq = ids.clone();
                uniq.dedup();
                prop_assert_eq!(uniq.len(), ids.len());
            }
        }
    }
}
