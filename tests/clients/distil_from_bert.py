"""Write a BERT sentence-transformers folder as the DistilBERT model that computes the same
vectors: the test of Corral's DistilBERT import, since no DistilBERT model can be fetched here.

    python distil_from_bert.py BERTDIR DST

DistilBERT is BERT without the token-type embedding, under other names (`transformer.layer.N.
attention.q_lin` ..., `sa_layer_norm`, `ffn.lin1`) and settings (`dim`, `n_layers`,
`hidden_dim` ...). BERT adds the first token type's row to every token; folded into the
position embeddings here, the DistilBERT model gives BERT's vectors. The tokenizer and the
sentence-transformers modules are copied as they are. Written to a temp folder beside DST and
renamed when complete.
"""

import glob
import json
import os
import shutil
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

LAYER = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}


def main(src: str, dst: str) -> None:
    with open(os.path.join(src, "config.json"), encoding="utf-8") as f:
        bert = json.load(f)
    w = {}
    for path in glob.glob(os.path.join(src, "*.safetensors")):
        w.update(load_file(path))
    out = {}
    for name, t in w.items():
        if name == "embeddings.position_ids" or name.startswith("pooler."):
            continue
        if name == "embeddings.token_type_embeddings.weight":
            continue
        if name == "embeddings.position_embeddings.weight":
            t = (t.astype(np.float32) + w["embeddings.token_type_embeddings.weight"][0]).astype(t.dtype)
        if name.startswith("encoder.layer."):
            n, part = name.removeprefix("encoder.layer.").split(".", 1)
            stem, kind = part.rsplit(".", 1)
            name = f"transformer.layer.{n}.{LAYER[stem]}.{kind}"
        out[name] = np.ascontiguousarray(t)
    config = {
        "architectures": ["DistilBertModel"],
        "model_type": "distilbert",
        "dim": bert["hidden_size"],
        "n_heads": bert["num_attention_heads"],
        "n_layers": bert["num_hidden_layers"],
        "hidden_dim": bert["intermediate_size"],
        "max_position_embeddings": bert["max_position_embeddings"],
        "vocab_size": bert["vocab_size"],
        "activation": bert["hidden_act"],
        "sinusoidal_pos_embds": False,
        "pad_token_id": bert.get("pad_token_id", 0),
        "dropout": 0.1,
        "attention_dropout": 0.1,
    }
    tmp = f"{dst}.{os.getpid()}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "1_Pooling"))
    save_file(out, os.path.join(tmp, "model.safetensors"))
    with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    for name in ("tokenizer.json", "tokenizer_config.json", "modules.json", "1_Pooling/config.json"):
        shutil.copy(os.path.join(src, name), os.path.join(tmp, name))
    os.rename(tmp, dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
