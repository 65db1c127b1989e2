//! How many layers of a model fit on the visible GPUs.

/// A GPU's free memory, as the probe reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuFree {
    pub free: u64,
}

/// What offloading costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelCost {
    pub n_layers: u32,
    /// Weights of one repeating layer.
    pub layer_bytes: u64,
    /// KV cache of one layer at the requested context.
    pub kv_bytes_per_layer: u64,
    /// The output layer (counted as one more layer when everything fits).
    pub output_bytes: u64,
}

/// Memory kept free on each GPU: 512 MiB plus 10% of its free memory, for compute buffers
/// and other programs.
pub fn margin(free: u64) -> u64 {
    (512 << 20) + free / 10
}

/// Layers that fit, filling GPUs in order. At most `n_layers + 1` (the output layer too).
pub fn fit_layers(gpus: &[GpuFree], m: &ModelCost) -> u32 {
    let per_layer = m.layer_bytes + m.kv_bytes_per_layer;
    let mut placed = 0u32;
    for g in gpus {
        let mut room = g.free.saturating_sub(margin(g.free));
        while placed < m.n_layers && room >= per_layer && per_layer > 0 {
            room -= per_layer;
            placed += 1;
        }
        if placed == m.n_layers && room >= m.output_bytes {
            return m.n_layers + 1;
        }
    }
    placed
}

/// Layers llama.cpp gives each offload device when it splits by free memory (its default,
/// `load_tensors` in llama-model.cpp): of the `n_layer + 1` layers (the output layer last),
/// the last `n_gpu_layers` are offloaded and cut at the running share of each device's free
/// memory, in device order. Computed here, with llama.cpp's float arithmetic, so that
/// `/api/ps` can say how much of a model runs on other machines.
pub fn split_layers(free: &[u64], n_layer: u32, n_gpu_layers: u32) -> Vec<u32> {
    let mut out = vec![0u32; free.len()];
    if free.is_empty() {
        return out;
    }
    let mut splits: Vec<f32> = Vec::with_capacity(free.len());
    let mut sum = 0f32;
    for &f in free {
        sum += f as f32;
        splits.push(sum);
    }
    for s in &mut splits {
        *s /= sum;
    }
    let n_all = n_layer as i64;
    let start = (n_all + 1 - n_gpu_layers as i64).max(0);
    let active = (n_gpu_layers as i64).min(n_all + 1);
    for il in 0..=n_all {
        if il < start || il - start >= active {
            continue;
        }
        let x = (il - start) as f32 / active as f32;
        // std::upper_bound: the first split point above x.
        let dev = splits.partition_point(|&s| s <= x).min(free.len() - 1);
        out[dev] += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// Roughly a 7B model at Q4: 32 layers of ~120 MiB, 64 MiB of KV per layer at 4096 context.
    fn seven_b() -> ModelCost {
        ModelCost {
            n_layers: 32,
            layer_bytes: 120 << 20,
            kv_bytes_per_layer: 64 << 20,
            output_bytes: 250 << 20,
        }
    }

    #[test]
    fn inventories() {
        let cases: Vec<(&str, Vec<GpuFree>, u32)> = vec![
            ("no GPU", vec![], 0),
            (
                "a 4 GiB GPU takes part of it",
                vec![GpuFree { free: 4 * GIB }],
                17,
            ),
            (
                "a 24 GiB GPU takes all of it",
                vec![GpuFree { free: 24 * GIB }],
                33,
            ),
            (
                "two 4 GiB GPUs take more",
                vec![GpuFree { free: 4 * GIB }, GpuFree { free: 4 * GIB }],
                33,
            ),
            (
                "a GPU with less than the margin takes nothing",
                vec![GpuFree { free: 400 << 20 }],
                0,
            ),
        ];
        for (what, gpus, want) in cases {
            assert_eq!(fit_layers(&gpus, &seven_b()), want, "{what}");
        }
    }

    #[test]
    fn split_by_free_memory_as_llama_cpp() {
        // SmolLM2: 30 layers and the output layer.
        assert_eq!(split_layers(&[8 * GIB, 8 * GIB], 30, 31), vec![16, 15]);
        assert_eq!(split_layers(&[8 * GIB, 8 * GIB], 30, 20), vec![10, 10]);
        assert_eq!(split_layers(&[GIB, 3 * GIB], 30, 99), vec![8, 23]);
        assert_eq!(split_layers(&[GIB], 30, 5), vec![5]);
        assert_eq!(split_layers(&[GIB, GIB], 30, 0), vec![0, 0]);
        assert_eq!(split_layers(&[], 30, 10), Vec::<u32>::new());
        for n in 0..40 {
            let s = split_layers(&[3 * GIB, 5 * GIB, GIB], 30, n);
            assert_eq!(s.iter().sum::<u32>(), n.min(31), "{n}: {s:?}");
        }
    }
}
