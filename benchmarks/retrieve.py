"""Scale benchmark for nearest-case retrieval: synthetic descriptors of the embedder's size.

  python benchmarks/retrieve.py                       # 1M cases, flat + HNSW, 200 queries
  python benchmarks/retrieve.py --n 100000 --kinds flat,hnsw,numpy --json out.json

Descriptors mimic the real ones: L2-normalised, drawn around 2,000 random cluster centres (one per
"patient"), so neighbourhoods have structure like real case libraries. Queries are fresh draws from
the same distribution (not library members). For each index it reports build time, memory per case,
single-query latency p50 / p99 (one query at a time, as in the widget), and recall@10 against exact
search. It also times the whole library API (CaseLibrary.search_vectors on top of the index) and,
with --embed, one embedder forward pass (the rest of a query's cost).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def rss_mb() -> float:
    """Return this process's resident set size in MB from /proc (NaN where unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def synthetic(n: int, dim: int, n_centres: int, seed: int, spread: float = 0.35) -> np.ndarray:
    """Draw n L2-normalised descriptors scattered around n_centres random unit centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_centres, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    step = 200_000
    for s in range(0, n, step):
        m = min(step, n - s)
        c = centres[rng.integers(0, n_centres, m)]
        v = c + spread * rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
        out[s : s + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def latencies(fn, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Search one query at a time after a warm-up; return per-query milliseconds and the top-k ids."""
    fn(queries[:1], k)  # warm-up
    times, ids = [], []
    for i in range(len(queries)):
        t = time.perf_counter()
        _, found = fn(queries[i : i + 1], k)
        times.append((time.perf_counter() - t) * 1000)
        ids.append(found[0])
    return np.asarray(times), np.asarray(ids)


def main(argv=None):
    """Build each index kind over synthetic descriptors, time queries and recall@k, and return the report."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=0, help="default: the shipped embedder's descriptor size")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--kinds", default="flat,hnsw")
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=128)
    ap.add_argument("--ef-search", default="32,64,128,256")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--centres", type=int, default=2000)
    ap.add_argument("--embed", action="store_true", help="also time one embedder forward pass")
    ap.add_argument(
        "--no-library", action="store_true", help="skip the CaseLibrary end-to-end timing (it builds its own index)"
    )
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)

    import faiss

    from napari_medai.retrieval import library as L
    from napari_medai.retrieval.embedder import PixelEmbedder, descriptor_dim

    faiss.omp_set_num_threads(a.threads)
    dim = a.dim
    if not dim:
        try:
            from napari_medai.runtime.registry import get_card

            dim = descriptor_dim(get_card("embedder-brain-mri").arch_params)
        except Exception:  # noqa: BLE001
            dim = 128
    report = {"n": a.n, "dim": dim, "queries": a.queries, "k": a.k, "threads": a.threads,
              "cpu": platform.processor() or platform.machine(), "faiss": faiss.__version__, "results": []}
    t = time.perf_counter()
    x = synthetic(a.n, dim, a.centres, seed=0)
    q = synthetic(a.queries, dim, a.centres, seed=0)[: a.queries]  # same centres (seed), fresh noise below
    q = q + 0.02 * np.random.default_rng(1).standard_normal(q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    print(f"data {a.n} x {dim} in {time.perf_counter() - t:.1f}s", flush=True)

    # exact ground truth (batched)
    t = time.perf_counter()
    flat = faiss.IndexFlatL2(dim)
    flat.add(x)
    _, gt = flat.search(q, a.k)
    print(f"ground truth in {time.perf_counter() - t:.1f}s", flush=True)

    def recall(ids):
        return float(np.mean([len(set(r) & set(g)) / a.k for r, g in zip(ids, gt)]))

    emb = PixelEmbedder(4)
    emb.dim = dim
    for kind in a.kinds.split(","):
        kind = kind.strip()
        r0 = rss_mb()
        t = time.perf_counter()
        if kind == "flat":
            index = faiss.IndexFlatL2(dim)
            index.add(x)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, a.hnsw_m)
            index.hnsw.efConstruction = a.ef_construction
            index.add(x)
        elif kind == "numpy":
            index = None
        else:
            raise SystemExit(f"unknown kind {kind}")
        build = time.perf_counter() - t
        mem = rss_mb() - r0
        if index is not None:
            nbytes = len(faiss.serialize_index(index)) if kind == "hnsw" else a.n * dim * 4
        else:
            nbytes = a.n * dim * 4
        settings = [int(e) for e in a.ef_search.split(",")] if kind == "hnsw" else [None]
        for ef in settings:
            if kind == "numpy":
                from napari_medai.retrieval.metrics import pairwise_sq_dists

                def fn(qq, k):
                    d = pairwise_sq_dists(qq, x)
                    i = np.argpartition(d, k, axis=1)[:, :k]
                    o = np.argsort(np.take_along_axis(d, i, 1), axis=1)
                    return None, np.take_along_axis(i, o, 1)
            else:
                if ef is not None:
                    index.hnsw.efSearch = ef
                fn = index.search
            n_q = min(a.queries, 50) if kind == "numpy" else a.queries
            ms, ids = latencies(fn, q[:n_q], a.k)
            res = {"index": kind, "ef_search": ef, "build_s": round(build, 2),
                   "bytes_per_case": round(nbytes / a.n, 1), "rss_increase_mb": round(mem, 1),
                   "p50_ms": round(float(np.percentile(ms, 50)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4),
                   f"recall_at_{a.k}": round(recall(ids), 4), "queries_timed": n_q}
            print(json.dumps(res), flush=True)
            report["results"].append(res)

    # the library API end to end (flat below the threshold, HNSW above); adding vectors copies them once
    if not a.no_library:
        lib = L.CaseLibrary(emb, index="auto")
        t = time.perf_counter()
        lib.add_vectors(x, np.zeros(a.n, dtype=np.int8).astype(str))
        add_s = time.perf_counter() - t
        t = time.perf_counter()
        lib.search_vectors(q[:1], a.k)  # builds the index
        idx_s = time.perf_counter() - t
        ms, ids = latencies(lib.search_vectors, q, a.k)
        res = {"index": f"CaseLibrary(auto -> {lib.summary()['index']})", "add_vectors_s": round(add_s, 2),
               "index_build_s": round(idx_s, 2), "p50_ms": round(float(np.percentile(ms, 50)), 4),
               "p99_ms": round(float(np.percentile(ms, 99)), 4),
               f"recall_at_{a.k}": round(
                   float(np.mean([len(set((r - 1).tolist()) & set(g)) / a.k for r, g in zip(ids, gt)])), 4
               )}
        print(json.dumps(res), flush=True)
        report["results"].append(res)
        del lib

    if a.embed:
        import torch

        from napari_medai.retrieval.embedder import get_embedder

        torch.set_num_threads(a.threads)
        e = get_embedder("embedder-brain-mri", device="cpu")
        img = np.random.default_rng(0).integers(0, 255, (512, 512)).astype(np.uint8)
        e.embed_prepared(e.prepare(img)[None])
        ts = []
        for _ in range(20):
            t = time.perf_counter()
            e.embed_prepared(e.prepare(img)[None])
            ts.append((time.perf_counter() - t) * 1000)
        res = {"embed_one_512px_image_ms_p50": round(float(np.median(ts)), 2)}
        print(json.dumps(res), flush=True)
        report["embed"] = res
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
