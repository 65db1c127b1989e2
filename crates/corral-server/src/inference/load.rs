//! The runner a request needs: its load settings (context, slots, GPU layers), the memory
//! it takes, and the lease on it.

use super::*;

use corral_api::cache::{FlashAttention, KvCacheType};

pub(super) fn load_spec(st: &AppState, model: &Model, o: &Options) -> ApiResult<LoadSpec> {
    // A model's own num_parallel (Modelfile or request) before the server's.
    let parallel = o
        .num_parallel
        .map_or(st.config.num_parallel, |n| n as u32)
        .max(1);
    let num_ctx = o.num_ctx.unwrap_or(opt::DEFAULT_NUM_CTX) as u64 * parallel as u64;
    // A model's own kv_cache_type (validated with the options) before the server's.
    let kv_cache_type = o
        .kv_cache_type
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or(st.config.kv_cache_type);
    let flash_attention = st.config.flash_attention;
    if kv_cache_type.is_quantized() && flash_attention == FlashAttention::Off {
        // llama.cpp quantizes the V cache only with flash attention: say so rather than fail
        // in the runner.
        return Err(ApiError::bad_request(format!(
            "kv_cache_type {kv_cache_type} needs flash attention, which CORRAL_FLASH_ATTENTION=off turns off"
        )));
    }
    // A model's own workers (PARAMETER rpc_servers) before the server's; only among the
    // server's: a Modelfile comes from whoever may call /api/create, or from a registry, and
    // must not send the model's weights and prompts to a machine of its choosing.
    let rpc_servers = match &o.rpc_servers {
        Some(list) => {
            let wanted =
                corral_api::options::parse_rpc_servers(list).map_err(ApiError::bad_request)?;
            if let Some(w) = wanted.iter().find(|w| !st.config.rpc_servers.contains(w)) {
                return Err(ApiError::bad_request(format!(
                    "the model's rpc_servers names {w}, which is not in the server's CORRAL_RPC_SERVERS: a model may use only workers the server lists"
                )));
            }
            wanted
        }
        None => st.config.rpc_servers.clone(),
    };
    let num_gpu = corral_devices::gpu_layers(
        st.devices.mode,
        o.num_gpu,
        !st.devices.gpus.is_empty() || !rpc_servers.is_empty(),
        || {
            if st.devices.gpus.is_empty() {
                // Only RPC workers: every layer goes to them, split by the free memory each
                // reports (llama.cpp's rule for several GPUs); num_gpu keeps some here.
                return gguf_info(st, model).map_or(0, |i| i.block_count() as u32 + 1);
            }
            let Some(info) = gguf_info(st, model) else {
                return 0;
            };
            let n_layers = info.block_count().max(1) as u32;
            let weights = model.entry.manifest.layer("model").map_or(0, |l| l.size);
            let cost = corral_devices::fit::ModelCost {
                n_layers,
                layer_bytes: weights / (n_layers as u64 + 1),
                kv_bytes_per_layer: kv_bytes(&info, num_ctx, kv_cache_type) / n_layers as u64,
                output_bytes: weights / (n_layers as u64 + 1),
            };
            let free: Vec<corral_devices::fit::GpuFree> = st
                .devices
                .gpus
                .iter()
                .map(|g| corral_devices::fit::GpuFree {
                    free: g.memory_free,
                })
                .collect();
            corral_devices::fit::fit_layers(&free, &cost)
        },
    )
    .map_err(ApiError::internal)?;
    Ok(LoadSpec {
        model_path: model.model_path.clone(),
        num_ctx: o.num_ctx.unwrap_or(opt::DEFAULT_NUM_CTX) as u32,
        num_batch: o.num_batch.unwrap_or(opt::DEFAULT_NUM_BATCH) as u32,
        num_thread: o
            .num_thread
            .filter(|n| *n > 0)
            .map_or(st.config.threads, |n| n as u32),
        num_gpu,
        use_mmap: o.use_mmap.unwrap_or(true),
        parallel,
        adapter: model.adapter_path.clone(),
        draft: model.draft_path.clone(),
        kv_cache_type,
        flash_attention,
        rpc_servers,
    })
}

/// Bytes of KV cache for `n_tokens` cells of this type.
fn kv_bytes(info: &corral_gguf::GgufInfo, n_tokens: u64, t: KvCacheType) -> u64 {
    (info.kv_cache_bytes(n_tokens) as f64 * t.size_ratio()) as u64
}

/// GGUF metadata of a model, read once per blob.
pub(super) fn gguf_info(
    st: &AppState,
    model: &Model,
) -> Option<std::sync::Arc<corral_gguf::GgufInfo>> {
    layer_info(st, model, "model")
}

/// GGUF metadata of one of a model's layers (`model`, `draft`), read once per blob.
fn layer_info(
    st: &AppState,
    model: &Model,
    kind: &str,
) -> Option<std::sync::Arc<corral_gguf::GgufInfo>> {
    let digest = model.entry.manifest.layer(kind)?.digest.clone();
    if let Some(i) = st.gguf.lock().unwrap().get(&digest) {
        return Some(i.clone());
    }
    let path = st.store.blob_path(&digest);
    let info = std::sync::Arc::new(corral_gguf::read(&path).ok()?);
    st.gguf.lock().unwrap().insert(digest, info.clone());
    Some(info)
}

/// Memory a model needs loaded as `spec` says: its weights and its KV cache, and its draft
/// model's (which gets a cache of the same size).
pub(super) fn required_memory(st: &AppState, model: &Model, spec: &LoadSpec) -> u64 {
    let cells = spec.num_ctx as u64 * spec.parallel as u64;
    ["model", "draft"]
        .into_iter()
        .map(|kind| {
            let weights = model.entry.manifest.layer(kind).map_or(0, |l| l.size);
            let kv =
                layer_info(st, model, kind).map_or(0, |i| kv_bytes(&i, cells, spec.kv_cache_type));
            weights + kv
        })
        .sum()
}

/// Load (or find loaded) the runner for a model with these options: the one path from a
/// validated request to a lease, shared by completions and embeddings.
pub(crate) async fn acquire(
    st: &AppState,
    model: &Model,
    options: &Options,
    keep_alive: KeepAlive,
) -> Result<Lease, ApiError> {
    let asked = Instant::now();
    let spec = load_spec(st, model, options)?;
    let required = required_memory(st, model, &spec);
    let n_layers = gguf_info(st, model).map_or(0, |i| i.block_count() as u32);
    // Layers on RPC workers take no memory here. With no local GPU every offloaded layer goes
    // to a worker; with one, how llama.cpp splits is not known before the load, and all of
    // the model is counted here.
    let remote = if !spec.rpc_servers.is_empty() && st.devices.gpus.is_empty() {
        crate::scheduler::layer_share(required, spec.num_gpu, n_layers)
    } else {
        0
    };
    let meta = ModelMeta {
        name: model.display_name(),
        digest: model.entry.digest.hex().to_string(),
        details: model.details(),
        required_memory: required,
        local_memory: required - remote,
        n_layers,
    };
    match st.scheduler.acquire(meta, spec, keep_alive).await {
        // As Ollama, load_duration is the time until the runner was ready for this request:
        // the load when there was one, else the wait for the scheduler (never 0).
        Ok(mut l) => {
            let waited = asked.elapsed().max(std::time::Duration::from_nanos(1));
            l.load_duration = Some(l.load_duration.map_or(waited, |d| d.max(waited)));
            Ok(l)
        }
        Err(e @ AcquireError::Busy) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
        Err(AcquireError::Failed(e)) => Err(ApiError::internal(e)),
    }
}
