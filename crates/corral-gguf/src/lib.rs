//! A GGUF metadata reader that needs no C++.
//!
//! The server uses it to check, at `create` time, that a file is a complete GGUF (header,
//! metadata, tensor table, and tensor data that fits inside the file), and to describe a model
//! for `show`, `list` and `ps` without loading it. It is written by hand because the server
//! must not link llama.cpp and only needs the header and metadata, read defensively: every
//! length in the file is checked against the file's size before anything is allocated.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::Value;

const MAGIC: &[u8; 4] = b"GGUF";
/// Longest string or array the reader accepts (the largest vocabularies hold ~260k tokens).
const MAX_ITEMS: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file (bad magic {0:02x?})")]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0}")]
    Version(u32),
    #[error("GGUF file is truncated: {0}")]
    Truncated(String),
    #[error("invalid GGUF: {0}")]
    Invalid(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What Corral needs to know about a GGUF file.
#[derive(Debug, Clone)]
pub struct GgufInfo {
    pub version: u32,
    pub file_size: u64,
    /// Scalar and string metadata; arrays are kept as their length only, except short ones.
    pub metadata: BTreeMap<String, Value>,
    pub tensor_count: u64,
    pub parameter_count: u64,
    /// Ids of the vocabulary's fill-in-the-middle tokens (prefix, suffix, middle) found by
    /// their text, as llama.cpp finds them when the metadata names none.
    pub fim_by_text: [Option<u64>; 3],
    /// A hash of the vocabulary's token texts, in order (`None`: the file has none), so that
    /// two models can be checked to share a vocabulary (a draft model for speculation).
    pub vocab_hash: Option<u64>,
    /// The tensor table, in file order.
    pub tensors: Vec<TensorMeta>,
}

/// A tensor's entry in the file: its name, ggml type and shape (innermost first).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorMeta {
    pub name: String,
    pub ty: u32,
    pub shape: Vec<u64>,
}

impl TensorMeta {
    /// ggml's name of the tensor's type (`F16`, `Q4_K` ...), as `show` lists it.
    pub fn type_name(&self) -> &'static str {
        tensor_type_name(self.ty)
    }
}

/// ggml's names of its tensor types (not `general.file_type`'s numbering).
fn tensor_type_name(t: u32) -> &'static str {
    match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => "unknown",
    }
}

/// Token texts llama.cpp takes as the FIM prefix, suffix and middle tokens (its
/// `llama_vocab::load`), so that the server knows without loading a model what llama.cpp will.
const FIM_TEXTS: [&[&str]; 3] = [
    &[
        "<|fim_prefix|>",
        "<fim-prefix>",
        "<fim_prefix>",
        "<｜fim▁begin｜>",
        "<PRE>",
        "▁<PRE>",
        "<|code_prefix|>",
        "<|prefix|>",
    ],
    &[
        "<|fim_suffix|>",
        "<fim-suffix>",
        "<fim_suffix>",
        "<｜fim▁hole｜>",
        "<SUF>",
        "▁<SUF>",
        "<|code_suffix|>",
        "<|suffix|>",
    ],
    &[
        "<|fim_middle|>",
        "<fim-middle>",
        "<fim_middle>",
        "<｜fim▁end｜>",
        "<MID>",
        "▁<MID>",
        "<|code_middle|>",
        "<|middle|>",
    ],
];

impl GgufInfo {
    /// `general.architecture`, e.g. `llama` or `gemma3`.
    pub fn architecture(&self) -> &str {
        self.metadata
            .get("general.architecture")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// A string metadata value.
    pub fn string(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }

    /// `tokenizer.chat_template`, if the file has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.string("tokenizer.chat_template")
    }

    /// The quantization as Ollama names it, from `general.file_type`.
    pub fn file_type(&self) -> String {
        let ft = self
            .metadata
            .get("general.file_type")
            .and_then(Value::as_u64);
        ft.map(file_type_name).unwrap_or("unknown").to_string()
    }

    /// Parameter count in Ollama's style: `134.52M`, `1.2B`.
    pub fn parameter_size(&self) -> String {
        human_count(self.parameter_count)
    }

    /// The training context length, `<arch>.context_length`.
    pub fn context_length(&self) -> Option<u64> {
        self.metadata
            .get(&format!("{}.context_length", self.architecture()))
            .and_then(Value::as_u64)
    }

    /// An embedding model: the file says how to pool its outputs (`<arch>.pooling_type`), as
    /// BERT's and other encoders' do. Such a model embeds and writes no text (Ollama's test
    /// for its `embedding` capability).
    pub fn embeds_only(&self) -> bool {
        self.metadata
            .contains_key(&format!("{}.pooling_type", self.architecture()))
    }
}

/// Format a count as Ollama's `parameter_size`.
pub fn human_count(n: u64) -> String {
    let n = n as f64;
    let (v, unit) = if n >= 1e12 {
        (n / 1e12, "T")
    } else if n >= 1e9 {
        (n / 1e9, "B")
    } else if n >= 1e6 {
        (n / 1e6, "M")
    } else if n >= 1e3 {
        (n / 1e3, "K")
    } else {
        (n, "")
    };
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{unit}")
}

/// llama.cpp's `llama_ftype` names.
pub fn file_type_name(ft: u64) -> &'static str {
    match ft {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4",
        _ => "unknown",
    }
}

/// (elements per block, bytes per block) of a ggml tensor type, where known.
fn type_block(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (1, 4),
        1 => (1, 2),
        2 => (32, 18),
        3 => (32, 20),
        6 => (32, 22),
        7 => (32, 24),
        8 => (32, 34),
        9 => (32, 36),
        10 => (256, 84),
        11 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210),
        15 => (256, 292),
        16 => (256, 66),
        17 => (256, 74),
        18 => (256, 98),
        19 => (256, 50),
        20 => (32, 18),
        21 => (256, 110),
        22 => (256, 82),
        23 => (256, 136),
        24 => (1, 1),
        25 => (1, 2),
        26 => (1, 4),
        27 => (1, 8),
        28 => (1, 8),
        29 => (256, 56),
        30 => (1, 2),
        34 => (256, 54),
        35 => (256, 66),
        39 => (32, 17),
        _ => return None,
    })
}

struct Reader<R> {
    r: R,
    pos: u64,
    len: u64,
    /// Keep arrays past 64 items (the vocabulary, merges) rather than only their length.
    long_arrays: bool,
}

impl<R: Read> Reader<R> {
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, GgufError> {
        if n > self.len.saturating_sub(self.pos) {
            return Err(GgufError::Truncated(format!(
                "{what} needs {n} bytes at offset {}",
                self.pos
            )));
        }
        let mut buf = vec![0; n as usize];
        self.r.read_exact(&mut buf)?;
        self.pos += n;
        Ok(buf)
    }
    fn u8(&mut self) -> Result<u8, GgufError> {
        Ok(self.bytes(1, "u8")?[0])
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(
            self.bytes(4, "u32")?.try_into().unwrap(),
        ))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(
            self.bytes(8, "u64")?.try_into().unwrap(),
        ))
    }
    fn string(&mut self) -> Result<String, GgufError> {
        let n = self.u64()?;
        if n > MAX_ITEMS {
            return Err(GgufError::Invalid(format!("string of {n} bytes")));
        }
        let b = self.bytes(n, "string")?;
        String::from_utf8(b).map_err(|_| GgufError::Invalid("string is not UTF-8".into()))
    }
    fn value(&mut self, t: u32, depth: u32) -> Result<Value, GgufError> {
        Ok(match t {
            0 => Value::from(self.u8()?),
            1 => Value::from(self.u8()? as i8),
            2 => Value::from(u16::from_le_bytes(
                self.bytes(2, "u16")?.try_into().unwrap(),
            )),
            3 => Value::from(i16::from_le_bytes(
                self.bytes(2, "i16")?.try_into().unwrap(),
            )),
            4 => Value::from(self.u32()?),
            5 => Value::from(self.u32()? as i32),
            6 => float(f32::from_bits(self.u32()?) as f64),
            7 => Value::from(self.u8()? != 0),
            8 => Value::from(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(GgufError::Invalid("arrays nested too deeply".into()));
                }
                let item_type = self.u32()?;
                let n = self.u64()?;
                if n > MAX_ITEMS {
                    return Err(GgufError::Invalid(format!("array of {n} items")));
                }
                // Long arrays (vocabularies, merges) are skipped over: only their length is kept.
                let keep = n <= 64 || self.long_arrays;
                let mut items = Vec::new();
                for _ in 0..n {
                    let v = self.value(item_type, depth + 1)?;
                    if keep {
                        items.push(v);
                    }
                }
                if keep {
                    Value::Array(items)
                } else {
                    serde_json::json!({ "array_length": n })
                }
            }
            10 => Value::from(self.u64()?),
            11 => Value::from(self.u64()? as i64),
            12 => float(f64::from_bits(self.u64()?)),
            other => return Err(GgufError::Invalid(format!("unknown metadata type {other}"))),
        })
    }
}

impl<R: Read> Reader<R> {
    /// The token list (an array of strings): kept as its length, with the ids of the FIM
    /// tokens among it noted.
    fn vocabulary(
        &mut self,
        fim: &mut [Option<u64>; 3],
        hash: &mut Option<u64>,
    ) -> Result<Value, GgufError> {
        use std::hash::{Hash, Hasher};
        let item_type = self.u32()?;
        let n = self.u64()?;
        if n > MAX_ITEMS {
            return Err(GgufError::Invalid(format!("array of {n} items")));
        }
        let mut h = std::hash::DefaultHasher::new();
        n.hash(&mut h);
        let mut items = Vec::new();
        for id in 0..n {
            let v = self.value(item_type, 1)?;
            v.as_str().unwrap_or_default().hash(&mut h);
            if let Some(text) = v.as_str() {
                for (slot, texts) in fim.iter_mut().zip(FIM_TEXTS) {
                    if slot.is_none() && texts.contains(&text) {
                        *slot = Some(id);
                    }
                }
            }
            if self.long_arrays {
                items.push(v);
            }
        }
        *hash = Some(h.finish());
        if self.long_arrays {
            return Ok(Value::Array(items));
        }
        Ok(serde_json::json!({ "array_length": n }))
    }
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// Read and check a GGUF file.
pub fn read(path: &Path) -> Result<GgufInfo, GgufError> {
    read_keeping(path, false)
}

/// [`read`], keeping every array whole in `metadata` (the vocabulary and merges too: what
/// `/api/show` with `verbose` returns).
pub fn read_with_arrays(path: &Path) -> Result<GgufInfo, GgufError> {
    read_keeping(path, true)
}

fn read_keeping(path: &Path, long_arrays: bool) -> Result<GgufInfo, GgufError> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut r = Reader {
        r: BufReader::with_capacity(1 << 16, file),
        pos: 0,
        len,
        long_arrays,
    };
    let magic: [u8; 4] = match r.bytes(4, "magic") {
        Ok(b) => b.try_into().unwrap(),
        Err(GgufError::Truncated(_)) => {
            return Err(GgufError::Invalid(format!("file is only {len} bytes long")))
        }
        Err(e) => return Err(e),
    };
    if &magic != MAGIC {
        return Err(GgufError::BadMagic(magic));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version(version));
    }
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    if tensor_count > MAX_ITEMS || kv_count > MAX_ITEMS {
        return Err(GgufError::Invalid(format!(
            "{tensor_count} tensors, {kv_count} metadata keys"
        )));
    }
    let mut metadata = BTreeMap::new();
    let mut fim_by_text = [None; 3];
    let mut vocab_hash = None;
    for _ in 0..kv_count {
        let key = r.string()?;
        let t = r.u32()?;
        let v = if key == "tokenizer.ggml.tokens" && t == 9 {
            r.vocabulary(&mut fim_by_text, &mut vocab_hash)?
        } else {
            r.value(t, 0)?
        };
        metadata.insert(key, v);
    }
    let alignment = metadata
        .get("general.alignment")
        .and_then(Value::as_u64)
        .unwrap_or(32)
        .max(1);
    let mut parameter_count = 0u64;
    let mut data_end = 0u64;
    let mut tensors = Vec::new();
    for _ in 0..tensor_count {
        let name = r.string()?;
        let n_dims = r.u32()?;
        if n_dims > 8 {
            return Err(GgufError::Invalid(format!(
                "tensor {name} has {n_dims} dimensions"
            )));
        }
        let mut elements = 1u64;
        let mut shape = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = r.u64()?;
            shape.push(d);
            elements = elements.saturating_mul(d);
        }
        let t = r.u32()?;
        let offset = r.u64()?;
        parameter_count = parameter_count.saturating_add(elements);
        let size = type_block(t).map_or(0, |(block, bytes)| {
            elements.div_ceil(block).saturating_mul(bytes)
        });
        data_end = data_end.max(offset.saturating_add(size));
        tensors.push(TensorMeta { name, ty: t, shape });
    }
    let data_start = r.pos.div_ceil(alignment) * alignment;
    if data_start.saturating_add(data_end) > len {
        return Err(GgufError::Truncated(format!(
            "tensor data needs {} bytes, the file has {len}",
            data_start.saturating_add(data_end)
        )));
    }
    // Seek to the end to be sure the file can really be read that far.
    let mut f = r.r.into_inner();
    f.seek(SeekFrom::End(0))?;
    Ok(GgufInfo {
        version,
        file_size: len,
        metadata,
        tensor_count,
        parameter_count,
        fim_by_text,
        vocab_hash,
        tensors,
    })
}

impl GgufInfo {
    fn arch_u64(&self, key: &str) -> Option<u64> {
        self.metadata
            .get(&format!("{}.{key}", self.architecture()))
            .and_then(Value::as_u64)
    }

    /// The fill-in-the-middle tokens (prefix, suffix, middle) llama.cpp will use: named in
    /// the metadata, else found by their text. `None` unless all three are there.
    pub fn fim_tokens(&self) -> Option<[u64; 3]> {
        let key = |k: &str| {
            self.metadata
                .get(&format!("tokenizer.ggml.{k}_token_id"))
                .and_then(Value::as_u64)
        };
        // The older names (`prefix`, `suffix`, `middle`) are still read by llama.cpp.
        let ids = [
            key("fim_pre").or(key("prefix")).or(self.fim_by_text[0])?,
            key("fim_suf").or(key("suffix")).or(self.fim_by_text[1])?,
            key("fim_mid").or(key("middle")).or(self.fim_by_text[2])?,
        ];
        Some(ids)
    }

    /// `<arch>.block_count`: the number of repeating layers.
    pub fn block_count(&self) -> u64 {
        self.arch_u64("block_count").unwrap_or(0)
    }

    /// Bytes of an f16 KV cache holding `n_tokens` tokens (0 when the metadata lacks the sizes).
    pub fn kv_cache_bytes(&self, n_tokens: u64) -> u64 {
        let (Some(layers), Some(embd)) = (
            self.arch_u64("block_count"),
            self.arch_u64("embedding_length"),
        ) else {
            return 0;
        };
        let heads = self.arch_u64("attention.head_count").unwrap_or(1).max(1);
        let heads_kv = self.arch_u64("attention.head_count_kv").unwrap_or(heads);
        let k = self
            .arch_u64("attention.key_length")
            .unwrap_or(embd / heads);
        let v = self
            .arch_u64("attention.value_length")
            .unwrap_or(embd / heads);
        n_tokens * layers * heads_kv * (k + v) * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn tiny_gguf() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes()); // tensors
        b.extend_from_slice(&1u64.to_le_bytes()); // kv
        let key = b"general.architecture";
        b.extend_from_slice(&(key.len() as u64).to_le_bytes());
        b.extend_from_slice(key);
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&5u64.to_le_bytes());
        b.extend_from_slice(b"llama");
        let name = b"w";
        b.extend_from_slice(&(name.len() as u64).to_le_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&4u64.to_le_bytes()); // 4 elements
        b.extend_from_slice(&0u32.to_le_bytes()); // f32
        b.extend_from_slice(&0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b.extend_from_slice(&[0u8; 16]);
        b
    }

    /// A file with a vocabulary of `tokens` and no tensors, for the FIM lookups.
    fn gguf_with_tokens(tokens: &[&str]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes()); // tensors
        b.extend_from_slice(&1u64.to_le_bytes()); // kv
        let key = b"tokenizer.ggml.tokens";
        b.extend_from_slice(&(key.len() as u64).to_le_bytes());
        b.extend_from_slice(key);
        b.extend_from_slice(&9u32.to_le_bytes()); // array
        b.extend_from_slice(&8u32.to_le_bytes()); // of strings
        b.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
        for t in tokens {
            b.extend_from_slice(&(t.len() as u64).to_le_bytes());
            b.extend_from_slice(t.as_bytes());
        }
        while b.len() % 32 != 0 {
            b.push(0);
        }
        b
    }

    #[test]
    fn fim_tokens_are_found_by_their_text_as_llama_cpp_finds_them() {
        let f = write(&gguf_with_tokens(&[
            "a",
            "<|fim_prefix|>",
            "b",
            "<|fim_middle|>",
            "<|fim_suffix|>",
        ]));
        let info = read(f.path()).unwrap();
        assert_eq!(info.fim_tokens(), Some([1, 4, 3]));
        assert_eq!(
            info.metadata["tokenizer.ggml.tokens"],
            serde_json::json!({"array_length": 5})
        );
        let f = write(&gguf_with_tokens(&["<PRE>", "<SUF>"]));
        assert_eq!(
            read(f.path()).unwrap().fim_tokens(),
            None,
            "no middle token"
        );
        let mut info = read(f.path()).unwrap();
        info.metadata
            .insert("tokenizer.ggml.middle_token_id".into(), 7.into());
        assert_eq!(
            info.fim_tokens(),
            Some([0, 1, 7]),
            "the older key name counts"
        );
    }

    #[test]
    fn reads_a_complete_file() {
        let f = write(&tiny_gguf());
        let info = read(f.path()).unwrap();
        assert_eq!(info.architecture(), "llama");
        assert_eq!(info.parameter_count, 4);
    }

    #[test]
    fn refuses_bad_files() {
        let full = tiny_gguf();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"hello world, not a model".to_vec(), "not a GGUF file"),
            (b"GG".to_vec(), "only 2 bytes"),
            (full[..full.len() - 1].to_vec(), "truncated"),
            (full[..30].to_vec(), "truncated"),
            (
                [&full[..4], &9u32.to_le_bytes()[..], &full[8..]].concat(),
                "unsupported GGUF version 9",
            ),
        ];
        for (bytes, want) in cases {
            let err = read(write(&bytes).path()).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }

    #[test]
    fn human_counts() {
        assert_eq!(human_count(134_515_008), "134.52M");
        assert_eq!(human_count(268_098_176), "268.1M");
        assert_eq!(human_count(7_000_000_000), "7B");
    }
}
