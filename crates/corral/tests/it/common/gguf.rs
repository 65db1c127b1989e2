//! Real model files changed the way a model author would: metadata keys added, or the last
//! layers dropped (a smaller model of the same vocabulary, to draft for the full one). The
//! tensor data is copied as it is, re-aligned after the new header.

use std::path::Path;

/// What to change.
#[derive(Default)]
pub struct Edit<'a> {
    /// `u32` metadata keys to add.
    pub add_u32: &'a [(&'a str, u32)],
    /// Keep only the first this many layers (`blk.N.*` tensors and `*.block_count`).
    pub keep_layers: Option<u32>,
}

fn u32_at(b: &[u8], pos: &mut usize) -> u32 {
    *pos += 4;
    u32::from_le_bytes(b[*pos - 4..*pos].try_into().unwrap())
}

fn u64_at(b: &[u8], pos: &mut usize) -> u64 {
    *pos += 8;
    u64::from_le_bytes(b[*pos - 8..*pos].try_into().unwrap())
}

fn skip(b: &[u8], pos: &mut usize, t: u32) {
    match t {
        0 | 1 | 7 => *pos += 1,
        2 | 3 => *pos += 2,
        4..=6 => *pos += 4,
        10..=12 => *pos += 8,
        8 => {
            let n = u64_at(b, pos) as usize;
            *pos += n;
        }
        9 => {
            let item = u32_at(b, pos);
            for _ in 0..u64_at(b, pos) {
                skip(b, pos, item);
            }
        }
        other => panic!("GGUF type {other}"),
    }
}

struct Tensor {
    name: String,
    /// The tensor's info record after its name (dimensions, type), without the offset.
    shape: Vec<u8>,
    offset: u64,
}

/// Write `src` changed by `edit` to `dest`.
pub fn rewrite(src: &Path, dest: &Path, edit: &Edit) {
    let b = std::fs::read(src).unwrap();
    let mut pos = 4usize;
    assert_eq!(&b[..4], b"GGUF");
    let version = u32_at(&b, &mut pos);
    let n_tensors = u64_at(&b, &mut pos);
    let n_kv = u64_at(&b, &mut pos);
    let mut kv = Vec::new();
    let mut alignment = 32u64;
    for _ in 0..n_kv {
        let start = pos;
        let len = u64_at(&b, &mut pos) as usize;
        let key = String::from_utf8(b[pos..pos + len].to_vec()).unwrap();
        pos += len;
        let t = u32_at(&b, &mut pos);
        if key == "general.alignment" {
            alignment = u32_at(&b, &mut pos.clone()) as u64;
        }
        match edit.keep_layers {
            Some(n) if key.ends_with(".block_count") && t == 4 => {
                kv.extend_from_slice(&b[start..pos]);
                kv.extend_from_slice(&n.to_le_bytes());
                pos += 4;
            }
            _ => {
                skip(&b, &mut pos, t);
                kv.extend_from_slice(&b[start..pos]);
            }
        }
    }
    for (key, v) in edit.add_u32 {
        kv.extend_from_slice(&(key.len() as u64).to_le_bytes());
        kv.extend_from_slice(key.as_bytes());
        kv.extend_from_slice(&4u32.to_le_bytes());
        kv.extend_from_slice(&v.to_le_bytes());
    }
    let mut tensors = Vec::new();
    for _ in 0..n_tensors {
        let len = u64_at(&b, &mut pos) as usize;
        let name = String::from_utf8(b[pos..pos + len].to_vec()).unwrap();
        pos += len;
        let start = pos;
        let dims = u32_at(&b, &mut pos) as usize;
        pos += 8 * dims + 4;
        let shape = b[start..pos].to_vec();
        let offset = u64_at(&b, &mut pos);
        tensors.push(Tensor {
            name,
            shape,
            offset,
        });
    }
    let data_start = (pos as u64).div_ceil(alignment) as usize * alignment as usize;
    // Each tensor's bytes run to the next tensor's offset (its padding included).
    let mut by_offset: Vec<u64> = tensors.iter().map(|t| t.offset).collect();
    by_offset.sort_unstable();
    let data_len = (b.len() - data_start) as u64;
    let size = |offset: u64| {
        let i = by_offset.partition_point(|&o| o <= offset);
        by_offset.get(i).copied().unwrap_or(data_len) - offset
    };
    let kept: Vec<&Tensor> = tensors
        .iter()
        .filter(|t| match (edit.keep_layers, t.name.strip_prefix("blk.")) {
            (Some(n), Some(rest)) => rest
                .split('.')
                .next()
                .and_then(|i| i.parse::<u32>().ok())
                .is_some_and(|i| i < n),
            _ => true,
        })
        .collect();

    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(kept.len() as u64).to_le_bytes());
    out.extend_from_slice(&(n_kv + edit.add_u32.len() as u64).to_le_bytes());
    out.extend_from_slice(&kv);
    let mut offset = 0u64;
    for t in &kept {
        out.extend_from_slice(&(t.name.len() as u64).to_le_bytes());
        out.extend_from_slice(t.name.as_bytes());
        out.extend_from_slice(&t.shape);
        out.extend_from_slice(&offset.to_le_bytes());
        offset += size(t.offset).div_ceil(alignment) * alignment;
    }
    while !(out.len() as u64).is_multiple_of(alignment) {
        out.push(0);
    }
    for t in &kept {
        let from = data_start + t.offset as usize;
        let len = size(t.offset) as usize;
        out.extend_from_slice(&b[from..from + len]);
        while !(out.len() as u64).is_multiple_of(alignment) {
            out.push(0);
        }
    }
    std::fs::write(dest, out).unwrap();
}
