//! Hugging Face models as GGUF: a folder of `config.json`, `*.safetensors` weights and a
//! `tokenizer.json` or SentencePiece `tokenizer.model` (a decoder that writes text, the
//! `decoder` module; or a BERT encoder that embeds, the `encoder` module), as `FROM /path/to/folder` in a Modelfile gives it (Ollama's import of
//! safetensors models), or a PEFT LoRA adapter's folder (`adapter_config.json`,
//! `adapter_model.safetensors`) as `ADAPTER /path/to/folder` gives it, written as one GGUF
//! file that llama.cpp loads.
//!
//! Pure Rust, so it runs anywhere; the server still runs it in a child process (`corral runner
//! --convert`), since it reads a whole model's weights and the server never holds a model.
//! The weights keep their precision: F16 and BF16 matrices stay as they are, F32 matrices
//! become F16 (as llama.cpp's converter does by default), and vectors (norms, biases) are F32.
//! Quantizing is llama.cpp's work, done after this by `create --quantize`.

mod adapter;
mod decoder;
mod encoder;
mod gguf;
mod sentencepiece;
mod source;
mod tokenizer;
mod wordpiece;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

pub use tokenizer::SPLIT_PRE_TOKENIZERS;

use gguf::{Metadata, TensorInfo, TensorType, Value};
use source::{Dtype, Safetensors};

/// What a folder must hold, for messages about what it lacks.
pub const NEEDS: &str = "a safetensors model needs config.json, tokenizer.json (or a \
     SentencePiece tokenizer.model) and its *.safetensors weights";

/// The vocabulary files a model folder may have (one is needed): Hugging Face's, or
/// SentencePiece's.
pub const TOKENIZERS: [&str; 2] = ["tokenizer.json", "tokenizer.model"];

/// A PEFT LoRA adapter's files, as PEFT names them: its config, then its weights.
pub const ADAPTER_FILES: [&str; 2] = ["adapter_config.json", "adapter_model.safetensors"];

/// What an adapter folder must hold, for messages about what it lacks.
pub const ADAPTER_NEEDS: &str =
    "a safetensors LoRA adapter needs adapter_config.json and adapter_model.safetensors";

/// Why a folder cannot be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{0} is missing")]
    Missing(String),
    #[error("{file}: {why}")]
    Invalid { file: String, why: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The files of a model folder, by name.
pub struct Files {
    paths: BTreeMap<String, PathBuf>,
}

impl Files {
    /// The regular files (or links to them) directly in `dir`. A link to nothing is an
    /// error, not a file left out.
    pub fn open(dir: &Path) -> io::Result<Files> {
        let mut paths = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_symlink() && !path.exists() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} links to nothing", path.display()),
                ));
            }
            if path.is_file() {
                if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                    paths.insert(name.to_string(), path.clone());
                }
            }
        }
        // A sentence-transformers model keeps its pooling settings in the Pooling module's
        // folder: that one file below the folder is part of the model too.
        let modules = paths
            .get("modules.json")
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<Json>(&b).ok());
        if let Some(folder) = modules.as_ref().and_then(encoder::pooling_path) {
            let path = dir.join(folder).join("config.json");
            if path.is_file() {
                paths.insert(format!("{folder}/config.json"), path);
            }
        }
        Ok(Files { paths })
    }

    /// Whether the folder has this file.
    pub fn has(&self, name: &str) -> bool {
        self.paths.contains_key(name)
    }

    /// The files' names and paths.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.paths.iter().map(|(n, p)| (n.as_str(), p.as_path()))
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, ConvertError> {
        self.paths
            .get(name)
            .map(std::fs::read)
            .transpose()
            .map_err(ConvertError::from)
    }

    fn json(&self, name: &str) -> Result<Json, ConvertError> {
        let bytes = self
            .read(name)?
            .ok_or_else(|| ConvertError::Missing(name.into()))?;
        serde_json::from_slice(&bytes).map_err(|e| ConvertError::Invalid {
            file: name.into(),
            why: format!("not valid JSON: {e}"),
        })
    }

    /// A JSON file that may be absent (`null` then).
    fn json_or_null(&self, name: &str) -> Result<Json, ConvertError> {
        match self.paths.contains_key(name) {
            true => self.json(name),
            false => Ok(Json::Null),
        }
    }

    fn text(&self, name: &str) -> Result<Option<String>, ConvertError> {
        self.read(name)?
            .map(|b| {
                String::from_utf8(b).map_err(|_| ConvertError::Invalid {
                    file: name.into(),
                    why: "not UTF-8 text".into(),
                })
            })
            .transpose()
    }

    /// An adapter's weight files: `adapter_model.safetensors` as PEFT names it.
    fn adapter_weights(&self) -> Vec<(&str, &Path)> {
        self.iter()
            .filter(|(n, _)| *n == ADAPTER_FILES[1])
            .collect()
    }

    /// The weight files, as Hugging Face's loaders find them: those that
    /// `model.safetensors.index.json` names (each must be there), else `model*.safetensors`
    /// (`model.safetensors`, or shards `model-00001-of-00002.safetensors` ...), else every
    /// `*.safetensors`. Other files (Mistral's `consolidated.safetensors` beside the shards)
    /// are left out.
    pub fn safetensors(&self) -> Result<Vec<(&str, &Path)>, ConvertError> {
        let index = "model.safetensors.index.json";
        let pick = |keep: &dyn Fn(&str) -> bool| -> Vec<(&str, &Path)> {
            self.iter().filter(|(n, _)| keep(n)).collect()
        };
        if self.has(index) {
            let map = &self.json(index)?["weight_map"];
            let Some(map) = map.as_object() else {
                return Err(ConvertError::Invalid {
                    file: index.into(),
                    why: "it has no weight_map".into(),
                });
            };
            let named: std::collections::BTreeSet<&str> =
                map.values().filter_map(Json::as_str).collect();
            if let Some(absent) = named.iter().find(|n| !self.has(n)) {
                return Err(ConvertError::Missing(format!(
                    "{absent} (named by {index})"
                )));
            }
            return Ok(pick(&|n| named.contains(n)));
        }
        let models = pick(&|n| n.starts_with("model") && n.ends_with(".safetensors"));
        match models.is_empty() {
            false => Ok(models),
            true => Ok(pick(&|n| n.ends_with(".safetensors"))),
        }
    }
}

/// A tensor of the output and where its data comes from.
struct Planned {
    info: TensorInfo,
    from: From,
}

enum From {
    /// A source tensor, its rows reordered by llama.cpp's rotary permutation for this many
    /// heads when set, and 1 added to each value for `plus_one` (Gemma's norms).
    Source {
        name: String,
        permute: Option<u64>,
        plus_one: bool,
    },
    /// Data computed by the converter (F32 values).
    Computed(Vec<f32>),
    /// Source tensors of one shape one after another (a mixture's experts).
    Stack(Vec<String>),
}

/// Check what can be checked from `config.json` alone: the architecture is one this converter
/// knows, and the sizes it needs are there. The server (and the CLI, before it uploads) calls
/// it before a conversion starts, to refuse a model at once.
pub fn check_config(config: &[u8]) -> Result<(), ConvertError> {
    let config: Json = serde_json::from_slice(config).map_err(|e| ConvertError::Invalid {
        file: "config.json".into(),
        why: format!("not valid JSON: {e}"),
    })?;
    match family(&config)? {
        Family::Decoder(&arch) => {
            decoder::Dims::read(arch, &decoder::text_config(arch, &config)).map(|_| ())
        }
        Family::Bert => encoder::Dims::read(&encoder::bert_config(&config)).map(|_| ()),
    }
}

/// Check a LoRA adapter's `adapter_config.json` before its conversion starts.
pub fn check_adapter_config(config: &[u8]) -> Result<(), ConvertError> {
    let config: Json = serde_json::from_slice(config).map_err(|e| ConvertError::Invalid {
        file: "adapter_config.json".into(),
        why: format!("not valid JSON: {e}"),
    })?;
    adapter::lora_config(&config).map(|_| ())
}

/// Check that adapters can be converted for a base model of this GGUF architecture.
pub fn check_adapter_base(architecture: &str) -> Result<(), ConvertError> {
    adapter::base_architecture(architecture).map(|_| ())
}

/// What a folder's `config.json` names: a decoder (by its architecture), or a BERT encoder.
enum Family {
    Decoder(&'static decoder::Arch),
    Bert,
}

fn family(config: &Json) -> Result<Family, ConvertError> {
    let name = config["architectures"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(Json::as_str)
        .ok_or_else(|| ConvertError::Invalid {
            file: "config.json".into(),
            why: "it names no architecture (\"architectures\": [...])".into(),
        })?;
    if encoder::ARCHITECTURES.contains(&name) {
        return Ok(Family::Bert);
    }
    let known = decoder::ARCHITECTURES;
    match known.iter().find(|(n, _)| *n == name) {
        Some((_, arch)) => Ok(Family::Decoder(arch)),
        None => Err(ConvertError::Unsupported(format!(
            "unsupported architecture \"{name}\": Corral converts {} models",
            known
                .iter()
                .map(|(n, _)| *n)
                .chain(encoder::ARCHITECTURES)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Convert the model folder `dir` (or, with `base`, the LoRA adapter folder `dir` for the GGUF
/// model `base`) into the GGUF file `out`, calling
/// `progress(done, total)` as each tensor begins and once all are written.
pub fn convert(
    dir: &Path,
    base: Option<&Path>,
    out: &Path,
    progress: impl FnMut(u32, u32),
) -> Result<(), ConvertError> {
    let files = Files::open(dir)?;
    // An adapter is converted for a base; a model folder may hold a stray adapter_config.json.
    if let Some(base) = base {
        let base = corral_gguf::read(base).map_err(|e| ConvertError::Invalid {
            file: "the base model".into(),
            why: e.to_string(),
        })?;
        let mut source = Safetensors::open(&files.adapter_weights())?;
        // An adapter of a vision-language model (Gemma 3 4B ...) names its text model's
        // layers under `language_model`, and may train the vision tower, which is left out.
        source.rename(adapter::text_module_name);
        let (metadata, tensors) = adapter::plan(&files, &base.metadata, &source)?;
        return write(out, &metadata, &tensors, &source, progress);
    }
    let config = files.json("config.json")?;
    let mut source = Safetensors::open(&files.safetensors()?)?;
    let (model, vocab) = match family(&config)? {
        Family::Decoder(&arch) => {
            let config = decoder::text_config(arch, &config);
            if arch.multimodal {
                source.rename(decoder::text_model_name);
            }
            let model = decoder::plan(arch, &config, &source)?;
            let vocab =
                tokenizer::metadata(&files, &config, model.vocab_size, arch.space_prefix())?;
            (model, vocab)
        }
        Family::Bert => {
            let config = encoder::bert_config(&config);
            source.rename(encoder::source_name);
            let model = encoder::plan(&config, &source, encoder::pooling(&files)?)?;
            let vocab = wordpiece::metadata(&files, &config, model.vocab_size)?;
            (model, vocab)
        }
    };
    let mut metadata = model.metadata;
    metadata.extend(vocab);
    // llama.cpp's file types: 0 all F32, 1 mostly F16, 32 mostly BF16.
    let matrices = || model.tensors.iter().filter(|t| t.info.dims.len() > 1);
    let file_type = if matrices().any(|t| t.info.ty == TensorType::Bf16) {
        32
    } else if matrices().any(|t| t.info.ty == TensorType::F16) {
        1
    } else {
        0
    };
    metadata.push(("general.file_type".into(), Value::U32(file_type)));
    write(out, &metadata, &model.tensors, &source, progress)
}

/// Write the GGUF file: the header, then each tensor's data, synced before it is called done.
fn write(
    out: &Path,
    metadata: &Metadata,
    tensors: &[Planned],
    source: &Safetensors,
    mut progress: impl FnMut(u32, u32),
) -> Result<(), ConvertError> {
    let infos: Vec<TensorInfo> = tensors.iter().map(|t| t.info.clone()).collect();
    let mut w = BufWriter::with_capacity(1 << 20, File::create(out)?);
    gguf::write_header(&mut w, metadata, &infos)?;
    let total = tensors.len() as u32;
    for (i, t) in tensors.iter().enumerate() {
        progress(i as u32, total);
        gguf::write_data(&mut w, &t.info, |w| match &t.from {
            From::Source {
                name,
                permute,
                plus_one,
            } => source.write_as(name, t.info.ty, *permute, *plus_one, w),
            From::Computed(values) => {
                for v in values {
                    w.write_all(&v.to_le_bytes())?;
                }
                Ok(4 * values.len() as u64)
            }
            From::Stack(names) => names.iter().try_fold(0, |n, name| {
                Ok(n + source.write_as(name, t.info.ty, None, false, w)?)
            }),
        })?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    progress(total, total);
    Ok(())
}

/// A tensor the model needs that its weights lack.
fn missing(name: &str) -> ConvertError {
    ConvertError::Invalid {
        file: "model weights".into(),
        why: format!("tensor {name} is missing"),
    }
}

/// A tensor whose shape is not the one `config.json` gives it.
fn wrong_shape(name: &str, shape: &[u64], expected: &[u64]) -> ConvertError {
    ConvertError::Invalid {
        file: "model weights".into(),
        why: format!("tensor {name} has shape {shape:?}; config.json makes it {expected:?}"),
    }
}

/// Every source tensor must find a place in the `arch` model: the first of those left over
/// (`extra`) is named, since weights of another architecture would be silently dropped.
fn unplaced<'a>(extra: impl Iterator<Item = &'a str>, arch: &str) -> Result<(), ConvertError> {
    let mut extra: Vec<&str> = extra.collect();
    extra.sort();
    match extra.first() {
        None => Ok(()),
        Some(first) => {
            let more = match extra.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            Err(ConvertError::Unsupported(format!(
                "tensor {first}{more} has no place in a {arch} model: the weights do not match \
                 config.json's architecture"
            )))
        }
    }
}

/// The output type of a tensor: vectors as F32 (llama.cpp wants norms in F32), matrices as
/// F16, BF16 kept as BF16 (it holds ranges F16 does not).
fn output_type(dtype: Dtype, dims: usize) -> TensorType {
    match (dims, dtype) {
        (1, _) => TensorType::F32,
        (_, Dtype::Bf16) => TensorType::Bf16,
        _ => TensorType::F16,
    }
}
