#!/usr/bin/python3
"""mktokens.py --model DIR --out FILE.npy [--rows 4] [--cols 80] [--seed 0]
Seed-fixed uniform random token ids in [0, vocab_size) (vocab_size read from DIR/config.json),
saved as a 2-D int32 .npy (one window per row)."""
import argparse
import json
import os

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--rows", type=int, default=4)
ap.add_argument("--cols", type=int, default=80)
ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
with open(os.path.join(a.model, "config.json")) as f:
    V = json.load(f)["vocab_size"]
ids = np.random.default_rng(a.seed).integers(0, V, size=(a.rows, a.cols), dtype=np.int64).astype(np.int32)
np.save(a.out, ids)
