"""Tokenizers, always served by tiktoken and always built from local files.

``load_tokenizer(spec)`` accepts:

- ``"bytes"``: the 256 bytes and ``<|endoftext|>``, no merges: a character-level model for ASCII
  text (nanoGPT's shakespeare_char), where loss per token is loss per byte;
- ``"gpt2"``: GPT-2's BPE from ``vocab.bpe`` + ``encoder.json``, looked up in ``$TOKENIZERS_DIR/gpt2/``,
  then in the shared corpus (``tokenizers/gpt2/``), then in tiktoken's own cache;
- ``"cl100k_base"``, ``"o200k_base"``, ``"r50k_base"``, ``"p50k_base"``: from tiktoken's cache
  (``$TIKTOKEN_CACHE_DIR``, files named by the sha1 of their download URL);
- a directory holding ``vocab.bpe`` + ``encoder.json`` (a GPT-2-style encoding);
- a directory written by ``train_bpe`` (``encoding.json`` + a tiktoken ranks file).

Nothing here downloads: when files are missing the error names the places and file names to use.
tiktoken itself would silently download a missing or corrupt cache file, so every file's sha256 is
checked here before tiktoken sees it.

``train_bpe`` learns a byte-level BPE with the ``tokenizers`` library's trainer and exports it in
tiktoken's format, so that training, the build and generation all encode with the same code.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks, load_tiktoken_bpe
from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

from pipeline.corpus import corpus_dir

GPT2_PATTERN = r50k_pat_str
BYTES = "bytes"
ENCODING_FILE = "encoding.json"
RANKS_FILE = "ranks.tiktoken"

_OPENAI = "https://openaipublic.blob.core.windows.net"
# For each named encoding: (file name, the URL tiktoken would fetch it from, its sha256). We never
# fetch; tiktoken's cache names files by the sha1 of the URL, and the sha256 proves a file is the one.
_NAMED_FILES: dict[str, list[tuple[str, str, str]]] = {
    "gpt2": [
        ("vocab.bpe", f"{_OPENAI}/gpt-2/encodings/main/vocab.bpe",
         "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
        ("encoder.json", f"{_OPENAI}/gpt-2/encodings/main/encoder.json",
         "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    ],
    "r50k_base": [("r50k_base.tiktoken", f"{_OPENAI}/encodings/r50k_base.tiktoken",
                   "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930")],
    "p50k_base": [("p50k_base.tiktoken", f"{_OPENAI}/encodings/p50k_base.tiktoken",
                   "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069")],
    "cl100k_base": [("cl100k_base.tiktoken", f"{_OPENAI}/encodings/cl100k_base.tiktoken",
                     "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7")],
    "o200k_base": [("o200k_base.tiktoken", f"{_OPENAI}/encodings/o200k_base.tiktoken",
                    "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d")],
}


class TokenizerFilesMissing(FileNotFoundError):
    """The files an encoding needs are not on this machine; the message says where to put them."""


def load_tokenizer(spec: str) -> tiktoken.Encoding:
    """An encoding by name (``"gpt2"``, ``"cl100k_base"``, ...) or by directory; see the module doc."""
    if spec == BYTES:
        return _bytes_encoding()
    path = Path(spec)
    if spec not in _NAMED_FILES and path.is_dir():
        if (path / ENCODING_FILE).is_file():
            return _load_trained(path.resolve())
        if (path / "vocab.bpe").is_file() and (path / "encoder.json").is_file():
            return _load_gpt2_files(path.resolve(), name=path.name)
        raise TokenizerFilesMissing(
            f"{path} holds neither {ENCODING_FILE} (a tokenizer from train_bpe) nor vocab.bpe + encoder.json"
        )
    if spec not in _NAMED_FILES:
        raise ValueError(
            f"unknown tokenizer {spec!r}: use one of {sorted([BYTES, *_NAMED_FILES])} or a directory "
            f"holding {ENCODING_FILE} (from train_bpe) or vocab.bpe + encoder.json"
        )
    if spec == "gpt2":
        for folder in _gpt2_folders():
            if all((folder / name).is_file() for name, _, _ in _NAMED_FILES["gpt2"]):
                _check_files(spec, [(folder / name, sha) for name, _, sha in _NAMED_FILES["gpt2"]])
                return _load_gpt2_files(folder.resolve(), name="gpt2")
    cached = [(_tiktoken_cache_dir() / hashlib.sha1(url.encode()).hexdigest(), sha)
              for _, url, sha in _NAMED_FILES[spec]]
    if all(path.is_file() for path, _ in cached):
        _check_files(spec, cached)
        return tiktoken.get_encoding(spec)  # reads the verified cache files, so it cannot download
    raise TokenizerFilesMissing(_where_to_put(spec))


def tokenizer_identity(encoding: tiktoken.Encoding | str) -> dict[str, object]:
    """Name, vocabulary size and a checksum of everything that decides the token ids.

    The checksum covers the ranks (in tiktoken's file format, so for a trained tokenizer the prefix
    is its ranks file), the pre-tokenization pattern and the special tokens. Checkpoints and token
    manifests store it; a loader compares it before mixing data and model.
    """
    if isinstance(encoding, str):
        encoding = load_tokenizer(encoding)
    # tiktoken keeps its definition in these attributes (its README extends encodings through them).
    digest = hashlib.sha256(_ranks_file_bytes(encoding._mergeable_ranks))
    digest.update(encoding._pat_str.encode())
    digest.update(json.dumps(encoding._special_tokens, sort_keys=True).encode())
    return {"name": encoding.name, "n_vocab": encoding.n_vocab, "sha256": digest.hexdigest()}


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: str | Path, name: str | None = None) -> tiktoken.Encoding:
    """Learns a byte-level BPE of ``vocab_size`` ids (``<|endoftext|>`` included) and saves it for tiktoken.

    Pre-tokenization is GPT-2's pattern, the same one tiktoken applies when serving, so the pieces the
    merges were learned on are the pieces they are applied to. The ids are: the 256 bytes, then each
    merged token in the order the trainer learned it (tiktoken merges lowest rank first, which is
    that order), then ``<|endoftext|>``.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise ValueError(f"vocab_size must be at least 257 (256 bytes + <|endoftext|>), got {vocab_size}")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,  # room for <|endoftext|>, added after the merges
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)

    to_byte = {char: byte for byte, char in _byte_level_chars().items()}
    ranks = {bytes([byte]): byte for byte in range(256)}
    for left, right in json.loads(bpe.to_str())["model"]["merges"]:
        # Two merges can build the same bytes ("a"+"bc", "ab"+"c"); tiktoken ranks tokens, not pairs,
        # so the first (most frequent) one sets the rank.
        ranks.setdefault(bytes(to_byte[char] for char in left + right), len(ranks))

    encoding = tiktoken.Encoding(name=name or Path(out_dir).resolve().name, pat_str=GPT2_PATTERN,
                                 mergeable_ranks=ranks, special_tokens={ENDOFTEXT: len(ranks)})
    return _load_trained(save_tokenizer(encoding, out_dir).resolve())


def save_tokenizer(encoding: tiktoken.Encoding, out_dir: str | Path) -> Path:
    """Write any encoding as a folder that ``load_tokenizer`` reads (``encoding.json`` + ranks), with
    the same ``tokenizer_identity``: a model folder can then carry its own tokenizer."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranks_bytes = _ranks_file_bytes(encoding._mergeable_ranks)
    _write_atomic(out / RANKS_FILE, ranks_bytes)
    definition = {
        "name": encoding.name,
        "pat_str": encoding._pat_str,
        "special_tokens": encoding._special_tokens,
        "ranks_file": RANKS_FILE,
        "ranks_sha256": hashlib.sha256(ranks_bytes).hexdigest(),
    }
    _write_atomic(out / ENCODING_FILE, (json.dumps(definition, indent=2) + "\n").encode())
    return out


@functools.cache
def _bytes_encoding() -> tiktoken.Encoding:
    ranks = {bytes([byte]): byte for byte in range(256)}
    return tiktoken.Encoding(name=BYTES, pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: len(ranks)})


def _load_trained(folder: Path) -> tiktoken.Encoding:
    return _encoding_from_definition(folder, (folder / ENCODING_FILE).read_text())


@functools.cache  # keyed by the definition's text, so retraining into the same folder is seen
def _encoding_from_definition(folder: Path, definition_text: str) -> tiktoken.Encoding:
    definition = json.loads(definition_text)
    ranks_path = folder / definition["ranks_file"]
    _check_files(str(folder), [(ranks_path, definition["ranks_sha256"])])
    return tiktoken.Encoding(
        name=definition["name"],
        pat_str=definition["pat_str"],
        mergeable_ranks=load_tiktoken_bpe(str(ranks_path), expected_hash=definition["ranks_sha256"]),
        special_tokens=definition["special_tokens"],
    )


def _load_gpt2_files(folder: Path, name: str) -> tiktoken.Encoding:
    fingerprint = tuple(hashlib.sha256((folder / file).read_bytes()).hexdigest() for file in ("vocab.bpe", "encoder.json"))
    return _gpt2_encoding(folder, name, fingerprint)


@functools.cache  # keyed by the files' checksums, so replaced files are seen
def _gpt2_encoding(folder: Path, name: str, fingerprint: tuple[str, str]) -> tiktoken.Encoding:
    # tiktoken checks the checksums too, also of the copy it keeps in its cache keyed by path.
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(folder / "vocab.bpe"),
        encoder_json_file=str(folder / "encoder.json"),
        vocab_bpe_hash=fingerprint[0],
        encoder_json_hash=fingerprint[1],
    )
    return tiktoken.Encoding(
        name=name, pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={ENDOFTEXT: len(ranks)}
    )


def _gpt2_folders() -> list[Path]:
    folders = [Path(os.environ["TOKENIZERS_DIR"]) / "gpt2"] if os.environ.get("TOKENIZERS_DIR") else []
    return folders + [corpus_dir() / "tokenizers" / "gpt2"]


def _tiktoken_cache_dir() -> Path:
    """The folder tiktoken reads its cache from (the same rule as ``tiktoken.load.read_file_cached``)."""
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _check_files(spec: str, files: list[tuple[Path, str]]) -> None:
    for path, expected in files:
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != expected:
            raise TokenizerFilesMissing(
                f"tokenizer {spec!r}: {path} has sha256 {actual[:12]}..., expected {expected[:12]}...; "
                "replace it with the original file"
            )


def _where_to_put(spec: str) -> str:
    cache = _tiktoken_cache_dir()
    cache_names = ", ".join(
        f"{name} as {cache / hashlib.sha1(url.encode()).hexdigest()}" for name, url, _ in _NAMED_FILES[spec]
    )
    message = f"tokenizer {spec!r}: its files are not on this machine and are never downloaded. "
    if spec == "gpt2":
        folders = " or ".join(str(folder) for folder in _gpt2_folders())
        message += f"Put vocab.bpe and encoder.json in {folders} (or set TOKENIZERS_DIR), or put "
    else:
        message += "Set TIKTOKEN_CACHE_DIR and put "
    return message + cache_names


def _ranks_file_bytes(ranks: dict[bytes, int]) -> bytes:
    """Ranks in tiktoken's file format: ``base64(token) rank`` per line, by rank."""
    lines = (base64.b64encode(token) + b" " + str(rank).encode() for token, rank in sorted(ranks.items(), key=lambda item: item[1]))
    return b"\n".join(lines) + b"\n"


def _byte_level_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character map, the alphabet byte-level BPE trainers work in.

    Printable Latin-1 bytes stand for themselves; the rest (controls, space, ...) are shifted to
    code points from 256 up, in byte order.
    """
    printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
    shifted = [b for b in range(256) if b not in printable]
    return {b: chr(b) for b in printable} | {b: chr(256 + n) for n, b in enumerate(shifted)}


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)
