#!/usr/bin/python3
"""edit_config.py SRC_DIR DST_DIR key=JSON ...  copy a model directory and change config.json
fields (values are JSON: 16, null, true, "x").  The weights are hard-linked, not changed."""
import json
import os
import shutil
import sys

src, dst, *edits = sys.argv[1:]
if os.path.exists(dst):
    shutil.rmtree(dst)
os.makedirs(dst)
for f in os.listdir(src):
    if f != "config.json":
        try:
            os.link(os.path.join(src, f), os.path.join(dst, f))
        except OSError:
            shutil.copy2(os.path.join(src, f), os.path.join(dst, f))
with open(os.path.join(src, "config.json")) as f:
    cfg = json.load(f)
for e in edits:
    k, _, v = e.partition("=")
    cfg[k] = json.loads(v)
with open(os.path.join(dst, "config.json"), "w") as f:
    json.dump(cfg, f, indent=2)
    f.write("\n")
