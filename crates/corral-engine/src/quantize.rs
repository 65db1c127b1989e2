//! Quantizing a model file: llama.cpp's `llama_model_quantize`, which `llama-cpp-2` does not
//! wrap, called through the sys crate.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;

use crate::EngineError;

/// What the log callback collects while llama.cpp quantizes.
struct Capture<'a> {
    on_tensor: &'a mut dyn FnMut(u32, u32),
    /// llama.cpp's error lines (`failed to quantize: ...`), for the error message.
    errors: String,
}

/// llama.cpp logs a line per tensor (`[  12/ 272] blk.0.attn_k.weight - ...`): the only
/// progress it reports.
fn tensor_progress(text: &str) -> Option<(u32, u32)> {
    let inner = text.trim_start().strip_prefix('[')?.split(']').next()?;
    let (done, total) = inner.split_once('/')?;
    Some((done.trim().parse().ok()?, total.trim().parse().ok()?))
}

unsafe extern "C" fn on_log(
    level: llama_cpp_sys_2::ggml_log_level,
    text: *const c_char,
    data: *mut c_void,
) {
    if text.is_null() || data.is_null() {
        return;
    }
    // SAFETY: `data` is the `Capture` that `quantize` passed to `llama_log_set`, alive until it
    // restores the logger. llama.cpp logs from the thread that called `llama_model_quantize`
    // only (its quantizing worker threads do not log; checked in llama-quant.cpp of the pinned
    // version), so this is the only reference in use.
    let capture = unsafe { &mut *(data as *mut Capture) };
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    // Never `eprint!`: it panics when stderr is closed, and a panic here aborts.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
    if level == llama_cpp_sys_2::GGML_LOG_LEVEL_ERROR {
        capture.errors.push_str(&text);
    }
    if let Some((done, total)) = tensor_progress(&text) {
        (capture.on_tensor)(done, total);
    }
}

/// Write `src` (a GGUF of unquantized weights) to `dst` as llama.cpp file type `ftype` with
/// `threads` threads. `on_tensor(done, total)` is called as each tensor begins. llama.cpp's
/// own mix applies (some tensors of a `Q4_K_M` model are `Q6_K`); quantized sources are
/// refused.
pub fn quantize(
    src: &Path,
    dst: &Path,
    ftype: u32,
    threads: u32,
    mut on_tensor: impl FnMut(u32, u32),
) -> Result<(), EngineError> {
    // Quantizing is ggml's CPU code in libggml-base and libllama: no backend module is needed,
    // so none is loaded and no GPU driver is touched. ggml's tables (F16 conversion) are set
    // up by llama_backend_init.
    // SAFETY: no arguments; safe to call more than once.
    unsafe { llama_cpp_sys_2::llama_backend_init() };
    let path = |p: &Path| {
        CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| EngineError::Quantize(format!("{} contains a NUL byte", p.display())))
    };
    let (c_src, c_dst) = (path(src)?, path(dst)?);
    let mut capture = Capture {
        on_tensor: &mut on_tensor,
        errors: String::new(),
    };
    // SAFETY: plain C calls with valid, NUL-terminated paths and a params struct from
    // llama.cpp's own defaults; `capture` outlives the callback, which is replaced below
    // before `capture` goes out of scope.
    let status = unsafe {
        let mut params = llama_cpp_sys_2::llama_model_quantize_default_params();
        params.nthread = threads.max(1) as i32;
        params.ftype = ftype as llama_cpp_sys_2::llama_ftype;
        params.allow_requantize = false;
        llama_cpp_sys_2::llama_log_set(Some(on_log), &mut capture as *mut Capture as *mut c_void);
        let status = llama_cpp_sys_2::llama_model_quantize(c_src.as_ptr(), c_dst.as_ptr(), &params);
        llama_cpp_sys_2::llama_log_set(None, std::ptr::null_mut());
        status
    };
    crate::log_to_tracing();
    if status != 0 {
        let why = capture
            .errors
            .lines()
            .map(str::trim)
            .rev()
            .find(|l| !l.is_empty())
            .unwrap_or("llama.cpp gave no reason")
            .to_string();
        return Err(EngineError::Quantize(why));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::tensor_progress;

    #[test]
    fn tensor_lines_give_progress() {
        assert_eq!(
            tensor_progress("[  12/ 272]                   blk.0.attn_k.weight - [  576,"),
            Some((12, 272))
        );
        assert_eq!(
            tensor_progress("llama_model_quantize_impl: model size = 256 MiB"),
            None
        );
        assert_eq!(tensor_progress("[x/2]"), None);
    }
}
