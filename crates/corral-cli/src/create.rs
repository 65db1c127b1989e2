//! `corral create`: a Modelfile (or a folder) read, its files uploaded as blobs, and the
//! create request streamed with its progress, as Ollama's client does it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use corral_api::{CreateRequest, Message, ProgressResponse};
use corral_modelfile::{Command, Modelfile};
use sha2::Digest as _;

use crate::client::Client;
use crate::transfer;

/// `corral create` options.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// Name of the new model.
    pub model: String,
    /// Modelfile to build from [default: Modelfile; without one, the current folder is
    /// imported as a Hugging Face model, as `FROM .`].
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Quantize the model's F16 or F32 weights to this type (q4_K_M, q8_0, ...).
    #[arg(short = 'q', long)]
    pub quantize: Option<String>,
}

/// Why a path a Modelfile names is neither a file nor a folder to upload.
fn not_usable(path: &Path) -> &'static str {
    match (path.symlink_metadata(), path.metadata()) {
        (Err(_), _) => "no such file",
        (Ok(_), Err(_)) => "a symbolic link to nothing",
        // A device, a FIFO or a socket: reading one could block or never end.
        (Ok(_), Ok(_)) => "not a regular file or a folder",
    }
}

/// `corral create`.
pub async fn create(client: &Client, args: CreateArgs) -> anyhow::Result<()> {
    let (file, text) = modelfile(args.file.as_deref())?;
    let mf = Modelfile::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let parameters = mf.parameters().map_err(|e| anyhow::anyhow!(e))?;
    for name in mf.deprecated_parameters() {
        eprintln!("warning: parameter '{name}' is no longer supported and was ignored");
    }
    let mut req = CreateRequest {
        model: args.model.clone(),
        quantize: args.quantize.clone(),
        ..Default::default()
    };
    if !parameters.is_empty() {
        req.parameters = Some(parameters);
    }
    let mut messages = Vec::new();
    let mut licenses = Vec::new();
    for c in &mf.commands {
        match c {
            Command::From(from) => {
                let path = resolve_path(&dir, from);
                if path.is_file() {
                    req.files = Some(upload_named(client, &path).await?);
                    req.from = None;
                } else if path.is_dir() {
                    req.files = Some(upload_folder(client, &path).await?);
                    req.from = None;
                } else if looks_like_path(from) {
                    anyhow::bail!("{}: FROM {from}: {}", file.display(), not_usable(&path));
                } else {
                    req.from = Some(from.clone());
                    req.files = None;
                }
            }
            Command::Template(t) => req.template = Some(t.clone()),
            Command::System(s) => req.system = Some(s.clone()),
            Command::License(l) => licenses.push(serde_json::Value::String(l.clone())),
            Command::Message { role, content } => {
                messages.push(Message::new(role.clone(), content.clone()))
            }
            Command::Adapter(a) => {
                if req.adapters.is_some() {
                    anyhow::bail!("{}: only one ADAPTER is supported", file.display());
                }
                let path = resolve_path(&dir, a);
                req.adapters = Some(if path.is_dir() {
                    upload_adapter_folder(client, &path).await?
                } else if path.is_file() {
                    upload_named(client, &path).await?
                } else {
                    anyhow::bail!("{}: ADAPTER {a}: {}", file.display(), not_usable(&path));
                });
            }
            Command::Draft(d) => {
                let path = resolve_path(&dir, d);
                if path.is_file() {
                    let from = mf.commands.iter().find_map(|c| match c {
                        Command::From(f) => Some(resolve_path(&dir, f)),
                        _ => None,
                    });
                    let same = |a: &std::path::Path, b: &std::path::Path| {
                        a.canonicalize()
                            .ok()
                            .zip(b.canonicalize().ok())
                            .is_some_and(|(a, b)| a == b)
                    };
                    if from.is_some_and(|f| same(&f, &path)) {
                        anyhow::bail!(
                            "{}: DRAFT {d}: the draft is the FROM model itself",
                            file.display()
                        );
                    }
                    req.draft_files = Some(upload_named(client, &path).await?);
                    req.draft = None;
                } else if looks_like_path(d) {
                    anyhow::bail!("{}: DRAFT {d}: {}", file.display(), not_usable(&path));
                } else {
                    req.draft = Some(d.clone());
                    req.draft_files = None;
                }
            }
            Command::Requires(v) => req.requires = Some(v.clone()),
            Command::Parameter { .. } => {}
        }
    }
    if !messages.is_empty() {
        req.messages = Some(messages);
    }
    if !licenses.is_empty() {
        req.license = Some(serde_json::Value::Array(licenses));
    }
    let mut view = transfer::View::new();
    let result = client
        .stream("/api/create", &req, |p: ProgressResponse| {
            view.show(&p);
            Ok(())
        })
        .await;
    view.finish();
    result
}

/// The Modelfile `create` builds from, and its text: the file `-f` names, else `Modelfile`
/// here, else (as Ollama does) this folder: `FROM .` when it holds a Hugging Face model's
/// safetensors weights, else `FROM` its one GGUF file.
fn modelfile(named: Option<&Path>) -> anyhow::Result<(PathBuf, String)> {
    let default = PathBuf::from("Modelfile");
    if let Some(path) = named {
        return Ok((path.to_path_buf(), read_modelfile(path)?));
    }
    if default.exists() {
        let text = read_modelfile(&default)?;
        return Ok((default, text));
    }
    let here = Path::new(".");
    let folder = corral_convert::Files::open(here).context("read this folder")?;
    // A folder whose index names a missing shard says so here, rather than "no weights".
    if !folder.safetensors()?.is_empty() {
        return Ok((default, "FROM .\n".to_string()));
    }
    let ggufs: Vec<&str> = folder
        .iter()
        .map(|(name, _)| name)
        .filter(|n| n.ends_with(".gguf"))
        .collect();
    match ggufs.as_slice() {
        [one] => Ok((default, format!("FROM ./{one}\n"))),
        [] => anyhow::bail!(
            "no Modelfile or safetensors files found: there is no Modelfile here (name one \
             with -f), and this folder holds no *.safetensors weights or GGUF file to import"
        ),
        many => anyhow::bail!(
            "no Modelfile here, and this folder holds {} GGUF files ({}): name the model's in \
             a Modelfile (FROM ./file.gguf)",
            many.len(),
            many.join(", ")
        ),
    }
}

fn read_modelfile(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    // UTF-16 files (with a byte-order mark) come from Windows editors.
    let utf16 = |bytes: &[u8], le: bool| -> anyhow::Result<String> {
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| {
                if le {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16(&units)
            .map_err(|_| anyhow::anyhow!("{}: invalid UTF-16", path.display()))
    };
    match bytes.as_slice() {
        [0xff, 0xfe, rest @ ..] => utf16(rest, true),
        [0xfe, 0xff, rest @ ..] => utf16(rest, false),
        _ => String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{}: not valid UTF-8", path.display())),
    }
}

fn looks_like_path(s: &str) -> bool {
    s.starts_with('.')
        || s.starts_with('/')
        || s.starts_with('~')
        || s.ends_with(".gguf")
        || s.contains('\\')
}

fn resolve_path(dir: &Path, p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    let path = PathBuf::from(p);
    if path.is_absolute() {
        path
    } else {
        dir.join(path)
    }
}

/// Check a GGUF locally, then upload it unless the server has it. Returns its digest.
/// Upload a GGUF; the map from its file name to its digest that create requests carry.
async fn upload_named(
    client: &Client,
    path: &Path,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let digest = upload_gguf(client, path).await?;
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok([(file, digest)].into_iter().collect())
}

/// A Hugging Face model folder, uploaded as the files a create from it needs, named as in
/// the folder: the weights the converter reads (`model*.safetensors`, or those the index
/// names), every JSON file (config, tokenizer, generation settings), `chat_template.jinja` and
/// `tokenizer.model`, as Ollama's client picks them. What the server would refuse at once (no
/// weights, no config.json or tokenizer, an architecture it cannot convert) is refused
/// here, before gigabytes are uploaded.
async fn upload_folder(
    client: &Client,
    dir: &Path,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let here = |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: {e}", dir.display());
    let folder = corral_convert::Files::open(dir).map_err(|e| here(&e))?;
    let weights = folder.safetensors().map_err(|e| here(&e))?;
    if weights.is_empty() {
        anyhow::bail!(
            "{}: no *.safetensors weights in this folder (FROM a folder imports a Hugging Face \
             model: {})",
            dir.display(),
            corral_convert::NEEDS
        );
    }
    let needs = corral_convert::NEEDS;
    if !folder.has("config.json") {
        anyhow::bail!("{}: config.json is missing ({needs})", dir.display());
    }
    if !corral_convert::TOKENIZERS.iter().any(|t| folder.has(t)) {
        let dir = dir.display();
        anyhow::bail!("{dir}: tokenizer.json or tokenizer.model is missing ({needs})");
    }
    let config = std::fs::read(dir.join("config.json"))?;
    corral_convert::check_config(&config).map_err(|e| here(&e))?;
    let mut files: Vec<(&str, &Path)> = folder
        .iter()
        .filter(|(n, _)| {
            n.ends_with(".json") || *n == "chat_template.jinja" || *n == "tokenizer.model"
        })
        .chain(weights)
        .collect();
    files.sort();
    eprintln!("gathering model components");
    let mut named = std::collections::BTreeMap::new();
    for (name, path) in files {
        named.insert(name.to_string(), upload_file(client, path).await?);
    }
    Ok(named)
}

/// A PEFT LoRA adapter's folder: `adapter_config.json` (checked here first) and
/// `adapter_model.safetensors`.
async fn upload_adapter_folder(
    client: &Client,
    dir: &Path,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    use corral_convert::{ADAPTER_FILES, ADAPTER_NEEDS};
    for name in ADAPTER_FILES {
        if !dir.join(name).is_file() {
            anyhow::bail!("{}: {name} is missing ({ADAPTER_NEEDS})", dir.display());
        }
    }
    let config = std::fs::read(dir.join(ADAPTER_FILES[0]))?;
    corral_convert::check_adapter_config(&config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    eprintln!("gathering model components");
    let mut named = std::collections::BTreeMap::new();
    for name in ADAPTER_FILES {
        named.insert(
            name.to_string(),
            upload_file(client, &dir.join(name)).await?,
        );
    }
    Ok(named)
}

async fn upload_gguf(client: &Client, path: &Path) -> anyhow::Result<String> {
    corral_gguf::read(path)
        .map_err(|e| anyhow::anyhow!("invalid model file {}: {e}", path.display()))?;
    eprintln!("gathering model components");
    upload_file(client, path).await
}

/// Upload a file as a blob unless the server has it; returns its digest.
async fn upload_file(client: &Client, path: &Path) -> anyhow::Result<String> {
    let p = path.to_path_buf();
    let digest = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut f = std::fs::File::open(&p)?;
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        Ok(format!("sha256:{}", hex::encode(h.finalize())))
    })
    .await??;
    let blob = format!("/api/blobs/{digest}");
    if !client.head_ok(&blob).await? {
        eprintln!("copying file {digest}");
        let file = tokio::fs::File::open(path).await?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        client.post_body(&blob, body).await?;
    }
    Ok(digest)
}
