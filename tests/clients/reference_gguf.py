"""Write the GGUF llama.cpp's own tables make of a Hugging Face Qwen 3 folder: the reference a
conversion by Corral is compared with.

    python reference_gguf.py HFDIR VOCAB_GGUF DST

HFDIR is a Qwen3ForCausalLM folder (config.json, model*.safetensors); its tensors are named by
gguf-py's TensorNameMap for Qwen 3 (llama.cpp's table of Hugging Face names), kept as they are
(the NeoX rope rotates Hugging Face's layout: nothing permuted). Its settings are read from
config.json here, by hand, and written with gguf-py's GGUFWriter, whose methods give the
architecture's key names. The vocabulary (every tokenizer.* key) is
copied from VOCAB_GGUF, the model the folder's tokenizer was written from. Written to a temp
name beside DST and renamed when complete.
"""

import glob
import json
import os
import sys

import gguf
import numpy as np
from f16_model import copy_fields, finish
from safetensors.numpy import load_file


def main(hf: str, vocab: str, dst: str) -> None:
    with open(os.path.join(hf, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    if config["architectures"] != ["Qwen3ForCausalLM"]:
        raise SystemExit(f"{hf}: not a Qwen3ForCausalLM folder")
    arch = gguf.MODEL_ARCH.QWEN3
    n_layer = config["num_hidden_layers"]
    names = gguf.get_tensor_name_map(arch, n_layer)

    partial = f"{dst}.{os.getpid()}.partial"
    writer = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[arch])
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(config.get("rope_theta", 10000.0))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    copy_fields(gguf.GGUFReader(vocab), writer, lambda key: key.startswith("tokenizer."))

    for path in sorted(glob.glob(os.path.join(hf, "model*.safetensors"))):
        for name, data in sorted(load_file(path).items()):
            gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise SystemExit(f"{name}: not a Qwen 3 tensor in llama.cpp's table")
            # Vectors (norms) in F32, as llama.cpp wants them; matrices as they are (F16).
            if data.ndim == 1:
                data = data.astype(np.float32)
            writer.add_tensor(gguf_name, data)
    finish(writer, partial, dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
