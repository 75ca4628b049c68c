"""How well MinHash-LSH dedup finds near duplicates, measured against exact Jaccard similarity.

The corpus is the labelled one of ``dedup_corpus.py`` (real text, planted copies). For every
candidate pair (two documents of one planted family, or of one cluster either side produced) we
compute the exact word 5-gram Jaccard similarity of their normalized texts, then report:

- recall at J >= 0.8 and J >= 0.9: the share of such pairs that ended in one cluster;
- precision: the share of removed documents whose survivor has J >= 0.7 with them;
- the share of pairs caught per J bin, beside the S-curve's prediction for a direct comparison.

Ours (FineWeb preset, exact hashing included, on a local 2-CPU Ray) and the datasketch baseline
(same shingles, bands and rows) run on the same documents in this one process.

    .venv/bin/python benchmarks/dedup_quality.py                # 20,000 documents
    .venv/bin/python benchmarks/dedup_quality.py --docs 100000
"""

from __future__ import annotations

import argparse
import platform
import sys
from itertools import combinations
from pathlib import Path

# Run as a script, Python puts this folder first on the path, where benchmarks/tokenize.py would
# shadow the standard library's tokenize; import from the repository root instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.dedup_corpus import generate  # noqa: E402
from benchmarks.dedup_sides import Outcome, as_dataset, datasketch_pool, run_datasketch, run_ours, start_local_ray  # noqa: E402
from pipeline.dedup import DedupConfig  # noqa: E402
from pipeline.dedup.lsh import s_curve  # noqa: E402
from pipeline.dedup.normalize import normalize  # noqa: E402
from pipeline.dedup.shingles import shingle_strings, units  # noqa: E402

TARGETS = {"recall@0.8": 0.92, "recall@0.9": 0.99, "precision": 0.99}
BINS = [(0.0, 0.5), (0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0), (1.0, 1.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = DedupConfig()
    corpus = generate(args.docs, seed=args.seed)
    print(f"corpus: {args.docs} documents, {len(corpus.families())} families, seed {args.seed}; python {platform.python_version()}")
    start_local_ray(object_store_gb=2)
    ours, _ = run_ours(as_dataset(corpus.table), config)
    with datasketch_pool() as pool:
        baseline = run_datasketch(corpus.table, config.minhash, pool)

    texts = dict(zip(corpus.table["id"].to_pylist(), corpus.table["text"].to_pylist()))
    shingle_sets: dict[str, set[str]] = {}

    def jaccard(a: str, b: str) -> float:
        for doc in (a, b):
            if doc not in shingle_sets:
                text = normalize(texts[doc], config.minhash.normalize)
                shingle_sets[doc] = set(shingle_strings(units(text, config.minhash), config.minhash))
        x, y = shingle_sets[a], shingle_sets[b]
        return len(x & y) / len(x | y) if x | y else 1.0

    groups = [members for members in corpus.families().values() if len(members) > 1]
    for outcome in (ours, baseline):
        groups += clusters(outcome).values()
    pairs = {tuple(sorted(pair)) for members in groups for pair in combinations(sorted(members), 2)}
    similarity = {pair: jaccard(*pair) for pair in pairs}
    print(f"candidate pairs: {len(pairs)}; exact Jaccard computed for each\n")

    curve = s_curve(config.minhash.bands, config.minhash.rows, tuple((lo + hi) / 2 for lo, hi in BINS))
    print(f"{'J bin':<12}{'pairs':>8}{'S-curve':>10}{'ours':>8}{'datasketch':>12}")
    for lo, hi in BINS:
        in_bin = [p for p, j in similarity.items() if (lo <= j < hi) or (lo == hi == j)]
        label = f"{lo:.1f}" if lo == hi else f"[{lo:.1f},{hi:.1f})"
        rates = [caught_share(outcome, in_bin) for outcome in (ours, baseline)]
        print(f"{label:<12}{len(in_bin):>8}{curve[(lo + hi) / 2]:>10.3f}{rates[0]:>8.3f}{rates[1]:>12.3f}")

    print(f"\n{'metric':<14}{'target':>8}{'ours':>8}{'datasketch':>12}")
    for name, target in TARGETS.items():
        values = [metric(name, outcome, similarity, jaccard) for outcome in (ours, baseline)]
        verdict = "met" if values[0] >= target else "MISSED"
        print(f"{name:<14}{target:>8.2f}{values[0]:>8.4f}{values[1]:>12.4f}   {verdict}")
    print(f"{'removed':<14}{'':>8}{len(ours.survivor_of):>8}{len(baseline.survivor_of):>12}")
    print(f"{'seconds':<14}{'':>8}{ours.seconds:>8.1f}{baseline.seconds:>12.1f}")


def clusters(outcome: Outcome) -> dict[str, list[str]]:
    members: dict[str, list[str]] = {}
    for removed, survivor in outcome.survivor_of.items():
        members.setdefault(survivor, [survivor]).append(removed)
    return members


def caught_share(outcome: Outcome, pairs: list[tuple[str, str]]) -> float:
    cluster = outcome.survivor_of.get
    return sum(cluster(a, a) == cluster(b, b) for a, b in pairs) / len(pairs) if pairs else float("nan")


def metric(name: str, outcome: Outcome, similarity: dict, jaccard) -> float:
    if name == "precision":
        removed = outcome.survivor_of.items()
        return sum(jaccard(doc, survivor) >= 0.7 for doc, survivor in removed) / max(1, len(removed))
    threshold = float(name.split("@")[1])
    return caught_share(outcome, [p for p, j in similarity.items() if j >= threshold])


if __name__ == "__main__":
    main()
