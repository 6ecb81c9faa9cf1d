"""One text edit (compute_edit + apply, statistics cached, one torch thread) under the defaults
and under the defaults before (six prefixes, lr 0.5), back to back in one process, on the first
N facts of benchmarks/data/facts.json at layer 6. Prints per-setting medians and steps.

    .venv/bin/python benchmarks/text_defaults_speed.py 6
"""
import json
import os
import statistics as st
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from text_edits import DATA, fact_of  # noqa: E402  (this folder is on sys.path as the script's)

from rewidget.session.facts import SIX_PREFIXES  # noqa: E402
from rewidget.session.text import TextRewriteSession  # noqa: E402

torch.set_num_threads(1)
CFGS = {"defaults": {}, "lr 0.5": {"value_options": {"lr": 0.5}},
        "six prefixes, lr 0.5 (the defaults before)":
            {"prefixes": SIX_PREFIXES, "value_options": {"lr": 0.5}}}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    s = TextRewriteSession("smollm2")
    facts = json.loads(DATA.read_text())["facts"][:n]
    layer = "layers.6.mlp.down_proj"
    s.compute_edit(s.request(fact_of(facts[0]), layer=layer))  # statistics into memory
    res = {k: [] for k in CFGS}
    for f in facts:
        for name, kw in CFGS.items():
            req = s.request(fact_of(f), layer=layer, **kw)
            t0 = time.perf_counter()
            e = s.compute_edit(req)
            s.apply(e)
            res[name].append((time.perf_counter() - t0, len(e.report["values"][0]["trace"])))
            s.reset()
    print("load average", os.getloadavg())
    for name, r in res.items():
        print(f"{name}: median {st.median(x[0] for x in r):.2f} s, steps {[x[1] for x in r]}")


if __name__ == "__main__":
    main()
