//! Loadable backends: with ggml's `GGML_BACKEND_DL`, every backend (a CPU build per
//! instruction-set level, Vulkan, CUDA) is a module, `libggml-<name>.so`, loaded at run time.
//! One bundle then runs on any x86-64 CPU and uses a GPU where the machine has one.
//!
//! Where modules are looked for, first found wins: `CORRAL_LIB_DIR`; `lib/corral` beside the
//! executable's folder (the bundle `scripts/build.sh` makes: `bin/corral`, `lib/corral/`); the
//! build folder the engine was compiled with (a `cargo build` tree). ggml picks the CPU variant
//! with the highest score for this CPU and loads every other backend whose module loads.
//! This module also says, for each file, whether it loaded and why not.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;

/// One module file and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleStatus {
    /// The file name (`libggml-vulkan.so`).
    pub file: String,
    /// The backend it provides: `cpu`, `vulkan`, `cuda`, ...
    pub backend: String,
    /// For CPU modules, the instruction-set level (`haswell`, `zen4`, `x64`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub loaded: bool,
    /// Why it loaded or not: the loader's own error for a module that cannot be opened.
    pub note: String,
}

/// What was loaded from where.
#[derive(Debug, Clone, Serialize)]
pub struct Modules {
    pub dir: PathBuf,
    /// How `dir` was found.
    pub dir_from: String,
    pub modules: Vec<ModuleStatus>,
    /// The CPU variant in use.
    pub cpu_variant: Option<String>,
}

/// The folder the modules were loaded from, and how it was found.
static LOADED: OnceLock<Result<(PathBuf, String), String>> = OnceLock::new();

/// Load the backend modules once per process, before llama.cpp initializes. Runners call only
/// this: ggml opens each module once to pick the best; explaining every file is `report`'s.
/// Returns the folder and how it was found.
pub fn load() -> Result<&'static (PathBuf, String), String> {
    LOADED.get_or_init(load_now).as_ref().map_err(Clone::clone)
}

/// Candidate folders, in order, each with how it was found.
fn candidates() -> Result<Vec<(PathBuf, String)>, String> {
    if let Some(d) = std::env::var_os("CORRAL_LIB_DIR").filter(|d| !d.is_empty()) {
        let d = PathBuf::from(d);
        if !d.is_dir() {
            return Err(format!("CORRAL_LIB_DIR {}: not a folder", d.display()));
        }
        return Ok(vec![(d, "CORRAL_LIB_DIR".into())]);
    }
    let mut out = Vec::new();
    if let Some(bin) = std::env::current_exe()
        .ok()
        .and_then(|e| e.canonicalize().ok())
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        if let Some(root) = bin.parent() {
            out.push((
                root.join("lib/corral"),
                "the bundle (lib/corral beside bin/)".into(),
            ));
        }
    }
    if let Some(built) = llama_cpp_sys_2::BACKENDS_DIR {
        out.push((PathBuf::from(built), "the build folder".into()));
    }
    Ok(out)
}

fn module_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("libggml-") && n.ends_with(".so"))
        .collect();
    files.sort();
    files
}

/// `libggml-cpu-haswell.so` -> (`cpu`, Some(`haswell`)); `libggml-vulkan.so` -> (`vulkan`, None).
fn split_name(file: &str) -> (String, Option<String>) {
    let stem = file
        .trim_start_matches("libggml-")
        .trim_end_matches(".so")
        .to_string();
    match stem.split_once('-') {
        Some((b, v)) => (b.to_string(), Some(v.to_string())),
        None => (stem, None),
    }
}

/// The module's own score for this machine (0: it cannot run here), or the loader's error.
fn score(path: &Path) -> Result<i32, String> {
    // SAFETY: these are ggml's own backend modules; opening one runs only its static
    // initializers, and `ggml_backend_score` takes no arguments and reads CPU/driver facts.
    unsafe {
        let lib = libloading::Library::new(path).map_err(|e| loader_error(&e))?;
        let f: libloading::Symbol<unsafe extern "C" fn() -> i32> = lib
            .get(b"ggml_backend_score\0")
            .map_err(|_| "the module has no ggml_backend_score".to_string())?;
        Ok(f())
    }
}

/// libloading's message carries dlerror()'s text after its own prefix.
fn loader_error(e: &libloading::Error) -> String {
    let s = e.to_string();
    let s = s.strip_prefix("dlopen failed: ").unwrap_or(&s);
    // "…/libggml-cuda.so: libcuda.so.1: cannot open shared object file": the dependency is
    // the news, not the module's own path.
    match s.split_once(".so: ") {
        Some((_, rest)) => rest.to_string(),
        None => s.to_string(),
    }
}

/// The backends ggml registered (lowercase names), each with its device count.
fn registered_backends() -> Vec<(String, usize)> {
    // SAFETY: plain queries of ggml's backend registry.
    unsafe {
        (0..llama_cpp_sys_2::ggml_backend_reg_count())
            .map(|i| {
                let reg = llama_cpp_sys_2::ggml_backend_reg_get(i);
                let name = llama_cpp_sys_2::ggml_backend_reg_name(reg);
                let name = std::ffi::CStr::from_ptr(name)
                    .to_string_lossy()
                    .to_ascii_lowercase();
                (name, llama_cpp_sys_2::ggml_backend_reg_dev_count(reg))
            })
            .collect()
    }
}

/// Why a loaded GPU backend shows no device, where that can be told.
fn no_device_note(backend: &str) -> String {
    match backend {
        "vulkan" if std::env::var_os("GGML_VK_VISIBLE_DEVICES").is_none() => {
            "loaded, no device: ggml counts only GPU-type Vulkan devices unless \
             GGML_VK_VISIBLE_DEVICES names one (a software device such as llvmpipe needs \
             GGML_VK_VISIBLE_DEVICES=0)"
                .to_string()
        }
        "rpc" => "loaded; its devices are other machines' `corral rpc-worker`s, named in \
                  CORRAL_RPC_SERVERS"
            .to_string(),
        _ => "loaded, no device found (or none visible)".to_string(),
    }
}

fn load_now() -> Result<(PathBuf, String), String> {
    let tried = candidates()?;
    let (dir, dir_from) = tried
        .iter()
        .find(|(d, _)| module_files(d).iter().any(|f| f.starts_with("libggml-cpu")))
        .cloned()
        .ok_or_else(|| {
            format!(
                "no CPU backend module (libggml-cpu-*.so) found; looked in {}; set CORRAL_LIB_DIR to the bundle's lib/corral folder",
                tried
                    .iter()
                    .map(|(d, _)| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let c = std::ffi::CString::new(dir.to_string_lossy().as_bytes())
        .map_err(|_| format!("{}: a folder name with a NUL byte", dir.display()))?;
    // SAFETY: the path is a valid C string; ggml loads the best module of each backend.
    unsafe { llama_cpp_sys_2::ggml_backend_load_all_from_path(c.as_ptr()) };
    if !registered_backends().iter().any(|(n, _)| n == "cpu") {
        return Err(format!(
            "no CPU backend could be loaded from {}: no variant there runs on this CPU",
            dir.display()
        ));
    }
    Ok((dir, dir_from))
}

/// Load (if not yet) and say, for each module file, whether it loaded and why: each file's
/// own score for this machine, or the loader's error. For `corral probe`, not for runners.
pub fn report() -> Result<Modules, String> {
    let (dir, dir_from) = load()?.clone();
    let registered = registered_backends();
    let devices_of = |b: &str| registered.iter().find(|(n, _)| n == b).map(|(_, d)| *d);

    let files = module_files(&dir);
    let scores: Vec<(String, Result<i32, String>)> = files
        .iter()
        .map(|f| (f.clone(), score(&dir.join(f))))
        .collect();
    // ggml keeps the CPU variant with the highest score; the same rule names it here.
    let cpu_variant = scores
        .iter()
        .filter(|(f, _)| f.starts_with("libggml-cpu-"))
        .filter_map(|(f, s)| s.as_ref().ok().filter(|&&s| s > 0).map(|s| (*s, f)))
        .max_by_key(|(s, _)| *s)
        .and_then(|(_, f)| split_name(f).1);
    let modules = scores
        .into_iter()
        .map(|(file, s)| {
            let (backend, variant) = split_name(&file);
            let (loaded, note) = if backend == "cpu" {
                match s {
                    Err(e) => (false, format!("cannot be opened: {e}")),
                    Ok(0) => (false, "this CPU lacks its instructions".to_string()),
                    Ok(n) if variant == cpu_variant => (
                        true,
                        format!("the best of the CPU variants this CPU can run (score {n})"),
                    ),
                    Ok(n) => (
                        false,
                        format!("runs here, but a better variant does (score {n})"),
                    ),
                }
            } else if let Some(n) = devices_of(&backend) {
                match n {
                    0 => (true, no_device_note(&backend)),
                    1 => (true, "loaded, 1 device".to_string()),
                    n => (true, format!("loaded, {n} devices")),
                }
            } else {
                match s {
                    Err(e) => (false, format!("not loaded: {e}")),
                    Ok(0) => (
                        false,
                        "not loaded: the module found no usable driver or device".to_string(),
                    ),
                    Ok(_) => (false, "not loaded: ggml refused it".to_string()),
                }
            };
            ModuleStatus {
                file,
                backend,
                variant,
                loaded,
                note,
            }
        })
        .collect();
    Ok(Modules {
        dir,
        dir_from,
        modules,
        cpu_variant,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(
            super::split_name("libggml-cpu-haswell.so"),
            ("cpu".into(), Some("haswell".into()))
        );
        assert_eq!(
            super::split_name("libggml-cpu-armv8.2_1.so"),
            ("cpu".into(), Some("armv8.2_1".into()))
        );
        assert_eq!(
            super::split_name("libggml-vulkan.so"),
            ("vulkan".into(), None)
        );
    }
}
