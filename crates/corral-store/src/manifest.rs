use serde::{Deserialize, Serialize};

use crate::Digest;

/// The manifest media type Ollama writes.
pub const MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of the config blob.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";

/// A Docker v2 manifest, as Ollama stores and pushes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    pub media_type: String,
    pub config: Layer,
    pub layers: Vec<Layer>,
}

/// One layer (or the config) of a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Layer {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

impl Layer {
    /// The layer kind: the part after `application/vnd.ollama.image.`.
    pub fn kind(&self) -> &str {
        self.media_type
            .strip_prefix("application/vnd.ollama.image.")
            .unwrap_or(&self.media_type)
    }

    /// The media type for a layer kind (`model`, `template`, `system`, `params`, ...).
    pub fn media_type_for(kind: &str) -> String {
        format!("application/vnd.ollama.image.{kind}")
    }
}

impl Manifest {
    /// A manifest over these layers and config.
    pub fn new(config: Layer, layers: Vec<Layer>) -> Self {
        Manifest {
            schema_version: 2,
            media_type: MEDIA_TYPE.to_string(),
            config,
            layers,
        }
    }

    /// The first layer of a kind.
    pub fn layer(&self, kind: &str) -> Option<&Layer> {
        self.layers.iter().find(|l| l.kind() == kind)
    }

    /// Every layer of a kind.
    pub fn layers_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Layer> + 'a {
        self.layers.iter().filter(move |l| l.kind() == kind)
    }

    /// Sum of the sizes of the layers (what `ollama list` shows).
    pub fn total_size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// Each blob once, layers first, then the config: what a pull fetches or a push sends.
    pub fn unique_blobs(&self) -> Vec<&Layer> {
        let mut out: Vec<&Layer> = Vec::new();
        for l in self.layers.iter().chain(std::iter::once(&self.config)) {
            if !out.iter().any(|b| b.digest == l.digest) {
                out.push(l);
            }
        }
        out
    }

    /// Every blob this manifest references, config included.
    pub fn digests(&self) -> impl Iterator<Item = &Digest> {
        std::iter::once(&self.config.digest).chain(self.layers.iter().map(|l| &l.digest))
    }
}

/// The config blob: model format and family, as Ollama writes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigBlob {
    #[serde(default)]
    pub model_format: String,
    #[serde(default)]
    pub model_family: String,
    #[serde(default)]
    pub model_families: Option<Vec<String>>,
    #[serde(default)]
    pub model_type: String,
    #[serde(default)]
    pub file_type: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub rootfs: RootFs,
    /// A Modelfile's `REQUIRES`: the Ollama version the model needs, kept and shown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub requires: String,
}

/// The `rootfs` of a config blob.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

pub(crate) fn config_media_type() -> String {
    CONFIG_MEDIA_TYPE.to_string()
}
