"""Print the S-curve of a MinHash-LSH banding: the chance that two documents of a given Jaccard
similarity share a bucket.

    python -m pipeline.dedup                 # the fineweb preset: 14 bands x 8 rows
    python -m pipeline.dedup --preset nemo
    python -m pipeline.dedup --bands 9 --rows 13
"""

from __future__ import annotations

import argparse

from pipeline.dedup.config import MinHashConfig
from pipeline.dedup.lsh import describe_s_curve

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--preset", choices=["fineweb", "nemo"], default="fineweb")
parser.add_argument("--bands", type=int)
parser.add_argument("--rows", type=int)
args = parser.parse_args()
preset = MinHashConfig(preset=args.preset)
print(describe_s_curve(args.bands or preset.bands, args.rows or preset.rows))
