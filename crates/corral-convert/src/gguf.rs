//! A GGUF writer: the header, the metadata, the tensor table, then each tensor's data at its
//! aligned offset. Written by hand, as the reader in `corral-gguf` is: the format is small and
//! fixed, and the Rust crates that write it come with a whole inference framework.

use std::io::{self, Write};

/// The tensors' data starts at, and each tensor's data is padded to, this many bytes.
pub const ALIGNMENT: u64 = 32;

/// A metadata value, of the types the converter writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
    F32s(Vec<f32>),
}

/// A file's metadata, in the order it is written.
pub type Metadata = Vec<(String, Value)>;

/// ggml's tensor types the converter writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    Bf16,
}

impl TensorType {
    fn code(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Bf16 => 30,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            TensorType::F32 => 4,
            TensorType::F16 | TensorType::Bf16 => 2,
        }
    }
}

/// A tensor's entry in the table: `dims` innermost first, as ggml counts them.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: TensorType,
}

impl TensorInfo {
    /// Bytes of data.
    pub fn bytes(&self) -> u64 {
        self.dims.iter().product::<u64>() * self.ty.size()
    }
}

fn pad(n: u64) -> u64 {
    n.div_ceil(ALIGNMENT) * ALIGNMENT - n
}

fn string(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn value(w: &mut impl Write, v: &Value) -> io::Result<()> {
    // GGUF's value type codes: u32 4, i32 5 (in arrays), f32 6, bool 7, string 8, array 9.
    let array = |w: &mut dyn Write, ty: u32, n: usize| -> io::Result<()> {
        w.write_all(&9u32.to_le_bytes())?;
        w.write_all(&ty.to_le_bytes())?;
        w.write_all(&(n as u64).to_le_bytes())
    };
    match v {
        Value::U32(x) => {
            w.write_all(&4u32.to_le_bytes())?;
            w.write_all(&x.to_le_bytes())
        }
        Value::F32(x) => {
            w.write_all(&6u32.to_le_bytes())?;
            w.write_all(&x.to_le_bytes())
        }
        Value::Bool(x) => {
            w.write_all(&7u32.to_le_bytes())?;
            w.write_all(&[u8::from(*x)])
        }
        Value::Str(s) => {
            w.write_all(&8u32.to_le_bytes())?;
            string(w, s)
        }
        Value::Strs(items) => {
            array(w, 8, items.len())?;
            items.iter().try_for_each(|s| string(w, s))
        }
        Value::I32s(items) => {
            array(w, 5, items.len())?;
            items.iter().try_for_each(|x| w.write_all(&x.to_le_bytes()))
        }
        Value::F32s(items) => {
            array(w, 6, items.len())?;
            items.iter().try_for_each(|x| w.write_all(&x.to_le_bytes()))
        }
    }
}

/// Write the header, metadata and tensor table, and the padding up to the data; the caller
/// then writes each tensor's data in table order through [`write_data`].
pub fn write_header(
    w: &mut impl Write,
    metadata: &[(String, Value)],
    tensors: &[TensorInfo],
) -> io::Result<()> {
    let mut counted = CountingWriter { inner: w, n: 0 };
    let w = &mut counted;
    w.write_all(b"GGUF")?;
    w.write_all(&3u32.to_le_bytes())?;
    w.write_all(&(tensors.len() as u64).to_le_bytes())?;
    w.write_all(&(metadata.len() as u64).to_le_bytes())?;
    for (k, v) in metadata {
        string(w, k)?;
        value(w, v)?;
    }
    let mut offset = 0u64;
    for t in tensors {
        string(w, &t.name)?;
        w.write_all(&(t.dims.len() as u32).to_le_bytes())?;
        for d in &t.dims {
            w.write_all(&d.to_le_bytes())?;
        }
        w.write_all(&t.ty.code().to_le_bytes())?;
        w.write_all(&offset.to_le_bytes())?;
        offset += t.bytes() + pad(t.bytes());
    }
    let n = w.n;
    w.write_all(&vec![0u8; pad(n) as usize])
}

/// Write one tensor's data (`info.bytes()` of it, in pieces through `fill`) and its padding.
pub fn write_data(
    w: &mut impl Write,
    info: &TensorInfo,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<u64>,
) -> io::Result<()> {
    let written = fill(w)?;
    if written != info.bytes() {
        return Err(io::Error::other(format!(
            "tensor {}: wrote {written} bytes, expected {}",
            info.name,
            info.bytes()
        )));
    }
    w.write_all(&vec![0u8; pad(written) as usize])
}

struct CountingWriter<'a, W> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_reads_back_whole() {
        let tensors = [
            TensorInfo {
                name: "a".into(),
                dims: vec![3],
                ty: TensorType::F32,
            },
            TensorInfo {
                name: "b".into(),
                dims: vec![5, 2],
                ty: TensorType::F16,
            },
        ];
        let metadata = [
            (
                "general.architecture".to_string(),
                Value::Str("llama".into()),
            ),
            ("llama.block_count".into(), Value::U32(7)),
            ("llama.rope.freq_base".into(), Value::F32(0.5)),
            ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
            (
                "tokenizer.ggml.tokens".into(),
                Value::Strs(vec!["x".into(), "y".into()]),
            ),
            ("tokenizer.ggml.token_type".into(), Value::I32s(vec![1, 3])),
        ];
        let mut file = Vec::new();
        write_header(&mut file, &metadata, &tensors).unwrap();
        assert_eq!(file.len() as u64 % ALIGNMENT, 0, "data starts aligned");
        write_data(&mut file, &tensors[0], |w| {
            w.write_all(&[0; 12]).map(|_| 12)
        })
        .unwrap();
        write_data(&mut file, &tensors[1], |w| {
            w.write_all(&[0; 20]).map(|_| 20)
        })
        .unwrap();
        // A tensor given fewer bytes than its shape needs is an error, not a short file.
        let short = write_data(&mut Vec::new(), &tensors[1], |w| {
            w.write_all(&[0; 2]).map(|_| 2)
        });
        assert!(short.unwrap_err().to_string().contains("expected 20"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, &file).unwrap();
        let info = corral_gguf::read(&path).unwrap();
        assert_eq!((info.tensor_count, info.parameter_count), (2, 13));
        assert_eq!(info.architecture(), "llama");
        assert_eq!(info.metadata["llama.block_count"], 7);
        assert_eq!(info.metadata["llama.rope.freq_base"], 0.5);
        assert_eq!(info.metadata["tokenizer.ggml.add_bos_token"], true);
        assert_eq!(info.metadata["tokenizer.ggml.tokens"]["array_length"], 2);
    }
}
