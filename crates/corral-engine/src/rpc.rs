//! ggml's RPC backend, reached through the public backend registry: a worker serves this
//! machine's devices to other machines (`serve`), a runner adds a worker's devices to its own
//! (`add_worker`), after which llama.cpp places layers on them as on local GPUs.
//!
//! The protocol has no authentication and no timeouts of its own: callers choose who may
//! connect (the worker listens on loopback unless told otherwise) and bound every call from
//! outside (the server's stall watchdog ends a runner stuck in a socket call).

use std::ffi::{c_char, CString};
use std::path::Path;

use crate::{backend, EngineError};

/// `ggml_backend_rpc_add_server`'s type (ggml-rpc.h).
type AddServer = unsafe extern "C" fn(*const c_char) -> llama_cpp_sys_2::ggml_backend_reg_t;
/// `ggml_backend_rpc_start_server`'s type (ggml-rpc.h).
type StartServer = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    usize,
    usize,
    *mut llama_cpp_sys_2::ggml_backend_dev_t,
);

/// A function the RPC module exports, by name.
fn proc_address(name: &str) -> Result<*mut std::ffi::c_void, EngineError> {
    backend()?;
    let none = || {
        EngineError::Backend(
            "the RPC backend module (libggml-rpc.so) is not loaded: this build has no GGML_RPC"
                .into(),
        )
    };
    let reg_name = CString::new("RPC").expect("no NUL");
    // SAFETY: registry lookups by name; the name is a valid C string.
    unsafe {
        let reg = llama_cpp_sys_2::ggml_backend_reg_by_name(reg_name.as_ptr());
        if reg.is_null() {
            return Err(none());
        }
        let f = CString::new(name).expect("no NUL");
        let p = llama_cpp_sys_2::ggml_backend_reg_get_proc_address(reg, f.as_ptr());
        if p.is_null() {
            return Err(none());
        }
        Ok(p)
    }
}

/// Add the devices of the worker at `endpoint` (`host:port`) to this process's registry, so
/// the next model load may place layers on them. Returns how many devices it has. The caller
/// checks first that the worker answers: ggml's own connection has no timeout.
pub fn add_worker(endpoint: &str) -> Result<usize, EngineError> {
    let add: AddServer =
        unsafe { std::mem::transmute(proc_address("ggml_backend_rpc_add_server")?) };
    let c = CString::new(endpoint)
        .map_err(|_| EngineError::Backend(format!("{endpoint:?}: not an address")))?;
    // SAFETY: the function is ggml's, with the signature of ggml-rpc.h; the endpoint is a
    // valid C string that ggml copies.
    unsafe {
        let reg = add(c.as_ptr());
        if reg.is_null() {
            return Err(EngineError::Backend(format!(
                "RPC worker {endpoint}: it offers no device"
            )));
        }
        let n = llama_cpp_sys_2::ggml_backend_reg_dev_count(reg);
        llama_cpp_sys_2::ggml_backend_register(reg);
        Ok(n)
    }
}

/// Serve this machine's devices at `endpoint` until the process ends: its GPUs (those the
/// visibility rules let through) when it has any and `gpus` allows them, else its CPU, as
/// llama.cpp's `rpc-server` chooses (a CPU served beside GPUs would report all of the host's
/// memory and so take most layers of the split by free memory). `cache` is ggml's tensor
/// cache folder. Returns only when the server cannot start (ggml prints why).
pub fn serve(
    endpoint: &str,
    cache: Option<&Path>,
    threads: usize,
    gpus: bool,
) -> Result<(), EngineError> {
    let start: StartServer =
        unsafe { std::mem::transmute(proc_address("ggml_backend_rpc_start_server")?) };
    let c_end = CString::new(endpoint)
        .map_err(|_| EngineError::Backend(format!("{endpoint:?}: not an address")))?;
    let c_cache = cache
        .map(|p| CString::new(p.to_string_lossy().as_bytes()))
        .transpose()
        .map_err(|_| EngineError::Backend("the cache folder's name has a NUL byte".into()))?;
    // SAFETY: device queries on ggml's registry; the start function is ggml's, with the
    // signature of ggml-rpc.h, given valid C strings and a device array that outlives it.
    unsafe {
        use llama_cpp_sys_2::{
            GGML_BACKEND_DEVICE_TYPE_CPU as CPU, GGML_BACKEND_DEVICE_TYPE_GPU as GPU,
            GGML_BACKEND_DEVICE_TYPE_IGPU as IGPU,
        };
        let local: Vec<_> = (0..llama_cpp_sys_2::ggml_backend_dev_count())
            .map(|i| llama_cpp_sys_2::ggml_backend_dev_get(i))
            .filter(|&d| {
                let reg = llama_cpp_sys_2::ggml_backend_dev_backend_reg(d);
                let name = std::ffi::CStr::from_ptr(llama_cpp_sys_2::ggml_backend_reg_name(reg));
                name.to_bytes() != b"RPC"
            })
            .map(|d| (d, llama_cpp_sys_2::ggml_backend_dev_type(d)))
            .collect();
        let is_gpu = |t| t == GPU || t == IGPU;
        let use_gpus = gpus && local.iter().any(|d| is_gpu(d.1));
        let mut devs: Vec<_> = local
            .iter()
            .filter(|d| if use_gpus { is_gpu(d.1) } else { d.1 == CPU })
            .map(|d| d.0)
            .collect();
        if devs.is_empty() {
            return Err(EngineError::Backend("no local device to serve".into()));
        }
        start(
            c_end.as_ptr(),
            c_cache.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            threads.max(1),
            devs.len(),
            devs.as_mut_ptr(),
        );
    }
    Err(EngineError::Backend(format!(
        "the RPC server on {endpoint} could not start (is the port in use?)"
    )))
}
