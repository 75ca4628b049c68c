"""MinHash signatures: identical to datasketch's for the same shingles, hash and permutations."""

from __future__ import annotations

import numpy as np
import pytest
from datasketch import MinHash

from pipeline.dedup.config import MinHashConfig
from pipeline.dedup.minhash import EMPTY, Signer, permutations
from pipeline.dedup.normalize import normalize
from pipeline.dedup.shingles import reference_hash, shingle_strings, units

TEXTS = [
    "The quick brown fox jumps over the lazy dog, and then the dog sleeps on.",
    "Ein kleiner Text, über Straßen und Flüsse; mit Umlauten — und Satzzeichen!",
    "  leading and trailing\u3000ideographic\u2028separators\t\n ",
    "Καλημέρα κόσμε, αυτό είναι ένα κείμενο με αρκετές λέξεις για όλα τα n-grams.",
    "three short words",
    "one",
    "",
    "   ",
    "¡¿!?",  # only punctuation: empty once normalized for the fineweb preset
]

CONFIGS = {
    "fineweb": MinHashConfig(),
    "fineweb-xxh32": MinHashConfig(hash_function="xxh32"),
    "nemo": MinHashConfig(preset="nemo"),
    "nemo-xxh32": MinHashConfig(preset="nemo", hash_function="xxh32", hash_seed=7, permutation_seed=42),
    "unigrams": MinHashConfig(ngram=1, bands=4, rows=2),
}


def datasketch_signature(text: str, config: MinHashConfig) -> np.ndarray:
    shingles = shingle_strings(units(normalize(text, config.normalize), config), config)
    sketch = MinHash(num_perm=config.num_perm, seed=config.permutation_seed, hashfunc=reference_hash(config))
    sketch.update_batch([s.encode() for s in shingles])
    return sketch.hashvalues


@pytest.mark.parametrize("name", CONFIGS)
def test_signatures_equal_datasketch(name):
    config = CONFIGS[name]
    signatures, has_shingles = Signer(config)(TEXTS)
    assert signatures.shape == (len(TEXTS), config.num_perm)
    assert signatures.dtype == np.uint32
    for text, signature in zip(TEXTS, signatures):
        np.testing.assert_array_equal(signature, datasketch_signature(text, config), err_msg=repr(text))
    expected_has = [bool(shingle_strings(units(normalize(t, config.normalize), config), config)) for t in TEXTS]
    assert has_shingles.tolist() == expected_has
    assert (signatures[~has_shingles] == EMPTY).all()


def test_signature_of_a_text_does_not_depend_on_its_batch():
    signer = Signer(MinHashConfig())
    alone = np.vstack([signer([text])[0] for text in TEXTS])
    together, _ = signer(TEXTS)
    reversed_batch, _ = signer(TEXTS[::-1])
    np.testing.assert_array_equal(alone, together)
    np.testing.assert_array_equal(together, reversed_batch[::-1])


def test_long_batches_cross_the_permutation_chunks():
    words = [f"w{i}" for i in range(30_000)]
    texts = [" ".join(words[i : i + 400]) for i in range(0, 30_000, 300)]  # overlapping, >8192 shingles
    config = MinHashConfig()
    signatures, _ = Signer(config)(texts)
    for i in (0, 37, len(texts) - 1):
        np.testing.assert_array_equal(signatures[i], datasketch_signature(texts[i], config))


def test_permutations_are_datasketchs():
    a, b = permutations(112, 1)
    expected = MinHash(num_perm=112, seed=1).permutations
    np.testing.assert_array_equal(a, expected[0])
    np.testing.assert_array_equal(b, expected[1])


def test_agreement_estimates_jaccard():
    config = MinHashConfig(ngram=1, bands=32, rows=8)
    left = " ".join(f"a{i}" for i in range(300))
    right = " ".join(f"a{i}" for i in range(100, 400))  # 200 shared of 400 distinct: J = 0.5
    signatures, _ = Signer(config)([left, right])
    agreement = float(np.mean(signatures[0] == signatures[1]))
    assert abs(agreement - 0.5) < 0.1  # 256 permutations: standard error about 0.03
