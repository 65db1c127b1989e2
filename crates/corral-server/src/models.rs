//! A model as the server uses it: its manifest read from the store, with every layer loaded.

use std::path::PathBuf;

use corral_api::{Message, ModelDetails, Options};
use corral_store::{ConfigBlob, ModelEntry, Name, Store};

use crate::error::{ApiError, ApiResult};

/// Everything a model's manifest says, read from its layers.
#[derive(Debug, Clone)]
pub struct Model {
    pub entry: ModelEntry,
    pub model_path: PathBuf,
    /// The LoRA adapter layer's blob, if the Modelfile had an ADAPTER.
    pub adapter_path: Option<PathBuf>,
    /// The draft model layer's blob, if the Modelfile had a DRAFT.
    pub draft_path: Option<PathBuf>,
    pub template: Option<String>,
    pub system: Option<String>,
    pub license: Vec<String>,
    pub params: Options,
    pub messages: Vec<Message>,
    pub config: ConfigBlob,
}

impl Model {
    /// The name as `list` and `ps` show it.
    pub fn display_name(&self) -> String {
        self.entry.name.display_short()
    }

    /// The `details` object.
    pub fn details(&self) -> ModelDetails {
        details(&self.config)
    }
}

/// The `details` object from a config blob.
pub fn details(c: &ConfigBlob) -> ModelDetails {
    ModelDetails {
        parent_model: String::new(),
        format: if c.model_format.is_empty() {
            "gguf".into()
        } else {
            c.model_format.clone()
        },
        family: c.model_family.clone(),
        families: c.model_families.clone(),
        parameter_size: c.model_type.clone(),
        quantization_level: c.file_type.clone(),
    }
}

/// Parse a model name from a request, answering 400 for an invalid one.
pub fn parse_name(s: &str) -> ApiResult<Name> {
    if s.trim().is_empty() {
        return Err(ApiError::bad_request("model is required"));
    }
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid model name '{s}'")))
}

/// Look a model up and read its layers. Unknown names answer 404 `model 'x' not found`.
pub fn load(store: &Store, requested: &str) -> ApiResult<Model> {
    if requested.trim().is_empty() {
        return Err(ApiError::bad_request("model is required"));
    }
    let name = parse_name(requested).map_err(|_| ApiError::model_not_found(requested))?;
    let entry = store.get(&name).map_err(|e| match e {
        corral_store::StoreError::NotFound(_) => ApiError::model_not_found(requested),
        other => ApiError::from(other),
    })?;
    let m = &entry.manifest;
    let text = |kind: &str| -> ApiResult<Option<String>> {
        match m.layer(kind) {
            Some(l) => Ok(Some(
                String::from_utf8_lossy(&store.read_blob(&l.digest)?).into_owned(),
            )),
            None => Ok(None),
        }
    };
    let model_layer = m
        .layer("model")
        .ok_or_else(|| ApiError::internal(format!("model '{requested}' has no model layer")))?;
    let params = match text("params")? {
        Some(json) => {
            let map = serde_json::from_str(&json).map_err(|e| {
                ApiError::internal(format!("invalid params layer of '{requested}': {e}"))
            })?;
            Options::from_map(&map)
                .map_err(|e| ApiError::internal(e.to_string()))?
                .0
        }
        None => Options::default(),
    };
    let messages = match text("messages")? {
        Some(json) => serde_json::from_str(&json).map_err(|e| {
            ApiError::internal(format!("invalid messages layer of '{requested}': {e}"))
        })?,
        None => Vec::new(),
    };
    let mut license = Vec::new();
    for l in m.layers_of("license") {
        license.push(String::from_utf8_lossy(&store.read_blob(&l.digest)?).into_owned());
    }
    let config = store
        .read_blob(&m.config.digest)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    Ok(Model {
        model_path: store.blob_path(&model_layer.digest),
        adapter_path: m.layer("adapter").map(|l| store.blob_path(&l.digest)),
        draft_path: m.layer("draft").map(|l| store.blob_path(&l.digest)),
        template: text("template")?,
        system: text("system")?,
        license,
        params,
        messages,
        config,
        entry,
    })
}

/// Whether a template renders tools: a Go template that uses `.Tools`, a Jinja one that reads
/// `tools`.
pub fn supports_tools(template: &str) -> bool {
    template.contains(".Tools") || (template.contains("{%") && template.contains("tools"))
}

/// Whether a template can switch thinking: a Go template that uses `.Think`, a Jinja one that
/// reads `enable_thinking` or writes `<think>`.
pub fn supports_thinking(template: &str) -> bool {
    template.contains(".Think")
        || (template.contains("{%")
            && (template.contains("enable_thinking") || template.contains("<think>")))
}

/// Whether a Go template fills in the middle (`.Suffix`, as Ollama checks).
pub fn supports_insert(template: &str) -> bool {
    template.contains(".Suffix")
}

/// `capabilities` as `show` lists them; `fim_tokens`: the GGUF has fill-in-the-middle tokens;
/// `embeds_only`: an embedding model, which has only `embedding` (as Ollama lists it).
pub fn capabilities(template: &str, fim_tokens: bool, embeds_only: bool) -> Vec<String> {
    if embeds_only {
        return vec!["embedding".to_string()];
    }
    let mut c = vec!["completion".to_string()];
    if supports_tools(template) {
        c.push("tools".into());
    }
    if supports_insert(template) || fim_tokens {
        c.push("insert".into());
    }
    if supports_thinking(template) {
        c.push("thinking".into());
    }
    c
}
