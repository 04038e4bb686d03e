"""Tables of the issue #20 runs (results/ms_run<R>_<tag>.json): figshare test folds and cross-source,
new recipe vs the shipped 1.3.0 embedder vs raw pixels, mean ± sample sd over runs / sources and pooled
over all queries.

  PYTHONPATH=src python training/retrieval/summarize_multisource.py [tag]     # default e24_s96_strong
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
KINDS = ("new", "shipped_1_3_0", "raw_pixels")


def stats(vals, weights):
    """Return the mean, sample sd (ddof=1; NaN for one value) and weighted (pooled) mean of vals."""
    v, w = np.asarray(vals, float), np.asarray(weights, float)
    sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
    return float(v.mean()), sd, float((v * w).sum() / w.sum())


def main(tag="e24_s96_strong"):
    """Print the figshare and cross-source tables over the tag's runs and write results/ms_summary_<tag>.json."""
    runs = sorted(HERE.glob(f"results/ms_run*_{tag}.json"))
    res = [json.loads(p.read_text()) for p in runs]
    out = {"tag": tag, "runs": [r["run"] for r in res], "figshare": {}, "cross_source": {}}
    print(f"runs: {[r['run']['run'] for r in res]}  train minutes {[round(r['train_minutes'], 1) for r in res]}")
    print("\nfigshare test folds (queries = fold F, library = other four folds)")
    cv130 = {}
    for r in res:
        F = r["run"]["figshare_test_fold"]
        f = HERE / "results" / f"fold{F}_cs_e60+cs_e60_seed1+cs_e60_s192.json"
        if f.exists():
            cv130[F] = json.loads(f.read_text())["metrics"]["overall"]
    for kind in KINDS + ("1.3.0 cross-validated",):
        rows = []
        for r in res:
            F = r["run"]["figshare_test_fold"]
            if kind == "1.3.0 cross-validated":
                if F not in cv130:
                    continue
                o = cv130[F]
            elif kind in r:
                o = r[kind]["figshare"]["overall"]
            else:
                continue
            rows.append((F, o["mAP"], o["P@10"], o["n_queries"]))
        if not rows:
            continue
        m = stats([x[1] for x in rows], [x[3] for x in rows])
        p = stats([x[2] for x in rows], [x[3] for x in rows])
        out["figshare"][kind] = {"per_fold": {x[0]: {"mAP": x[1], "P@10": x[2]} for x in rows},
                                 "mAP": m, "P@10": p}
        print(f"  {kind:22s} mAP {m[0]:.3f} ± {m[1]:.3f} (pooled {m[2]:.3f})  "
              f"P@10 {p[0]:.3f} ± {p[1]:.3f} (pooled {p[2]:.3f})"
              f"  per fold " + ", ".join(f"{x[0]}: {x[1]:.3f}" for x in rows))
    print("\ncross-source (library = figshare test fold + held-out source; queries = that source, leave-one-out)")
    for kind in KINDS:
        rows = []
        for r in res:
            for S, c in r.get(kind, {}).get("cross_source", {}).items():
                rows.append((S, c))
        if not rows:
            continue
        n = [c["overall"]["n_queries"] for _, c in rows]
        m = stats([c["overall"]["mAP"] for _, c in rows], n)
        p = stats([c["overall"]["P@10"] for _, c in rows], n)
        ch = stats([c["overall"]["chance_mAP"] for _, c in rows], n)
        out["cross_source"][kind] = {"per_source": {S: c for S, c in rows}, "mAP": m, "P@10": p, "chance": ch}
        print(f"  {kind:14s} mAP {m[0]:.3f} ± {m[1]:.3f} (pooled {m[2]:.3f})  "
              f"P@10 {p[0]:.3f} ± {p[1]:.3f} (pooled {p[2]:.3f})"
              f"  chance {ch[0]:.3f}")
        for S, c in rows:
            pc = "; ".join(f"{k} n={v['n_queries']} mAP {v['mAP']:.3f} P@10 {v['P@10']:.2f} "
                           f"chance {v['chance_mAP']:.3f}"
                           for k, v in c["per_class"].items())
            print(f"      {S:9s} mAP {c['overall']['mAP']:.3f} P@10 {c['overall']['P@10']:.3f}  [{pc}]")
    (HERE / "results" / f"ms_summary_{tag}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
