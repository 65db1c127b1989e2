//! Loadable backends: the CPU variant ggml picks and why, modules that cannot load, a bundle
//! that finds its modules beside itself, and the same bundle on an older CPU (qemu-user).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// The folder the build's modules are in (as the probe reports it).
fn module_dir() -> PathBuf {
    let r = devices_json(&[]);
    PathBuf::from(r["modules"]["dir"].as_str().expect("modules in the report"))
}

#[test]
fn the_report_names_each_module_and_the_cpu_variant_chosen() {
    let r = devices_json(&[]);
    let m = &r["modules"];
    let modules = m["modules"].as_array().unwrap();
    let cpu: Vec<&Value> = modules.iter().filter(|x| x["backend"] == "cpu").collect();
    assert!(
        cpu.len() >= 10,
        "one CPU module per instruction-set level: {m}"
    );
    let loaded: Vec<&&Value> = cpu.iter().filter(|x| x["loaded"] == true).collect();
    assert_eq!(loaded.len(), 1, "exactly one CPU variant is used: {m}");
    assert_eq!(loaded[0]["variant"], m["cpu_variant"]);
    assert!(loaded[0]["note"]
        .as_str()
        .unwrap()
        .starts_with("the best of the CPU variants"));
    // The baseline always runs; this machine's flags decide the rest.
    let x64 = cpu.iter().find(|x| x["variant"] == "x64").unwrap();
    assert!(x64["note"].as_str().unwrap().contains("runs here") || x64["loaded"] == true);
    let simd = r["cpu"]["simd"].as_str().unwrap();
    if simd != "AVX-512" {
        let skx = cpu.iter().find(|x| x["variant"] == "skylakex").unwrap();
        assert_eq!(skx["note"], "this CPU lacks its instructions", "{m}");
    }
    // The text report says the same.
    let out = Command::new(corral_exe()).arg("devices").output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("Backends (from "), "{text}");
    assert!(
        text.contains(&format!(
            "CPU variant: {}",
            m["cpu_variant"].as_str().unwrap()
        )),
        "{text}"
    );
}

/// A module file's entry in the report.
fn module_file(r: &Value, file: &str) -> Value {
    r["modules"]["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["file"] == file)
        .unwrap_or_else(|| panic!("{file} is not in the report: {r}"))
        .clone()
}

/// A folder laid out like the bundle `scripts/build.sh` makes, from this build's files.
fn make_bundle(root: &Path) -> PathBuf {
    let dir = module_dir();
    let lib = root.join("lib/corral");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(corral_exe(), root.join("bin/corral")).unwrap();
    let libs = dir.parent().unwrap().join("lib");
    for d in [&dir, &libs] {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let name = e.file_name().into_string().unwrap();
            if name.starts_with("lib") && name.contains(".so") {
                // Copy the files the links point at, under the links' names.
                std::fs::copy(e.path(), lib.join(&name)).unwrap();
            }
        }
    }
    root.join("bin/corral")
}

#[test]
fn a_bundle_finds_its_modules_beside_itself_and_runs_on_an_older_cpu() {
    // The bundle scripts/build.sh made (the test command passes it), else one laid out here.
    let tmp = tempfile::tempdir().unwrap();
    let (exe, lib) = match std::env::var_os("CORRAL_TEST_BUNDLE") {
        Some(b) => (
            PathBuf::from(&b).join("bin/corral"),
            PathBuf::from(&b).join("lib/corral"),
        ),
        None => (make_bundle(tmp.path()), tmp.path().join("lib/corral")),
    };
    // No library path from cargo: the rpath and the bundle layout alone; optionally under
    // qemu-user with an older CPU model.
    let probe = |cpu: Option<&str>| -> Value {
        let mut c = match cpu {
            Some(model) => {
                let mut c = Command::new("qemu-x86_64");
                c.args(["-cpu", model]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = c
            .arg("probe")
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("CORRAL_LIB_DIR")
            .output()
            .expect("qemu-x86_64 is missing: scripts/test.sh installs Debian's qemu-user");
        assert!(out.status.success(), "{cpu:?}: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let p = probe(None);
    assert_eq!(
        p["modules"]["dir"].as_str().unwrap(),
        lib.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(
        p["modules"]["dir_from"],
        "the bundle (lib/corral beside bin/)"
    );
    // On an emulated Haswell (AVX2, no AVX-512) the same files pick the AVX2 variant, and on
    // a CPU older than AVX (Nehalem) the SSE4.2 one.
    let p = probe(Some("Haswell"));
    assert_eq!(p["modules"]["cpu_variant"], "haswell", "{p}");
    let p = probe(Some("Nehalem"));
    assert_eq!(p["modules"]["cpu_variant"], "sse42", "{p}");
}

#[test]
fn missing_and_broken_modules_are_explained_not_fatal() {
    // A folder with no CPU module: a clear error from the probe, and from a request.
    let empty = tempfile::tempdir().unwrap();
    let r = devices_json(&[("CORRAL_LIB_DIR", empty.path().to_str().unwrap())]);
    let e = r["probe_error"].as_str().unwrap();
    assert!(
        e.contains("no CPU backend module (libggml-cpu-*.so) found"),
        "{r}"
    );
    let s = TestServer::start_with(&[("CORRAL_LIB_DIR", empty.path().to_str().unwrap())]);
    s.create_smol();
    let (status, v) = s.post(
        "/api/generate",
        serde_json::json!({"model": "smol", "prompt": "hi", "stream": false}),
    );
    assert_eq!(status, 500, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no CPU backend module"),
        "{v}"
    );
    assert_eq!(
        s.get("/api/tags")["models"].as_array().unwrap().len(),
        1,
        "the server still serves"
    );

    // A broken GPU module beside the real CPU ones: reported with the loader's reason.
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(module_dir()).unwrap().flatten() {
        let name = e.file_name().into_string().unwrap();
        if name.starts_with("libggml-cpu-") {
            std::os::unix::fs::symlink(e.path(), dir.path().join(&name)).unwrap();
        }
    }
    std::fs::write(
        dir.path().join("libggml-cuda.so"),
        "not an ELF file\n".repeat(300),
    )
    .unwrap();
    let r = devices_json(&[("CORRAL_LIB_DIR", dir.path().to_str().unwrap())]);
    assert!(r["probe_error"].is_null(), "{r}");
    let cuda = module_file(&r, "libggml-cuda.so");
    assert_eq!(cuda["loaded"], false);
    let note = cuda["note"].as_str().unwrap();
    assert!(note == "not loaded: invalid ELF header", "{note}");
    assert!(r["modules"]["cpu_variant"].is_string());
}

/// With ggml's CUDA module in the module folder (`scripts/test.sh --cuda` builds it and runs
/// the whole suite with it) on a machine without an NVIDIA driver: the module is reported as
/// not loaded with the loader's reason, and every form of `CUDA_VISIBLE_DEVICES` answers to the
/// end on the CPU. Without the module (the default test command) there is nothing to check.
#[test]
fn a_cuda_module_without_a_driver_is_reported_and_answers_run_on_the_cpu() {
    let dir = module_dir();
    if !dir.join("libggml-cuda.so").exists() {
        assert!(
            std::env::var_os("CORRAL_TEST_CUDA").is_none(),
            "CORRAL_TEST_CUDA is set but {} has no libggml-cuda.so",
            dir.display()
        );
        println!(
            "skipped: no CUDA module in {} (scripts/test.sh --cuda builds one)",
            dir.display()
        );
        return;
    }
    if Path::new("/dev/nvidiactl").exists() {
        println!(
            "skipped: this machine has an NVIDIA driver (scripts/gpu-check.sh is the check there)"
        );
        return;
    }
    let r = devices_json(&[]);
    let cuda = module_file(&r, "libggml-cuda.so");
    assert_eq!(cuda["backend"], "cuda", "{cuda}");
    assert_eq!(cuda["loaded"], false, "{cuda}");
    let note = cuda["note"].as_str().unwrap();
    assert!(
        note.starts_with("not loaded: ") && note.contains("libcuda.so.1"),
        "the driver's library is named: {note}"
    );
    assert!(
        !r["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["backend"] == "CUDA"),
        "{r}"
    );
    let out = Command::new(corral_exe()).arg("devices").output().unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("libggml-cuda.so") && text.contains("libcuda.so.1"),
        "{text}"
    );

    for form in [
        None,
        Some(""),
        Some("-1"),
        Some("0"),
        Some("GPU-00000000-0000-0000-0000-000000000000"),
        Some("abc"),
    ] {
        let env: Vec<(&str, &str)> = form
            .map(|v| ("CUDA_VISIBLE_DEVICES", v))
            .into_iter()
            .collect();
        answers_to_the_end_on_the_cpu(
            &format!("CUDA_VISIBLE_DEVICES={form:?}"),
            &env,
            serde_json::json!({}),
        );
    }
}
