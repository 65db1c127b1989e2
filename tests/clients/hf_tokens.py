"""The token ids Hugging Face's own `tokenizers` library gives texts: the reference for how a
converted model must split them.

    python hf_tokens.py TOKENIZER_JSON < texts.json > ids.json

texts.json is a JSON list of strings; the output is a JSON list of id lists, one per text,
without special tokens added.
"""

import json
import sys

import tokenizers


def main(path: str) -> None:
    tokenizer = tokenizers.Tokenizer.from_file(path)
    texts = json.load(sys.stdin)
    ids = [tokenizer.encode(text, add_special_tokens=False).ids for text in texts]
    json.dump(ids, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
