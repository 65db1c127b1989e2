//! The runner's RPC workers: each one that answers the probe in time, with a protocol this
//! build speaks, has its devices added before the model loads; one that does not is left out
//! with the cause (reported to the server for `/api/ps`), and the model loads without it.

use std::time::Duration;

use corral_api::runner::WorkerUse;
use corral_devices::rpc::WorkerReport;

/// How long the workers have to answer the probe at load time, all steps together.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Probe every worker, then add the usable ones to ggml's registry, in the given order.
pub(crate) fn add_workers(endpoints: &[String]) -> Vec<WorkerReport> {
    // ggml's own connection has no timeout and aborts the process on a failed connection or
    // a version mismatch: the probe finds those first.
    let mut reports = corral_devices::rpc::probe_all(endpoints, PROBE_TIMEOUT);
    for r in &mut reports {
        if !r.usable {
            let why = r.error.as_deref().unwrap_or("unusable");
            tracing::warn!(worker = %r.endpoint, "RPC worker left out: {why}");
            continue;
        }
        match corral_engine::rpc::add_worker(&r.endpoint) {
            Ok(n) => tracing::info!(
                worker = %r.endpoint,
                devices = n,
                protocol = r.protocol.as_deref().unwrap_or(""),
                "RPC worker added"
            ),
            Err(why) => {
                tracing::warn!(worker = %r.endpoint, "RPC worker left out: {why}");
                r.usable = false;
                r.error = Some(why.to_string());
            }
        }
    }
    reports
}

/// The devices llama.cpp offloads to, in its order (RPC devices first, then GPUs, then
/// integrated GPUs when there is no GPU), each with its free memory and, for a worker's
/// device, the worker's endpoint. Read before the model loads: llama.cpp splits by the free
/// memory it sees then; `local` is this machine's devices. (Not modelled: llama.cpp also
/// skips a second backend's view of a GPU it already has, by device id; the share shown
/// could then be off, the placement is not.)
pub(crate) fn offload_devices(
    workers: &[WorkerReport],
    local: &[corral_engine::Device],
) -> Vec<(Option<String>, u64)> {
    let mut out: Vec<(Option<String>, u64)> = Vec::new();
    for w in workers.iter().filter(|w| w.usable) {
        for d in &w.devices {
            // As llama.cpp: a device that reports no memory is given the host CPU device's
            // (ggml's CPU device reports the physical memory as free).
            let free = if d.memory_free == 0 && d.memory_total == 0 {
                corral_os::memory().map_or(0, |m| m.0)
            } else {
                d.memory_free
            };
            out.push((Some(w.endpoint.clone()), free));
        }
    }
    let gpus: Vec<_> = local.iter().filter(|d| d.kind == "gpu").collect();
    let igpus: Vec<_> = local.iter().filter(|d| d.kind == "igpu").collect();
    for d in if gpus.is_empty() { igpus } else { gpus } {
        out.push((None, d.memory_free));
    }
    out
}

/// What each worker got of the layers `placed` on each of `devices`, for the server.
pub(crate) fn worker_use(
    workers: &[WorkerReport],
    devices: &[(Option<String>, u64)],
    placed: &[u32],
) -> Vec<WorkerUse> {
    workers
        .iter()
        .map(|w| WorkerUse {
            endpoint: w.endpoint.clone(),
            layers: devices
                .iter()
                .zip(placed)
                .filter(|(d, _)| d.0.as_deref() == Some(w.endpoint.as_str()))
                .map(|(_, n)| n)
                .sum(),
            error: w.error.clone(),
        })
        .collect()
}
