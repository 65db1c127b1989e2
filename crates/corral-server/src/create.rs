//! `POST /api/create`: build a model's manifest from an uploaded GGUF, an uploaded Hugging
//! Face model (safetensors, converted to GGUF) or an existing model, plus template, system,
//! parameters, messages and license layers.
//!
//! Everything is checked before anything is written: a bad GGUF, template, parameter or
//! message leaves the store as it was. What only a conversion can find (a tensor missing from
//! the weights, a tokenizer llama.cpp cannot reproduce) ends the stream with an error, and the
//! store is left as it was too.

use std::collections::BTreeMap;
use std::io::Read as _;

use corral_api::quantize::QuantType;
use corral_api::{CreateRequest, Message, Options, ProgressResponse};
use corral_store::{ConfigBlob, Digest, Layer, Manifest, RootFs, Store};
use corral_template::ChatTemplate;

use crate::error::{ApiError, ApiResult};
use crate::models;

/// A create request checked against the store, nothing written yet.
pub struct Plan {
    name: corral_store::Name,
    layers: Vec<Layer>,
    config: ConfigBlob,
    params: Options,
    adapter: Option<Layer>,
    draft: Option<Layer>,
    /// The uploaded files of a Hugging Face model to convert into the model layer first.
    pub convert: Option<BTreeMap<String, Digest>>,
    /// The uploaded files of a PEFT LoRA adapter to convert into the adapter layer.
    pub convert_adapter: Option<BTreeMap<String, Digest>>,
    /// What the model layer is to be quantized to; its file type was checked to allow it.
    pub quantize: Option<QuantType>,
    /// Progress lines so far, sent once the request is known to be good.
    pub progress: Vec<ProgressResponse>,
}

impl Plan {
    /// The blob of the model's weights.
    pub fn model(&self) -> Option<&Layer> {
        self.layers.iter().find(|l| l.kind() == "model")
    }

    /// The model's file type (`F16`, `Q4_K_M`), as `show` prints it.
    pub fn file_type(&self) -> &str {
        &self.config.file_type
    }

    /// Use `layer` (the quantized weights, of `file_type`) in place of the model layer
    /// `source`.
    pub fn replace_model(&mut self, source: &Layer, layer: Layer, file_type: String) {
        for l in self.layers.iter_mut().filter(|l| l.digest == source.digest) {
            *l = layer.clone();
        }
        self.config.file_type = file_type;
    }
}

/// The config blob of a model whose weights are `info`.
fn gguf_config(info: &corral_gguf::GgufInfo) -> ConfigBlob {
    let arch = info.architecture().to_string();
    ConfigBlob {
        model_format: "gguf".into(),
        model_family: arch.clone(),
        model_families: Some(vec![arch]),
        model_type: info.parameter_size(),
        file_type: info.file_type(),
        architecture: std::env::consts::ARCH
            .replace("x86_64", "amd64")
            .replace("aarch64", "arm64"),
        os: std::env::consts::OS.into(),
        rootfs: RootFs::default(),
        requires: String::new(),
    }
}

fn status(p: &mut Vec<ProgressResponse>, s: String) {
    p.push(ProgressResponse {
        status: s,
        ..Default::default()
    })
}

/// Create the model: check the request, quantize the weights when asked (in a runner child),
/// write the layers and the manifest. Progress lines go to `tx` once the request is known to
/// be good; an error before any was sent leaves the store as it was.
pub async fn run(
    st: crate::AppState,
    req: CreateRequest,
    tx: tokio::sync::mpsc::UnboundedSender<ApiResult<ProgressResponse>>,
) -> ApiResult<()> {
    let blocking = |e: tokio::task::JoinError| ApiError::internal(e.to_string());
    let (store, r) = (st.store.clone(), req.clone());
    let mut plan = tokio::task::spawn_blocking(move || check(&store, &r))
        .await
        .map_err(blocking)??;
    if plan.convert.is_some() || plan.convert_adapter.is_some() || plan.quantize.is_some() {
        for p in plan.progress.drain(..) {
            let _ = tx.send(Ok(p));
        }
    }
    // Converted files become blobs only once every conversion and quantization has succeeded
    // (quantized, the converted model is the quantizer's source and goes when dropped), so a
    // failed or abandoned one leaves no blob of no model. (A failure after that, in writing
    // the layers or the manifest, leaves blobs to start-up's pruning, as any create does.)
    let mut converted = None;
    if let Some(files) = plan.convert.take() {
        let (file, info) = crate::weights::convert(&st, &files, None, &tx).await?;
        plan.config = gguf_config(&info);
        if let Some(draft) = plan.draft.clone() {
            // The draft is compared with the model's vocabulary, which exists only now.
            let (store, model) = (st.store.clone(), file.to_path_buf());
            tokio::task::spawn_blocking(move || same_vocabulary(&store, &draft, &model))
                .await
                .map_err(blocking)??;
        }
        converted = Some(file);
    }
    let adapter = match plan.convert_adapter.take() {
        Some(files) => {
            let base = match &converted {
                Some(file) => file.to_path_buf(),
                None => st.store.blob_path(&plan.model().expect("checked").digest),
            };
            Some(
                crate::weights::convert(&st, &files, Some(&base), &tx)
                    .await?
                    .0,
            )
        }
        None => None,
    };
    if let Some(file) = converted {
        let layer = match plan.quantize.take() {
            Some(to) => {
                let from = plan.file_type().to_string();
                let (layer, info) = crate::weights::quantize(&st, &file, &from, to, &tx).await?;
                plan.config.file_type = info.file_type();
                layer
            }
            None => crate::weights::into_blob(&st, file, "model").await?,
        };
        plan.layers.push(layer);
    }
    if let Some(to) = plan.quantize {
        let source = plan.model().expect("checked").clone();
        let from = plan.file_type().to_string();
        let path = st.store.blob_path(&source.digest);
        let (layer, info) = crate::weights::quantize(&st, &path, &from, to, &tx).await?;
        plan.replace_model(&source, layer, info.file_type());
    }
    if let Some(file) = adapter {
        plan.adapter = Some(crate::weights::into_blob(&st, file, "adapter").await?);
    }
    let store = st.store.clone();
    let lines = tokio::task::spawn_blocking(move || write(&store, &req, plan))
        .await
        .map_err(blocking)??;
    for p in lines {
        let _ = tx.send(Ok(p));
    }
    Ok(())
}

/// Check every part of the request; nothing is written.
pub fn check(store: &Store, req: &CreateRequest) -> ApiResult<Plan> {
    let name = models::parse_name(&req.model)?;
    let mut progress = Vec::new();
    for file in req
        .files
        .iter()
        .chain(req.adapters.iter())
        .chain(req.draft_files.iter())
        .flat_map(|m| m.keys())
    {
        check_file_name(file)?;
    }
    let quantize = match req.quantize.as_deref().map(str::trim) {
        Some(q) if !q.is_empty() => Some(q.parse::<QuantType>().map_err(ApiError::bad_request)?),
        _ => None,
    };

    // The base: one GGUF file, a Hugging Face model's files, or an existing model.
    let mut convert = None;
    let (layers, config, mut params) = match (&req.files, &req.from) {
        (Some(files), _) if files.keys().any(|f| f.ends_with(".safetensors")) => {
            let mut blobs = BTreeMap::new();
            for (file, digest) in files {
                blobs.insert(file.clone(), uploaded_blob(store, file, digest)?);
            }
            check_hugging_face(store, &blobs)?;
            convert = Some(blobs);
            (Vec::new(), ConfigBlob::default(), Options::default())
        }
        (Some(files), _) if !files.is_empty() => {
            if files.len() != 1 {
                return Err(ApiError::bad_request(format!(
                    "expected one GGUF file or a safetensors model, got {} files and no \
                     *.safetensors: split GGUF models are not supported",
                    files.len()
                )));
            }
            let (file, digest) = files.iter().next().expect("one file");
            let digest = uploaded_blob(store, file, digest)?;
            status(&mut progress, "parsing GGUF".into());
            let info = corral_gguf::read(&store.blob_path(&digest))
                .map_err(|e| ApiError::bad_request(format!("invalid model file '{file}': {e}")))?;
            let size = store.blob_size(&digest).unwrap_or(info.file_size);
            let layer = Layer {
                media_type: Layer::media_type_for("model"),
                digest,
                size,
                from: None,
            };
            (vec![layer], gguf_config(&info), Options::default())
        }
        (_, Some(from)) if !from.is_empty() => {
            let base = models::load(store, from)?;
            let layers = base.entry.manifest.layers.clone();
            (layers, base.config.clone(), base.params.clone())
        }
        _ => {
            return Err(ApiError::bad_request(
                "neither 'from' nor 'files' was specified",
            ))
        }
    };

    // Check every new piece before writing any of them.
    if let Some(t) = &req.template {
        ChatTemplate::go(t).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    if let Some(map) = &req.parameters {
        let mut map = map.clone();
        map.retain(|k, _| {
            let deprecated = corral_api::options::DEPRECATED.contains(&k.as_str());
            if deprecated {
                tracing::warn!(parameter = %k, "parameter is no longer supported and was ignored");
            }
            !deprecated
        });
        let (p, unknown) =
            Options::from_map(&map).map_err(|e| ApiError::bad_request(e.to_string()))?;
        if let Some(u) = unknown.first() {
            return Err(ApiError::bad_request(format!("unknown parameter '{u}'")));
        }
        params = params.merged(&p);
    }
    if let Some(msgs) = &req.messages {
        check_roles(msgs)?;
    }
    let mut convert_adapter = None;
    let adapter = match &req.adapters {
        Some(a)
            if a.keys()
                .any(|f| f.ends_with(".safetensors") || f == corral_convert::ADAPTER_FILES[0]) =>
        {
            let mut blobs = BTreeMap::new();
            for (file, digest) in a {
                blobs.insert(file.clone(), uploaded_blob(store, file, digest)?);
            }
            check_peft(store, &blobs)?;
            if convert.is_none() {
                let Some(model) = layers.iter().find(|l| l.kind() == "model") else {
                    return Err(ApiError::bad_request("an adapter needs a model to adapt"));
                };
                let info = corral_gguf::read(&store.blob_path(&model.digest))
                    .map_err(|e| ApiError::internal(format!("the model's GGUF: {e}")))?;
                corral_convert::check_adapter_base(info.architecture())
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
            }
            convert_adapter = Some(blobs);
            None
        }
        Some(a) if a.len() > 1 => {
            return Err(ApiError::bad_request(format!(
                "only one adapter is supported, got {}",
                a.len()
            )))
        }
        Some(a) => match a.iter().next() {
            Some((file, digest)) => Some(check_adapter(store, file, digest)?),
            None => None,
        },
        None => None,
    };
    // A converted model's vocabulary is known once it is converted: a draft's is compared then.
    let draft = check_draft(store, req, &layers, convert.is_none())?;
    // A conversion writes F16, BF16 or F32 weights, which can all be quantized.
    if quantize.is_some() && convert.is_none() {
        if !layers.iter().any(|l| l.kind() == "model") {
            return Err(ApiError::bad_request(
                "nothing to quantize: the model has no weights",
            ));
        }
        if !corral_api::quantize::is_quantize_source(&config.file_type) {
            return Err(ApiError::bad_request(format!(
                "quantization is only supported for F16 and F32 models (and BF16); this one is {}",
                config.file_type
            )));
        }
    }
    Ok(Plan {
        name,
        layers,
        config,
        params,
        adapter,
        draft,
        convert,
        convert_adapter,
        quantize,
        progress,
    })
}

/// Largest `config.json` or `adapter_config.json` the server reads itself.
const MAX_CONFIG: u64 = 1 << 20;

/// The files of a Hugging Face model: what can be refused before converting is refused now
/// (a missing config.json or tokenizer, an architecture the converter does not know).
fn check_hugging_face(store: &Store, files: &BTreeMap<String, Digest>) -> ApiResult<()> {
    let needs = corral_convert::NEEDS;
    plain_names(files)?;
    let Some(config) = files.get("config.json") else {
        return Err(ApiError::bad_request(format!(
            "config.json is missing: {needs}"
        )));
    };
    if !corral_convert::TOKENIZERS
        .iter()
        .any(|t| files.contains_key(*t))
    {
        return Err(ApiError::bad_request(format!(
            "tokenizer.json or tokenizer.model is missing: {needs}"
        )));
    }
    let bytes = read_config(store, "config.json", config)?;
    corral_convert::check_config(&bytes).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The files of a PEFT LoRA adapter: its config checked before anything runs.
fn check_peft(store: &Store, files: &BTreeMap<String, Digest>) -> ApiResult<()> {
    use corral_convert::{ADAPTER_FILES, ADAPTER_NEEDS};
    if let Some(other) = files.keys().find(|n| !ADAPTER_FILES.contains(&n.as_str())) {
        return Err(ApiError::bad_request(format!(
            "adapter file {other:?}: {ADAPTER_NEEDS}, and nothing else"
        )));
    }
    for name in ADAPTER_FILES {
        if !files.contains_key(name) {
            return Err(ApiError::bad_request(format!(
                "{name} is missing: {ADAPTER_NEEDS}"
            )));
        }
    }
    let config = ADAPTER_FILES[0];
    let bytes = read_config(store, config, &files[config])?;
    corral_convert::check_adapter_config(&bytes).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The converter reads one folder, the files under these names.
fn plain_names(files: &BTreeMap<String, Digest>) -> ApiResult<()> {
    // A file name, or one folder and a file name (a sentence-transformers module's config).
    let plain =
        |part: &str| !part.is_empty() && part != "." && part != ".." && !part.contains('\\');
    let fine = |name: &str| match name.split_once('/') {
        None => plain(name),
        Some((folder, file)) => plain(folder) && plain(file) && !file.contains('/'),
    };
    if let Some(name) = files.keys().find(|n| !fine(n)) {
        return Err(ApiError::bad_request(format!(
            "file name {name:?}: a safetensors model's files must be plain names, in one folder \
             or one level below it"
        )));
    }
    // A name cannot be both a file and the folder of another.
    match files
        .keys()
        .filter_map(|n| n.split_once('/').map(|(folder, _)| folder))
        .find(|folder| files.contains_key(*folder))
    {
        Some(folder) => Err(ApiError::bad_request(format!(
            "file name {folder:?} is both a file and the folder of another file"
        ))),
        None => Ok(()),
    }
}

/// An uploaded JSON configuration, read with a cap (real ones are a few kB).
fn read_config(store: &Store, name: &str, digest: &Digest) -> ApiResult<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(store.blob_path(digest))
        .and_then(|f| f.take(MAX_CONFIG + 1).read_to_end(&mut bytes))
        .map_err(|e| ApiError::internal(format!("read {name}: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG {
        return Err(ApiError::bad_request(format!(
            "{name} is larger than 1 MiB"
        )));
    }
    Ok(bytes)
}

/// Write the new layers and the manifest of a checked request; returns the progress lines.
pub fn write(store: &Store, req: &CreateRequest, plan: Plan) -> ApiResult<Vec<ProgressResponse>> {
    let Plan {
        name,
        mut layers,
        mut config,
        params,
        adapter,
        draft,
        mut progress,
        ..
    } = plan;

    // Write the new layers, replacing those of the same kind from the base.
    let mut replace = |kind: &str, bytes: &[u8]| -> ApiResult<()> {
        layers.retain(|l| l.kind() != kind);
        layers.push(store.put_blob_bytes(Layer::media_type_for(kind), bytes)?);
        Ok(())
    };
    if let Some(t) = &req.template {
        replace("template", t.as_bytes())?;
    }
    if let Some(s) = &req.system {
        replace("system", s.as_bytes())?;
    }
    if req.parameters.is_some() {
        let json = serde_json::to_vec(&params.to_map()).expect("params serialize");
        replace("params", &json)?;
    }
    if let Some(msgs) = &req.messages {
        let json = serde_json::to_vec(msgs).expect("messages serialize");
        replace("messages", &json)?;
    }
    if let Some(layer) = adapter {
        layers.retain(|l| l.kind() != "adapter");
        layers.push(layer);
    }
    if let Some(layer) = draft {
        layers.retain(|l| l.kind() != "draft");
        layers.push(layer);
    }
    for text in license_texts(req.license.as_ref()) {
        let layer = store.put_blob_bytes(Layer::media_type_for("license"), text.as_bytes())?;
        if !layers.iter().any(|l| l.digest == layer.digest) {
            layers.push(layer);
        }
    }
    for l in &layers {
        // A base model removed meanwhile (a quantization takes a while) took blobs with it.
        if !store.has_blob(&l.digest) {
            return Err(ApiError::bad_request(format!(
                "layer {} is gone: was the base model removed while this one was made?",
                l.digest
            )));
        }
        status(&mut progress, format!("using layer {}", l.digest));
    }

    if let Some(r) = &req.requires {
        config.requires = r.clone();
    }
    config.rootfs = RootFs {
        kind: "layers".into(),
        diff_ids: layers.iter().map(|l| l.digest.to_string()).collect(),
    };
    let config_layer = store.put_config(&config)?;
    status(&mut progress, "writing manifest".into());
    store.put_manifest(&name, &Manifest::new(config_layer, layers))?;
    status(&mut progress, "success".into());
    Ok(progress)
}

/// A name in `files` or `adapters` must be a plain relative path: it names the file inside
/// the model, and Ollama's clients and tools read it back as a path.
fn check_file_name(name: &str) -> ApiResult<()> {
    let bad = |why: &str| Err(ApiError::bad_request(format!("{why}: {name:?}")));
    if name.is_empty() {
        return bad("file name is empty");
    }
    if name.contains('\0') {
        return bad("file name contains a NUL byte");
    }
    if name.contains('\\') {
        return bad("file path must be relative, with '/' separators, and no backslash");
    }
    let drive =
        name.len() >= 2 && name.as_bytes()[1] == b':' && name.as_bytes()[0].is_ascii_alphabetic();
    if name.starts_with('/') || drive {
        return bad("file path must be relative");
    }
    if name.split('/').any(|c| c == "..") {
        return bad("file path must be relative and may not contain '..'");
    }
    Ok(())
}

/// The digest of a file the client says it uploaded, checked to be present.
fn uploaded_blob(store: &Store, file: &str, digest: &str) -> ApiResult<Digest> {
    let digest: Digest = digest
        .parse()
        .map_err(|e: corral_store::DigestError| ApiError::bad_request(e.to_string()))?;
    if !store.has_blob(&digest) {
        return Err(ApiError::bad_request(format!(
            "blob {digest} for '{file}' not found: upload it first"
        )));
    }
    Ok(digest)
}

/// An uploaded LoRA adapter must be a complete GGUF that says it is an adapter.
fn check_adapter(store: &Store, file: &str, digest: &str) -> ApiResult<Layer> {
    let digest = uploaded_blob(store, file, digest)?;
    let info = corral_gguf::read(&store.blob_path(&digest))
        .map_err(|e| ApiError::bad_request(format!("invalid adapter file '{file}': {e}")))?;
    if info.string("general.type") != Some("adapter") {
        return Err(ApiError::bad_request(format!(
            "invalid adapter file '{file}': not a LoRA adapter (general.type is not \"adapter\")"
        )));
    }
    let size = store.blob_size(&digest).unwrap_or(info.file_size);
    Ok(Layer {
        media_type: Layer::media_type_for("adapter"),
        digest,
        size,
        from: None,
    })
}

/// `DRAFT`: a GGUF uploaded for it, or another model's weights. It must be a model, not the
/// model itself, and share the model's vocabulary (speculation compares token ids). With
/// `model_known` false (a model still to be converted) the comparisons with the model wait
/// for [`same_vocabulary`].
fn check_draft(
    store: &Store,
    req: &CreateRequest,
    layers: &[Layer],
    model_known: bool,
) -> ApiResult<Option<Layer>> {
    let (label, digest) = match (&req.draft_files, &req.draft) {
        (Some(files), _) if !files.is_empty() => {
            if files.len() != 1 {
                return Err(ApiError::bad_request(format!(
                    "expected one draft GGUF file, got {}",
                    files.len()
                )));
            }
            let (file, digest) = files.iter().next().expect("one file");
            (
                format!("draft file '{file}'"),
                uploaded_blob(store, file, digest)?,
            )
        }
        (_, Some(name)) if !name.is_empty() => {
            let m = models::load(store, name)?;
            let layer = m.entry.manifest.layer("model").ok_or_else(|| {
                ApiError::bad_request(format!("draft model '{name}' has no model layer"))
            })?;
            (format!("draft model '{name}'"), layer.digest.clone())
        }
        _ => return Ok(None),
    };
    let bad = |why: String| Err(ApiError::bad_request(format!("{label} {why}")));
    let info = match corral_gguf::read(&store.blob_path(&digest)) {
        Ok(i) => i,
        Err(e) => return bad(format!("is not a valid GGUF: {e}")),
    };
    if info.string("general.type") == Some("adapter") {
        return bad("is a LoRA adapter, not a model".into());
    }
    if model_known {
        let Some(model) = layers.iter().find(|l| l.kind() == "model") else {
            return bad("needs a model to draft for".into());
        };
        if model.digest == digest {
            return bad(
                "is the model itself: a draft must be a smaller model with its vocabulary".into(),
            );
        }
        vocabulary_matches(&label, &info, &store.blob_path(&model.digest))?;
    }
    let size = store.blob_size(&digest).unwrap_or(info.file_size);
    Ok(Some(Layer {
        media_type: Layer::media_type_for("draft"),
        digest,
        size,
        from: None,
    }))
}

/// A converted model's draft, checked against the converted file `model`.
fn same_vocabulary(store: &Store, draft: &Layer, model: &std::path::Path) -> ApiResult<()> {
    let info = corral_gguf::read(&store.blob_path(&draft.digest))
        .map_err(|e| ApiError::internal(format!("the draft's GGUF cannot be read: {e}")))?;
    vocabulary_matches("the draft", &info, model)
}

fn vocabulary_matches(
    label: &str,
    draft: &corral_gguf::GgufInfo,
    model: &std::path::Path,
) -> ApiResult<()> {
    let main = corral_gguf::read(model)
        .map_err(|e| ApiError::internal(format!("the model's GGUF cannot be read: {e}")))?;
    if draft.vocab_hash.is_none() || draft.vocab_hash != main.vocab_hash {
        let tokens = |i: &corral_gguf::GgufInfo| {
            i.metadata
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v["array_length"].as_u64())
                .unwrap_or(0)
        };
        return Err(ApiError::bad_request(format!(
            "{label} cannot draft for this model: its vocabulary ({} tokens) is not the model's \
             ({} tokens)",
            tokens(draft),
            tokens(&main)
        )));
    }
    Ok(())
}

fn check_roles(msgs: &[Message]) -> ApiResult<()> {
    for m in msgs {
        if !["system", "user", "assistant"].contains(&m.role.as_str()) {
            return Err(ApiError::bad_request(format!(
                "message role must be one of \"system\", \"user\", or \"assistant\", got '{}'",
                m.role
            )));
        }
    }
    Ok(())
}

fn license_texts(v: Option<&serde_json::Value>) -> Vec<String> {
    match v {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_safetensors_models_files_are_one_folder_deep_at_most() {
        let digest: corral_store::Digest = format!("sha256:{}", "0".repeat(64)).parse().unwrap();
        let names = |names: &[&str]| {
            let files = names
                .iter()
                .map(|n| (n.to_string(), digest.clone()))
                .collect();
            super::plain_names(&files).map_err(|e| e.to_string())
        };
        assert!(names(&["config.json", "1_Pooling/config.json"]).is_ok());
        for bad in [
            &["a/b/c.json"][..],
            &["../config.json"],
            &["./x"],
            &["a/"],
            &["a\\b"],
        ] {
            assert!(names(bad).is_err(), "{bad:?}");
        }
        let e = names(&["1_Pooling", "1_Pooling/config.json"]).unwrap_err();
        assert!(e.contains("both a file and the folder"), "{e}");
    }

    #[test]
    fn file_names() {
        for ok in [
            "model.gguf",
            "sub/dir/x.gguf",
            "a..b.gguf",
            "./x.gguf",
            ".hidden",
        ] {
            assert!(super::check_file_name(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("../../../../outside/x.gguf", "'..'"),
            ("a/../../b.gguf", "'..'"),
            ("..", "'..'"),
            ("/etc/passwd", "must be relative"),
            ("C:/x.gguf", "must be relative"),
            ("a\\..\\b.gguf", "backslash"),
            ("x\0.gguf", "NUL"),
            ("", "empty"),
        ] {
            let e = super::check_file_name(bad).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(why), "{bad:?}: {}", e.message);
        }
    }
}
