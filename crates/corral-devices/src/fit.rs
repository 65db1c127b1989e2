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
}
