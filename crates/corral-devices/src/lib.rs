//! Which devices a model may use, decided explicitly and explained.
//!
//! - `visibility`: the vendor variables (`CUDA_VISIBLE_DEVICES`, ...) parsed into a decision
//!   with a human reason, never left to a vendor runtime to interpret.
//! - `fit`: how many layers fit on the visible GPUs' free memory, KV cache included.
//! - CPU facts (model, cores, SIMD, cgroup quota) come from `corral-os`.
//!
//! GPU enumeration itself needs llama.cpp, so it happens in a short-lived probe process
//! (`corral runner --probe`), never in the server.

pub mod fit;
pub mod rpc;
pub mod visibility;

use serde::{Deserialize, Serialize};

/// `CORRAL_DEVICE`: where models may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceMode {
    /// GPUs when there are any, else the CPU.
    Auto,
    /// The CPU only, whatever GPUs there are.
    Cpu,
    /// GPUs only: an error when there is none.
    Gpu,
}

impl DeviceMode {
    /// Parse `auto`, `cpu` or `gpu` (case-insensitive; empty means auto).
    pub fn parse(s: &str) -> Result<DeviceMode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(DeviceMode::Auto),
            "cpu" => Ok(DeviceMode::Cpu),
            "gpu" => Ok(DeviceMode::Gpu),
            other => Err(format!(
                "CORRAL_DEVICE must be auto, cpu or gpu, not {other:?}"
            )),
        }
    }
}

/// A device the probe found (llama.cpp's backend device list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbedDevice {
    pub index: usize,
    pub name: String,
    pub description: String,
    pub backend: String,
    /// `cpu`, `gpu`, `igpu`, `accel`, `unknown`.
    pub kind: String,
    pub memory_total: u64,
    pub memory_free: u64,
}

impl ProbedDevice {
    pub fn is_gpu(&self) -> bool {
        matches!(self.kind.as_str(), "gpu" | "igpu")
    }
}

/// How many layers to offload, from `num_gpu` and the mode.
///
/// `num_gpu`: `Some(0)` = CPU only; `Some(n)` = n layers; `None` or `Some(-1)` = automatic
/// fit (`auto_fit`). With no usable GPU, or `CORRAL_DEVICE=cpu`, the answer is 0.
pub fn gpu_layers(
    mode: DeviceMode,
    num_gpu: Option<i64>,
    gpus_visible: bool,
    auto_fit: impl FnOnce() -> u32,
) -> Result<u32, String> {
    match (mode, gpus_visible) {
        (DeviceMode::Cpu, _) => Ok(0),
        (DeviceMode::Gpu, false) => {
            Err("CORRAL_DEVICE=gpu, but no GPU is available (see `corral devices`)".into())
        }
        (_, false) => Ok(0),
        (_, true) => Ok(match num_gpu {
            Some(n) if n >= 0 => n as u32,
            _ => auto_fit(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(DeviceMode::parse("GPU"), Ok(DeviceMode::Gpu));
        assert_eq!(DeviceMode::parse(""), Ok(DeviceMode::Auto));
        assert!(DeviceMode::parse("tpu")
            .unwrap_err()
            .contains("auto, cpu or gpu"));
    }

    #[test]
    fn layer_choice() {
        let fit = || 20;
        assert_eq!(gpu_layers(DeviceMode::Auto, None, false, fit), Ok(0));
        assert_eq!(gpu_layers(DeviceMode::Auto, Some(10), false, fit), Ok(0));
        assert_eq!(gpu_layers(DeviceMode::Auto, None, true, fit), Ok(20));
        assert_eq!(gpu_layers(DeviceMode::Auto, Some(-1), true, fit), Ok(20));
        assert_eq!(gpu_layers(DeviceMode::Auto, Some(0), true, fit), Ok(0));
        assert_eq!(gpu_layers(DeviceMode::Auto, Some(7), true, fit), Ok(7));
        assert_eq!(gpu_layers(DeviceMode::Cpu, Some(7), true, fit), Ok(0));
        assert!(gpu_layers(DeviceMode::Gpu, None, false, fit).is_err());
        assert_eq!(gpu_layers(DeviceMode::Gpu, None, true, fit), Ok(20));
    }
}

/// Run the probe (`<program> probe`) and read the devices it prints, at most `timeout`.
/// A probe that hangs or crashes (a misbehaving driver) is killed and reported, never waited on.
/// The backend modules a probe loaded (see `corral_engine::modules`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModuleReport {
    /// The folder they were loaded from, and how it was found.
    pub dir: String,
    pub dir_from: String,
    /// The CPU variant in use (`haswell`, `zen4`, ...).
    pub cpu_variant: Option<String>,
    pub modules: Vec<ModuleInfo>,
}

/// One module file: loaded or not, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleInfo {
    pub file: String,
    pub backend: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub loaded: bool,
    pub note: String,
}

/// What a probe child prints: the modules it loaded and the devices they give.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub modules: Option<ModuleReport>,
    pub devices: Vec<ProbedDevice>,
}

pub fn probe(
    program: &std::path::Path,
    env: &[(String, String)],
    timeout: std::time::Duration,
) -> Result<Probe, String> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .arg("probe")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start the device probe: {e}"))?;
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the device probe did not finish in {}s and was stopped",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().map(|mut s| s.read_to_string(&mut out));
    child.stderr.take().map(|mut s| s.read_to_string(&mut err));
    if !status.success() {
        let last = err.lines().last().unwrap_or("").to_string();
        return Err(format!("the device probe failed ({status}): {last}"));
    }
    serde_json::from_str(&out).map_err(|e| format!("unreadable device probe output: {e}"))
}

/// Where models will run, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// `cpu`, `gpu`, or `error` (CORRAL_DEVICE=gpu with no GPU).
    pub decision: String,
    pub reason: String,
    /// The GPUs models may use.
    pub gpus: Vec<ProbedDevice>,
}

/// Decide from the mode, the visibility decisions and what the probe found.
pub fn place(
    mode: DeviceMode,
    decisions: &[visibility::Decision],
    probed: &Result<Vec<ProbedDevice>, String>,
) -> Placement {
    let found: Vec<ProbedDevice> = probed
        .as_ref()
        .map(|d| d.iter().filter(|d| d.is_gpu()).cloned().collect())
        .unwrap_or_default();
    let gpus: Vec<ProbedDevice> = found
        .iter()
        .filter(|d| !visibility::backend_hidden(decisions, &d.backend))
        .cloned()
        .collect();
    let hidden: Vec<&str> = decisions
        .iter()
        .filter(|d| d.visibility == visibility::Visibility::None)
        .map(|d| d.reason.as_str())
        .collect();
    let why_none = if let Err(e) = probed {
        e.clone()
    } else if !found.is_empty() {
        hidden.join("; ")
    } else if !hidden.is_empty() {
        format!("no GPU found ({})", hidden.join("; "))
    } else {
        "no GPU found: this build has no GPU backend, or the machine has no GPU".to_string()
    };
    match (mode, gpus.is_empty()) {
        (DeviceMode::Cpu, _) => Placement {
            decision: "cpu".into(),
            reason: "CORRAL_DEVICE=cpu".into(),
            gpus: Vec::new(),
        },
        (DeviceMode::Gpu, true) => Placement {
            decision: "error".into(),
            reason: format!("CORRAL_DEVICE=gpu, but no GPU is available: {why_none}"),
            gpus,
        },
        (_, true) => Placement {
            decision: "cpu".into(),
            reason: why_none,
            gpus,
        },
        (_, false) => {
            let names: Vec<String> = gpus
                .iter()
                .map(|g| format!("{} ({})", g.description, g.backend))
                .collect();
            Placement {
                decision: "gpu".into(),
                reason: format!("using {}", names.join(", ")),
                gpus,
            }
        }
    }
}

/// What `corral devices` reports (and the server logs at start).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub cpu: corral_os::CpuInfo,
    pub memory_total: u64,
    pub memory_available: u64,
    pub mode: crate::DeviceMode,
    /// The backend modules (each CPU variant, each GPU backend): loaded or not, and why.
    pub modules: Option<ModuleReport>,
    pub devices: Vec<crate::ProbedDevice>,
    pub probe_error: Option<String>,
    pub visibility: Vec<crate::visibility::Decision>,
    pub decision: String,
    pub reason: String,
    /// The RPC workers of CORRAL_RPC_SERVERS, each as it answered (or why it did not).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<rpc::WorkerReport>,
}

/// Gather the report: CPU and memory from the OS, devices from a probe child (10 s at most),
/// visibility and mode from the environment, the RPC `workers` from a probe of each (3 s in
/// all).
pub fn report(program: &std::path::Path, workers: &[String]) -> Result<Report, String> {
    let mode = DeviceMode::parse(&std::env::var("CORRAL_DEVICE").unwrap_or_default())?;
    let visibility = crate::visibility::decide_all(|k| std::env::var(k).ok());
    let env = runner_env(&visibility);
    let probe = crate::probe(program, &env, std::time::Duration::from_secs(10));
    let modules = probe.as_ref().ok().and_then(|p| p.modules.clone());
    let probed = probe.map(|p| p.devices);
    let placement = crate::place(mode, &visibility, &probed);
    let workers = rpc::probe_all(workers, std::time::Duration::from_secs(3));
    let (total, available) = corral_os::memory().unwrap_or((0, 0));
    Ok(Report {
        cpu: corral_os::cpu_info(),
        memory_total: total,
        memory_available: available,
        mode,
        probe_error: probed.as_ref().err().cloned(),
        modules,
        devices: probed.unwrap_or_default(),
        visibility,
        decision: placement.decision,
        reason: placement.reason,
        workers,
    })
}

/// The visibility variables as runners get them: each set one in its normalized form.
pub fn runner_env(decisions: &[visibility::Decision]) -> Vec<(String, String)> {
    decisions
        .iter()
        .filter_map(|d| Some((d.variable.clone(), d.normalized.clone()?)))
        .collect()
}

#[cfg(test)]
mod placement_tests {
    use super::*;

    fn gpu(backend: &str) -> ProbedDevice {
        ProbedDevice {
            index: 1,
            name: "CUDA0".into(),
            description: "NVIDIA RTX 3060".into(),
            backend: backend.into(),
            kind: "gpu".into(),
            memory_total: 12 << 30,
            memory_free: 11 << 30,
        }
    }

    #[test]
    fn placements() {
        let env = |v: Option<&str>| {
            visibility::decide_all(|k| {
                (k == "CUDA_VISIBLE_DEVICES")
                    .then(|| v.map(str::to_string))
                    .flatten()
            })
        };
        let cuda = Ok(vec![gpu("CUDA")]);
        let none: Result<Vec<ProbedDevice>, String> = Ok(vec![]);
        assert_eq!(place(DeviceMode::Auto, &env(None), &cuda).decision, "gpu");
        let p = place(DeviceMode::Auto, &env(Some("")), &cuda);
        assert_eq!(
            (p.decision.as_str(), p.reason.as_str()),
            ("cpu", "CUDA devices hidden: CUDA_VISIBLE_DEVICES is empty")
        );
        assert_eq!(
            place(DeviceMode::Auto, &env(Some("-1")), &cuda).decision,
            "cpu"
        );
        assert_eq!(place(DeviceMode::Cpu, &env(None), &cuda).decision, "cpu");
        let p = place(DeviceMode::Gpu, &env(Some("")), &cuda);
        assert_eq!(p.decision, "error");
        assert!(p
            .reason
            .starts_with("CORRAL_DEVICE=gpu, but no GPU is available: CUDA devices hidden"));
        assert!(place(DeviceMode::Auto, &env(None), &none)
            .reason
            .starts_with("no GPU found"));
        let failed = Err("the device probe did not finish in 10s and was stopped".to_string());
        assert_eq!(
            place(DeviceMode::Auto, &env(None), &failed).reason,
            "the device probe did not finish in 10s and was stopped"
        );
        assert_eq!(
            place(DeviceMode::Auto, &env(Some("")), &Ok(vec![gpu("Vulkan")])).decision,
            "gpu"
        );
    }
}
