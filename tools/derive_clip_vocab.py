"""Derive the CLIP BPE tokenizer files (vocab.json, merges.txt) from OpenAI's `bpe_simple_vocab_16e6.txt.gz`.

Single-file Stable Diffusion checkpoints carry no tokenizer, and we may not download one, so we ship the
derived files in `nodes/sd/tokenizers/clip/`. This script documents (and re-does) the derivation:

    python tools/derive_clip_vocab.py path/to/bpe_simple_vocab_16e6.txt.gz nodes/sd/tokenizers/clip

The .gz ships inside the open-clip-torch wheel (MIT licence); the result is byte-identical to the
`tokenizer/` files of Stable Diffusion 1.5.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path


def byte_unicode_table() -> list[str]:
    """GPT-2's reversible mapping of the 256 byte values to printable unicode characters, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def derive(gz_path: Path) -> tuple[dict[str, int], list[str]]:
    lines = gzip.open(gz_path).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    tokens = byte_unicode_table()
    tokens = tokens + [t + "</w>" for t in tokens]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def main(argv: list[str]) -> int:
    gz, out = Path(argv[1]), Path(argv[2])
    vocab, merges = derive(gz)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, sort_keys=True)
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    print(f"{len(vocab)} tokens, {len(merges)} merges -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
