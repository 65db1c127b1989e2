"""Sentence embeddings of a BERT sentence-transformers folder, computed here with numpy from
its safetensors weights: the reference the model Corral converts is compared with.

    python bert_reference.py [--cls] HFDIR TEXT...

Prints a JSON list, one object per text: `ids`, the tokens Hugging Face's own `tokenizers`
gives for the folder's tokenizer.json ([CLS] and [SEP] included), and `embedding`, BERT's
forward pass in float64 (exact GELU, as Transformers' "gelu"), mean-pooled over the tokens (or,
with --cls, the first token's state, as BGE and mxbai pool) and L2-normalized, as
sentence-transformers computes it.
"""

import glob
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer


def main(hf: str, texts: list[str], cls: bool) -> None:
    with open(os.path.join(hf, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    w = {}
    for path in glob.glob(os.path.join(hf, "*.safetensors")):
        w.update({k.removeprefix("bert."): v.astype(np.float64) for k, v in load_file(path).items()})
    heads = config["num_attention_heads"]
    eps = config.get("layer_norm_eps", 1e-12)
    erf = np.vectorize(math.erf)

    def norm(x, name):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * w[f"{name}.weight"] + w[f"{name}.bias"]

    def linear(x, name):
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    tokenizer = Tokenizer.from_file(os.path.join(hf, "tokenizer.json"))
    # The file pads every text to 128 tokens for batches; one text at a time needs none.
    tokenizer.no_padding()
    out = []
    for text in texts:
        ids = tokenizer.encode(text).ids
        n = len(ids)
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = norm(x, "embeddings.LayerNorm")
        for layer in range(config["num_hidden_layers"]):
            p = f"encoder.layer.{layer}"
            split = lambda t: t.reshape(n, heads, -1).transpose(1, 0, 2)
            q, k, v = (split(linear(x, f"{p}.attention.self.{m}")) for m in ("query", "key", "value"))
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(1, 0, 2).reshape(n, -1)
            x = norm(x + linear(context, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
            h = linear(x, f"{p}.intermediate.dense")
            h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
            x = norm(x + linear(h, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        pooled = x[0] if cls else x.mean(0)
        out.append({"ids": ids, "embedding": (pooled / np.linalg.norm(pooled)).tolist()})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    args = sys.argv[1:]
    cls = args[0] == "--cls"
    if cls:
        args = args[1:]
    main(args[0], args[1:], cls)
