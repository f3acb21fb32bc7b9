"""Merge the JSON files written by the former benchmarks/protocol.py (restore bench writes summary.md itself) into one Markdown table, each method beside the
classical baseline on the same images.

    python benchmarks/summarize.py benchmarks/results/*.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

from restore.bench.suite import TASKS


def main(paths: list[str]) -> None:
    rows, priors = [], {}
    for path in paths:
        data = json.loads(open(path).read())
        for row in data["rows"]:
            row["prior"] = data["args"]["prior"] if row["method"] != "baseline" else "–"
            rows.append(row)
    baseline = {(r["task"], r["image"]): r for r in rows if r["method"] == "baseline"}
    groups = defaultdict(list)
    for r in rows:
        if r["method"] != "baseline":
            groups[(r["task"], r["method"], r["prior"])].append(r)
    print("| task | method | prior | images | PSNR | SSIM | baseline PSNR (same images) | NFE | s/image |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (task, method, prior), sel in sorted(groups.items(), key=lambda kv: (list(TASKS).index(kv[0][0]), kv[0][2], kv[0][1])):
        mean = lambda key, items=sel: sum(r[key] for r in items) / len(items)  # noqa: E731
        base = [baseline[(task, r["image"])] for r in sel if (task, r["image"]) in baseline]
        base_psnr = f"{sum(b['psnr'] for b in base) / len(base):.2f}" if len(base) == len(sel) else "–"
        print(f"| {task} | {method} | {prior} | {len(sel)} | {mean('psnr'):.2f} | {mean('ssim'):.4f} | {base_psnr} | "
              f"{sel[0]['nfe']} | {mean('seconds'):.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
