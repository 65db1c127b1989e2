//! The weights: every `*.safetensors` file of the folder, mapped, with an index of their
//! tensors. The `safetensors` crate checks each file's header (offsets inside the file, no
//! overlaps) before any tensor is read.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::SafeTensors;

use crate::gguf::TensorType;
use crate::ConvertError;

/// The element types the converter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }
}

/// A tensor of a source file.
#[derive(Debug, Clone)]
pub struct Tensor {
    file: usize,
    pub dtype: Dtype,
    /// Outermost first, as safetensors and PyTorch give it.
    pub shape: Vec<u64>,
    start: usize,
    end: usize,
}

pub struct Safetensors {
    maps: Vec<Mmap>,
    tensors: HashMap<String, Tensor>,
}

impl Safetensors {
    /// Map and index `files` (name, path). A tensor named in two files is an error.
    pub fn open(files: &[(&str, &Path)]) -> Result<Safetensors, ConvertError> {
        if files.is_empty() {
            return Err(ConvertError::Missing("*.safetensors".into()));
        }
        let mut maps = Vec::new();
        let mut tensors = HashMap::new();
        for (i, (name, path)) in files.iter().enumerate() {
            let invalid = |why: String| ConvertError::Invalid {
                file: name.to_string(),
                why,
            };
            // SAFETY: the file is a blob of the store or a file the user named; nothing in
            // Corral writes it while it is mapped.
            let map = unsafe { Mmap::map(&File::open(path)?)? };
            let st = SafeTensors::deserialize(&map).map_err(|e| invalid(e.to_string()))?;
            for (tname, view) in st.tensors() {
                let dtype = match view.dtype() {
                    safetensors::Dtype::F32 => Dtype::F32,
                    safetensors::Dtype::F16 => Dtype::F16,
                    safetensors::Dtype::BF16 => Dtype::Bf16,
                    // A buffer older Transformers saved with BERT's weights (0, 1, 2 ...), not
                    // a weight: llama.cpp numbers positions itself.
                    safetensors::Dtype::I64 if tname.ends_with("position_ids") => continue,
                    other => {
                        return Err(ConvertError::Unsupported(format!(
                            "{name}: tensor {tname} is {other:?}; only F32, F16 and BF16 \
                             weights can be imported (quantized checkpoints cannot)"
                        )))
                    }
                };
                let start = view.data().as_ptr() as usize - map.as_ptr() as usize;
                let t = Tensor {
                    file: i,
                    dtype,
                    shape: view.shape().iter().map(|&d| d as u64).collect(),
                    start,
                    end: start + view.data().len(),
                };
                if tensors.insert(tname.clone(), t).is_some() {
                    return Err(invalid(format!("tensor {tname} is in more than one file")));
                }
            }
            maps.push(map);
        }
        Ok(Safetensors { maps, tensors })
    }

    /// Rename every tensor by `rename`, leaving out those it maps to `None`.
    pub fn rename(&mut self, rename: impl Fn(&str) -> Option<String>) {
        self.tensors = std::mem::take(&mut self.tensors)
            .into_iter()
            .filter_map(|(name, t)| rename(&name).map(|n| (n, t)))
            .collect();
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Write tensor `name` as `to`, its rows (the outermost dimension) reordered by
    /// llama.cpp's rotary permutation for `permute` heads when set, 1 added to each value
    /// for `plus_one`. Returns the bytes written.
    pub fn write_as(
        &self,
        name: &str,
        to: TensorType,
        permute: Option<u64>,
        plus_one: bool,
        w: &mut dyn Write,
    ) -> io::Result<u64> {
        let t = &self.tensors[name];
        let data = &self.maps[t.file][t.start..t.end];
        let rows = t.shape.first().copied().unwrap_or(1) as usize;
        let row_bytes = data.len() / rows.max(1);
        let mut out = Vec::with_capacity(row_bytes / t.dtype.size() * to.size() as usize);
        let mut written = 0;
        for r in 0..rows {
            let src = match permute {
                Some(heads) => permuted_row(r, rows, heads as usize),
                None => r,
            };
            out.clear();
            convert_row(
                &data[src * row_bytes..(src + 1) * row_bytes],
                t.dtype,
                to,
                plus_one,
                &mut out,
            );
            w.write_all(&out)?;
            written += out.len() as u64;
        }
        Ok(written)
    }
}

/// The source row of output row `r` under llama.cpp's `permute` for Q and K: each head's
/// rows, seen as two halves, are interleaved (`reshape(heads, 2, half, ...).swapaxes(1, 2)`),
/// turning Hugging Face's rotate-half layout into the pairs llama.cpp's rope rotates.
pub fn permuted_row(r: usize, rows: usize, heads: usize) -> usize {
    let per_head = rows / heads;
    let half = per_head / 2;
    let (h, within) = (r / per_head, r % per_head);
    let (i, j) = (within / 2, within % 2);
    h * per_head + j * half + i
}

/// One row as `to`, with 1 added to each value for `plus_one` (in F32, as Gemma's own norm
/// computes `1 + w` from its BF16 weights, so no precision is lost to the addition).
fn convert_row(src: &[u8], from: Dtype, to: TensorType, plus_one: bool, out: &mut Vec<u8>) {
    match (from, to) {
        (Dtype::F32, TensorType::F32)
        | (Dtype::F16, TensorType::F16)
        | (Dtype::Bf16, TensorType::Bf16)
            if !plus_one =>
        {
            out.extend_from_slice(src)
        }
        _ => {
            for chunk in src.chunks_exact(from.size()) {
                let x = match from {
                    Dtype::F32 => f32::from_le_bytes(chunk.try_into().expect("4 bytes")),
                    Dtype::F16 => f16::from_le_bytes([chunk[0], chunk[1]]).to_f32(),
                    Dtype::Bf16 => bf16::from_le_bytes([chunk[0], chunk[1]]).to_f32(),
                };
                let x = if plus_one { x + 1.0 } else { x };
                match to {
                    TensorType::F32 => out.extend_from_slice(&x.to_le_bytes()),
                    TensorType::F16 => out.extend_from_slice(&f16::from_f32(x).to_le_bytes()),
                    TensorType::Bf16 => out.extend_from_slice(&bf16::from_f32(x).to_le_bytes()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permutation_interleaves_each_heads_halves() {
        // Two heads of 4 rows: [a0 a1 b0 b1] becomes [a0 b0 a1 b1] in each.
        let order: Vec<usize> = (0..8).map(|r| permuted_row(r, 8, 2)).collect();
        assert_eq!(order, [0, 2, 1, 3, 4, 6, 5, 7]);
        // A bijection for a real shape (SmolLM2's K: 3 heads of 64).
        let mut seen: Vec<usize> = (0..192).map(|r| permuted_row(r, 192, 3)).collect();
        seen.sort();
        assert_eq!(seen, (0..192).collect::<Vec<_>>());
    }

    #[test]
    fn rows_convert_between_types() {
        let src: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let mut out = Vec::new();
        convert_row(&src, Dtype::F32, TensorType::F16, false, &mut out);
        assert_eq!(
            out,
            [
                f16::from_f32(1.5).to_le_bytes(),
                f16::from_f32(-2.0).to_le_bytes()
            ]
            .concat()
        );
        let mut back = Vec::new();
        convert_row(&out, Dtype::F16, TensorType::F32, false, &mut back);
        assert_eq!(back, src);
    }
}
