"""Write a Hugging Face model folder (safetensors) from a GGUF: the source `FROM DIR` starts from.

    python hf_model.py SRC DSTDIR

SRC is a llama-architecture GGUF with a BPE ("gpt2") vocabulary, such as
SmolLM2-135M-Instruct, or a Gemma 3 GGUF (gemma_folder below); DSTDIR becomes the folder
`huggingface_hub` would have downloaded for it, holding the GGUF's weights instead of the
original ones:

- model.safetensors: every quantized tensor dequantized (gguf-py, NumPy) and stored as F16,
  F32 tensors (the norms) kept as F32, exactly as f16_model.py writes them, under their
  Hugging Face names; q_proj and k_proj rows are put back in Hugging Face's order (the inverse
  of the permutation llama.cpp's convert_hf_to_gguf.py applies for rotary embeddings). No
  lm_head when the GGUF has no output.weight (tied embeddings).
- config.json, generation_config.json: LlamaForCausalLM, the numbers read from the GGUF.
- tokenizer.json (checked by loading it with `tokenizers`), tokenizer_config.json (with the
  chat template), special_tokens_map.json, vocab.json and merges.txt, rebuilt from the GGUF's
  vocabulary.

The folder is written under a temp name beside DSTDIR and renamed when complete (so two tests
that make it at once both see a whole folder).
"""

import json
import os
import shutil
import sys

import gguf
import numpy as np
import tokenizers
from gguf import GGMLQuantizationType as Q
from safetensors.numpy import save_file

# GGUF tensor name (after "blk.N.") -> Hugging Face name (after "model.layers.N.").
LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}

# llama.cpp's token types (gguf.TokenType).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED = 1, 2, 3, 4

TRANSFORMERS_VERSION = "4.42.3"


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of convert_hf_to_gguf.py's LlamaModel.permute: GGUF rows -> Hugging Face rows."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_name(gguf_name: str) -> str:
    base, _, suffix = gguf_name.rpartition(".")  # suffix: "weight" (or "bias")
    if base.startswith("blk."):
        _, layer, kind = base.split(".", 2)
        return f"model.layers.{int(layer)}.{LAYER_NAMES[kind]}.{suffix}"
    return f"{TOP_NAMES[base]}.{suffix}"


def number(x: float) -> float | int:
    """A float as the config writes it: GGUF stores F32, so 1e-05 reads back as 9.99999974e-06."""
    x = float(str(np.float32(x)))
    return int(x) if x.is_integer() else x


def write_json(path: str, obj: dict, sort_keys: bool = False) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, sort_keys=sort_keys)
        f.write("\n")


def start(dst: str) -> str:
    """The temp folder the model is written into, beside DSTDIR (renamed by finish)."""
    partial = f"{dst}.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    return partial


def values(t) -> np.ndarray:
    """A GGUF tensor's values, dequantized, in NumPy's (and Hugging Face's) shape."""
    if t.tensor_type == Q.F32:
        data = np.asarray(t.data, dtype=np.float32)
    else:
        data = gguf.quants.dequantize(t.data, t.tensor_type)
    # gguf-py keeps shapes innermost first; NumPy (and Hugging Face) order is the reverse.
    return data.reshape(tuple(reversed([int(d) for d in t.shape])))


def main(src: str, dst: str) -> None:
    reader = gguf.GGUFReader(src)

    def field(key: str, default=None):
        f = reader.fields.get(key)
        return default if f is None else f.contents()

    arch = field("general.architecture")
    if arch == "gemma3":
        return gemma_folder(reader, field, dst)
    if arch != "llama":
        raise SystemExit(f"{src}: architecture {arch!r}, only llama and gemma3 are written")
    n_head = int(field("llama.attention.head_count"))
    n_head_kv = int(field("llama.attention.head_count_kv", n_head))
    n_embd = int(field("llama.embedding_length"))
    n_layer = int(field("llama.block_count"))
    n_ctx = int(field("llama.context_length"))

    tokens = field("tokenizer.ggml.tokens")
    token_types = field("tokenizer.ggml.token_type")
    merges = field("tokenizer.ggml.merges")
    if field("tokenizer.ggml.model") != "gpt2" or merges is None:
        raise SystemExit(f"{src}: not a BPE (gpt2) vocabulary")
    if len(set(tokens)) != len(tokens):
        raise SystemExit(f"{src}: the vocabulary repeats a token")
    bos_id = field("tokenizer.ggml.bos_token_id")
    eos_id = field("tokenizer.ggml.eos_token_id")
    unk_id = field("tokenizer.ggml.unknown_token_id")
    pad_id = field("tokenizer.ggml.padding_token_id")
    add_bos = bool(field("tokenizer.ggml.add_bos_token", False))
    add_eos = bool(field("tokenizer.ggml.add_eos_token", False))
    chat_template = field("tokenizer.chat_template")

    partial = start(dst)

    # --- weights ---
    names = {t.name for t in reader.tensors}
    tensors = {}
    for t in reader.tensors:
        data = values(t)
        if t.name.endswith(".attn_q.weight"):
            data = unpermute(data, n_head)
        elif t.name.endswith(".attn_k.weight"):
            data = unpermute(data, n_head_kv)
        # As f16_model.py stores them, so that a conversion back gives the same bytes.
        dtype = np.float32 if t.tensor_type == Q.F32 else np.float16
        stored = np.ascontiguousarray(data.astype(dtype))
        assert np.isfinite(stored).all(), f"{t.name} overflows {dtype.__name__}"
        tensors[hf_name(t.name)] = stored
    weights = os.path.join(partial, "model.safetensors")
    save_file(tensors, weights, metadata={"format": "pt"})
    os.chmod(weights, 0o644)  # safetensors creates it 0600
    vocab_size = tensors["model.embed_tokens.weight"].shape[0]
    intermediate = tensors["model.layers.0.mlp.gate_proj.weight"].shape[0]
    del tensors

    # --- config.json, generation_config.json ---
    config = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": "blk.0.attn_q.bias" in names,
        "attention_dropout": 0.0,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "hidden_act": "silu",
        "hidden_size": n_embd,
        "initializer_range": 0.041666666666666664,
        "intermediate_size": int(field("llama.feed_forward_length", intermediate)),
        "is_llama_config": True,
        "max_position_embeddings": n_ctx,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": n_head,
        "num_hidden_layers": n_layer,
        "num_key_value_heads": n_head_kv,
        "pad_token_id": pad_id,
        "pretraining_tp": 1,
        "rms_norm_eps": number(field("llama.attention.layer_norm_rms_epsilon")),
        "rope_interleaved": False,
        "rope_scaling": None,
        "rope_theta": number(field("llama.rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in names,
        "torch_dtype": "float16",
        "transformers.js_config": {"kv_cache_dtype": {"q4f16": "float16", "fp16": "float16"}},
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": int(field("llama.vocab_size", vocab_size)),
    }
    if config["pad_token_id"] is None:
        del config["pad_token_id"]
    write_json(os.path.join(partial, "config.json"), config, sort_keys=True)
    generation = {"_from_model_config": True, "bos_token_id": bos_id, "eos_token_id": eos_id}
    if pad_id is not None:
        generation["pad_token_id"] = pad_id
    generation["transformers_version"] = TRANSFORMERS_VERSION
    write_json(os.path.join(partial, "generation_config.json"), generation)

    # --- tokenizer.json ---
    added = [
        (i, tok, ty in (CONTROL, UNKNOWN))
        for i, (tok, ty) in enumerate(zip(tokens, token_types))
        if ty in (CONTROL, UNKNOWN, USER_DEFINED)
    ]
    flags = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
    byte_level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": tok, **flags, "special": special} for i, tok, special in added],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                {"type": "ByteLevel", **byte_level},
            ],
        },
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": tokens[unk_id] if unk_id is not None else None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            "merges": list(merges),
        },
    }
    tokenizer_path = os.path.join(partial, "tokenizer.json")
    write_json(tokenizer_path, tokenizer)
    check = tokenizers.Tokenizer.from_file(tokenizer_path)
    assert check.get_vocab_size(with_added_tokens=True) == len(tokens)
    for i, tok, _ in added:
        assert check.encode(tok, add_special_tokens=False).ids == [i], tok
    assert check.decode(check.encode("Hello world 123").ids) == "Hello world 123"

    # --- vocab.json, merges.txt (the slow GPT2Tokenizer's files, in the real repository too) ---
    write_json(os.path.join(partial, "vocab.json"), tokenizer["model"]["vocab"])
    with open(os.path.join(partial, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.writelines(m + "\n" for m in merges)

    # --- tokenizer_config.json, special_tokens_map.json ---
    def token(i):
        return None if i is None else tokens[i]

    # The control tokens a chat uses (ChatML's <|im_start|> and <|im_end|>).
    chat_specials = [tok for _, tok, special in added if special and chat_template and tok in chat_template]
    tok_config = {
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(i): {"content": tok, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": special}
            for i, tok, special in added
        },
        "additional_special_tokens": chat_specials,
        "bos_token": token(bos_id),
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": token(eos_id),
        "model_max_length": n_ctx,
        "pad_token": token(pad_id),
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": token(unk_id),
        "vocab_size": len(tokens),
    }
    write_json(os.path.join(partial, "tokenizer_config.json"), {k: v for k, v in tok_config.items() if v is not None})
    special_map = {"additional_special_tokens": chat_specials}
    for key, i in (("bos_token", bos_id), ("eos_token", eos_id), ("pad_token", pad_id), ("unk_token", unk_id)):
        if i is not None:
            special_map[key] = {"content": tokens[i], "lstrip": False, "normalized": False,
                                "rstrip": False, "single_word": False}
    write_json(os.path.join(partial, "special_tokens_map.json"), special_map)

    finish(partial, dst)


def finish(partial: str, dst: str) -> None:
    try:
        os.replace(partial, dst)
    except OSError:
        # Another writer finished first: its folder is the same model.
        if not os.path.isfile(os.path.join(dst, "model.safetensors")):
            raise
        shutil.rmtree(partial)


GEMMA3_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "post_ffw_norm": "post_feedforward_layernorm",
}

# Gemma 3's chat template, as its tokenizer_config.json carries it.
GEMMA3_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""


def gemma_folder(reader, field, dst: str) -> None:
    """Gemma3ForCausalLM, as google/gemma-3-270m-it is laid out, with a SentencePiece vocabulary.

    - model.safetensors: matrices as F16 (as f16_model.py stores them), norms as F32 minus 1
      (Gemma stores a norm's weight as an offset from 1; llama.cpp's converter adds the 1);
      no permutation (Gemma's rope is NeoX's), no lm_head (tied embeddings).
    - config.json: the numbers read from the GGUF, the sliding window on five layers of six.
    - tokenizer.model: SentencePiece's ModelProto (the `sentencepiece` package's own message
      class), each GGUF token a piece with its score and type, spaces written as `▁`; checked
      by loading it with SentencePieceProcessor. The user-defined pieces are named again in
      tokenizer_config.json's added_tokens_decoder (special: false), whose `▁` llama.cpp's
      converter reads as spaces, as the GGUF has them. No tokenizer.json: the converter reads
      tokenizer.model, as llama.cpp's does.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    g = lambda k, d=None: field(f"gemma3.{k}", d)  # noqa: E731
    n_layer = int(g("block_count"))
    head_dim = int(g("attention.key_length"))
    tokens = field("tokenizer.ggml.tokens")
    scores = field("tokenizer.ggml.scores")
    types = field("tokenizer.ggml.token_type")
    if field("tokenizer.ggml.model") != "llama":
        raise SystemExit("not a SentencePiece (llama) vocabulary")
    ids = {k: field(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "unknown", "padding")}

    partial = start(dst)

    tensors = {}
    for t in reader.tensors:
        data = values(t)
        base = t.name.removesuffix(".weight")
        if base.startswith("blk."):
            _, layer, kind = base.split(".", 2)
            name = f"model.layers.{int(layer)}.{GEMMA3_LAYER_NAMES[kind]}.weight"
        else:
            name = {"token_embd": "model.embed_tokens", "output_norm": "model.norm"}[base] + ".weight"
        if base.endswith("norm"):
            stored = data.astype(np.float32) - np.float32(1)
            # The converter adds the 1 back in F32: every value must come back exactly.
            assert ((stored + np.float32(1)) == data).all(), t.name
        else:
            stored = data.astype(np.float16)
        assert np.isfinite(stored).all(), t.name
        tensors[name] = np.ascontiguousarray(stored)
    weights = os.path.join(partial, "model.safetensors")
    save_file(tensors, weights, metadata={"format": "pt"})
    os.chmod(weights, 0o644)
    vocab_size = tensors["model.embed_tokens.weight"].shape[0]
    del tensors

    window = int(g("attention.sliding_window"))
    config = {
        "_sliding_window_pattern": 6,
        "architectures": ["Gemma3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "attn_logit_softcapping": None,
        "bos_token_id": ids["bos"],
        "eos_token_id": [ids["eos"], tokens.index("<end_of_turn>")],
        "final_logit_softcapping": None,
        "head_dim": head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": int(g("embedding_length")),
        "initializer_range": 0.02,
        "intermediate_size": int(g("feed_forward_length")),
        "layer_types": ["full_attention" if i % 6 == 5 else "sliding_attention" for i in range(n_layer)],
        "max_position_embeddings": int(g("context_length")),
        "model_type": "gemma3_text",
        "num_attention_heads": int(g("attention.head_count")),
        "num_hidden_layers": n_layer,
        "num_key_value_heads": int(g("attention.head_count_kv")),
        "pad_token_id": ids["padding"],
        "query_pre_attn_scalar": head_dim,
        "rms_norm_eps": number(g("attention.layer_norm_rms_epsilon")),
        "rope_local_base_freq": 10000.0,
        "rope_scaling": None,
        "rope_theta": number(g("rope.freq_base")),
        "sliding_window": window,
        "torch_dtype": "float16",
        "transformers_version": "4.55.0.dev0",
        "use_bidirectional_attention": False,
        "use_cache": True,
        "vocab_size": vocab_size,
    }
    write_json(os.path.join(partial, "config.json"), config, sort_keys=True)
    write_json(os.path.join(partial, "generation_config.json"),
               {"bos_token_id": ids["bos"], "eos_token_id": config["eos_token_id"],
                "pad_token_id": ids["padding"], "transformers_version": "4.55.0.dev0"})

    # --- tokenizer.model ---
    model = pb.ModelProto()
    for tok, score, ty in zip(tokens, scores, types):
        p = model.pieces.add()
        p.piece = tok.replace(" ", "\u2581")
        p.score = float(score)
        p.type = int(ty)
    trainer = model.trainer_spec
    trainer.model_type = pb.TrainerSpec.BPE
    trainer.vocab_size = len(tokens)
    trainer.byte_fallback = True
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = (
        ids["unknown"], ids["bos"], ids["eos"], ids["padding"])
    norm = model.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = bool(field("tokenizer.ggml.add_space_prefix", True))
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    tokenizer_path = os.path.join(partial, "tokenizer.model")
    with open(tokenizer_path, "wb") as f:
        f.write(model.SerializeToString())
    check = spm.SentencePieceProcessor(model_file=tokenizer_path)
    assert check.vocab_size() == len(tokens)
    text = "Hello world, the capital of France is Paris.\n\n  123"
    assert check.decode(check.encode(text)) == text
    assert check.encode("Hello")[0] == tokens.index("Hello"), check.encode("Hello")

    # --- tokenizer_config.json, special_tokens_map.json ---
    CONTROL_, USER = 3, 4
    decoder = {
        str(i): {"content": tok.replace(" ", "\u2581"), "lstrip": False, "normalized": False,
                 "rstrip": False, "single_word": False, "special": ty == CONTROL_}
        for i, (tok, ty) in enumerate(zip(tokens, types)) if ty in (CONTROL_, USER)
    }
    names = {"bos": "bos_token", "eos": "eos_token", "unknown": "unk_token", "padding": "pad_token"}
    tok_config = {
        "add_bos_token": bool(field("tokenizer.ggml.add_bos_token", True)),
        "add_eos_token": bool(field("tokenizer.ggml.add_eos_token", False)),
        "added_tokens_decoder": decoder,
        "chat_template": GEMMA3_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1000000000000000019884624838656,
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
        "use_default_system_prompt": False,
        **{names[k]: tokens[i] for k, i in ids.items()},
    }
    write_json(os.path.join(partial, "tokenizer_config.json"), tok_config)
    write_json(os.path.join(partial, "special_tokens_map.json"),
               {names[k]: {"content": tokens[i], "lstrip": False, "normalized": False,
                           "rstrip": False, "single_word": False} for k, i in ids.items()})
    finish(partial, dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
