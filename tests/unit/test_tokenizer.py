"""Tokenizers built from local files: lossless, equal to tiktoken's own gpt2, never downloading."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import tiktoken
from tiktoken_ext import openai_public

from pipeline.tokenizer import (
    ENCODING_FILE,
    TokenizerFilesMissing,
    load_tokenizer,
    save_tokenizer,
    tokenizer_identity,
    train_bpe,
)

VOCAB_BPE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe"
ENCODER_JSON_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json"

TRICKY = [
    "emoji 👩‍👩‍👧‍👦 🇺🇳 🫠 and skin tones 👍🏽",
    "controls \x00\x01\x07\x1b[31mred\x1b[0m\x7f and \t tabs \r\n windows\x0b\x0c",
    "  leading and trailing spaces  \n\n\n",
    "combining e\u0301 vs \u00e9, zero-width\u200bjoiner, RTL \u202eevil\u202c",
    "surrogate-free astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈",
    "<|endoftext|> is plain text here",
    "",
]


def shared_texts(corpus) -> list[str]:
    """Real text in 75 languages plus English prose: every sentence file, and the demo texts."""
    texts = [path.read_text() for path in sorted((corpus / "lang" / "sentences").glob("*.txt"))]
    texts += [(corpus / "text" / name).read_text() for name in ("the-verdict.txt", "gutenberg-11-alice.txt")]
    assert len(texts) > 70
    return texts


@pytest.fixture(scope="module")
def gpt2():
    return load_tokenizer("gpt2")


@pytest.fixture(scope="module")
def tiktoken_reference_gpt2(corpus, tmp_path_factory):
    """tiktoken's own gpt2 definition, fed from a cache folder holding the shared files."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    folder = corpus / "tokenizers" / "gpt2"
    shutil.copy(folder / "vocab.bpe", cache / hashlib.sha1(VOCAB_BPE_URL.encode()).hexdigest())
    shutil.copy(folder / "encoder.json", cache / hashlib.sha1(ENCODER_JSON_URL.encode()).hexdigest())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        return tiktoken.Encoding(**openai_public.gpt2())


def test_gpt2_ids_equal_tiktoken_reference(gpt2, tiktoken_reference_gpt2, corpus):
    texts = shared_texts(corpus) + TRICKY
    assert gpt2.encode_ordinary_batch(texts) == tiktoken_reference_gpt2.encode_ordinary_batch(texts)
    assert gpt2.eot_token == tiktoken_reference_gpt2.eot_token == 50256
    assert gpt2.n_vocab == tiktoken_reference_gpt2.n_vocab == 50257


def test_gpt2_round_trips_multilingual_and_tricky_text(gpt2, corpus):
    for text in shared_texts(corpus) + TRICKY:
        assert gpt2.decode(gpt2.encode_ordinary(text)) == text


def test_gpt2_from_tiktoken_cache_when_no_folder_has_it(corpus, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(corpus / "tokenizers/gpt2/vocab.bpe", cache / hashlib.sha1(VOCAB_BPE_URL.encode()).hexdigest())
    shutil.copy(corpus / "tokenizers/gpt2/encoder.json", cache / hashlib.sha1(ENCODER_JSON_URL.encode()).hexdigest())
    monkeypatch.setenv("CORPUS_DIR", str(tmp_path / "no-corpus"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    assert load_tokenizer("gpt2").encode_ordinary("Hello world") == [15496, 995]


def test_explicit_folder_via_env_and_path(corpus, tmp_path, monkeypatch):
    folder = tmp_path / "tokenizers" / "gpt2"
    shutil.copytree(corpus / "tokenizers" / "gpt2", folder)
    monkeypatch.setenv("CORPUS_DIR", str(tmp_path / "no-corpus"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("TOKENIZERS_DIR", str(tmp_path / "tokenizers"))
    assert load_tokenizer("gpt2").encode_ordinary("Hello world") == [15496, 995]
    assert load_tokenizer(str(folder)).encode_ordinary("Hello world") == [15496, 995]


def test_missing_files_fail_with_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("CORPUS_DIR", str(tmp_path / "no-corpus"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("TOKENIZERS_DIR", raising=False)
    with pytest.raises(TokenizerFilesMissing) as missing:
        load_tokenizer("gpt2")
    message = str(missing.value)
    assert "vocab.bpe" in message and "encoder.json" in message
    assert str(tmp_path / "no-corpus" / "tokenizers" / "gpt2") in message
    assert hashlib.sha1(VOCAB_BPE_URL.encode()).hexdigest() in message
    with pytest.raises(TokenizerFilesMissing, match="TIKTOKEN_CACHE_DIR"):
        load_tokenizer("cl100k_base")


def test_corrupt_cache_file_is_an_error_not_a_download(corpus, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / hashlib.sha1(VOCAB_BPE_URL.encode()).hexdigest()).write_text("#version: 0.2\n")
    shutil.copy(corpus / "tokenizers/gpt2/encoder.json", cache / hashlib.sha1(ENCODER_JSON_URL.encode()).hexdigest())
    monkeypatch.setenv("CORPUS_DIR", str(tmp_path / "no-corpus"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    with pytest.raises(TokenizerFilesMissing, match="expected 1ce1664773c5"):
        load_tokenizer("gpt2")


def test_unknown_name_is_rejected():
    with pytest.raises(ValueError, match="unknown tokenizer 'gpt5'"):
        load_tokenizer("gpt5")


def test_identity_names_the_encoding_and_tracks_its_definition(gpt2, tmp_path, corpus):
    identity = tokenizer_identity("gpt2")
    assert identity == tokenizer_identity(gpt2)
    assert identity["name"] == "gpt2" and identity["n_vocab"] == 50257
    assert len(identity["sha256"]) == 64
    trained = train_bpe([(corpus / "text" / "the-verdict.txt").read_text()], vocab_size=300, out_dir=tmp_path)
    assert tokenizer_identity(trained)["sha256"] != identity["sha256"]


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    texts = (corpus / "text" / "tinyshakespeare.txt").read_text().split("\n\n")
    texts += (corpus / "lang" / "sentences" / "de.txt").read_text().splitlines()
    folder = tmp_path_factory.mktemp("bpe")
    return train_bpe(texts, vocab_size=2000, out_dir=folder, name="shakespeare-2k"), folder


def test_trained_bpe_has_the_asked_size_and_learned_real_words(trained):
    encoding, _ = trained
    assert encoding.name == "shakespeare-2k"
    assert encoding.n_vocab == 2000
    assert encoding.eot_token == 1999
    # Merges were mapped back from the trainer's byte alphabet to real bytes: frequent words are one id.
    for word in (" the", " and", "KING", " und"):
        assert len(encoding.encode_ordinary(word)) == 1, word


def test_trained_bpe_special_tokens_never_collide_with_merge_ranks(trained):
    encoding, _ = trained
    ranks = set(range(encoding.eot_token))
    for token in range(encoding.eot_token):
        assert not encoding.is_special_token(token)
        assert encoding.decode_single_token_bytes(token)  # every rank below the specials is a real token
    assert encoding.eot_token not in ranks
    assert encoding.encode("<|endoftext|>", allowed_special="all") == [encoding.eot_token]
    assert encoding.eot_token not in encoding.encode_ordinary("<|endoftext|>")


def test_trained_bpe_round_trips_and_reloads_from_its_folder(trained, corpus):
    encoding, folder = trained
    texts = shared_texts(corpus)[:20] + TRICKY
    for text in texts:
        assert encoding.decode(encoding.encode_ordinary(text)) == text
    reloaded = load_tokenizer(str(folder))
    assert reloaded.encode_ordinary_batch(texts) == encoding.encode_ordinary_batch(texts)
    assert tokenizer_identity(reloaded) == tokenizer_identity(encoding)
    assert (folder / ENCODING_FILE).is_file()


def test_retraining_into_the_same_folder_is_seen(tmp_path, corpus):
    text = (corpus / "text" / "the-verdict.txt").read_text()
    first = train_bpe([text], vocab_size=300, out_dir=tmp_path)
    second = train_bpe([text], vocab_size=400, out_dir=tmp_path)
    assert (first.n_vocab, second.n_vocab, load_tokenizer(str(tmp_path)).n_vocab) == (300, 400, 400)


def test_train_bpe_rejects_a_vocab_smaller_than_the_bytes(tmp_path):
    with pytest.raises(ValueError, match="at least 257"):
        train_bpe(["abc"], vocab_size=256, out_dir=tmp_path)


def test_bytes_tokenizer_gives_one_token_per_byte(corpus, tmp_path):
    encoding = load_tokenizer("bytes")
    text = (corpus / "text" / "tinyshakespeare.txt").read_text()[:5000] + " naïve café 日本"
    tokens = encoding.encode_ordinary(text)
    assert tokens == list(text.encode("utf-8"))  # id = byte value: a character-level model for ASCII
    assert encoding.decode(tokens) == text
    assert encoding.eot_token == 256 and encoding.n_vocab == 257
    reloaded = load_tokenizer(str(save_tokenizer(encoding, tmp_path / "bytes")))  # a model folder carries it
    assert tokenizer_identity(reloaded) == tokenizer_identity("bytes")
