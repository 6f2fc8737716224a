#!/usr/bin/python3
"""The hnswlib anchor for vector search: Debian's python3-hnswlib, one
thread, over the vectors a Go benchmark wrote (vindextest.WriteFile: magic
KVDBVEC1, n and dim as uint32 LE, n*dim float32 LE).

It builds an index (inner product on the unit vectors, which is cosine),
answers the queries at each ef, and prints one JSON object per line:
the build, then one line per ef with queries/s and recall@k against the
exact answers (read from --gt, uint32 LE k per query, or computed here with
numpy), then save and load times. Single-threaded throughout, so a Go
figure on one core compares with it directly.

    apt-get install python3-hnswlib python3-numpy
    /usr/bin/python3 cmd/kvdb-bench/hnswlib_anchor.py BASE QUERIES [--gt GT]
"""
import argparse
import json
import os
import resource
import sys
import tempfile
import time

import hnswlib
import numpy as np


def read_vectors(path):
    with open(path, "rb") as f:
        hdr = f.read(16)
    if hdr[:8] != b"KVDBVEC1":
        sys.exit(f"{path}: not a vector file")
    n = int.from_bytes(hdr[8:12], "little")
    dim = int.from_bytes(hdr[12:16], "little")
    data = np.fromfile(path, dtype="<f4", offset=16)
    if data.size != n * dim:
        sys.exit(f"{path}: {data.size} values, want {n * dim}")
    return data.reshape(n, dim)


def exact(base, queries, k):
    out = np.empty((len(queries), k), dtype=np.int64)
    for lo in range(0, len(queries), 100):
        s = queries[lo:lo + 100] @ base.T
        top = np.argpartition(-s, k, axis=1)[:, :k]
        for r in range(len(top)):
            row = top[r][np.lexsort((top[r], -s[r, top[r]]))]
            out[lo + r] = row
    return out


def rss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("queries")
    ap.add_argument("--gt", help="exact answers, uint32 LE, k per query")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef", default="32,64,128")
    ap.add_argument("--rounds", type=int, default=2, help="passes over the queries per ef")
    a = ap.parse_args()

    base = read_vectors(a.base)
    queries = read_vectors(a.queries)
    if a.gt:
        gt = np.fromfile(a.gt, dtype="<u4").reshape(len(queries), -1)[:, :a.k]
    else:
        gt = exact(base, queries, a.k)

    n, dim = base.shape
    rss0 = rss_kib()
    idx = hnswlib.Index(space="ip", dim=dim)
    idx.init_index(max_elements=n, M=a.m, ef_construction=a.ef_construction, random_seed=100)
    idx.set_num_threads(1)
    t = time.perf_counter()
    idx.add_items(base, np.arange(n), num_threads=1)
    build = time.perf_counter() - t
    grow = (rss_kib() - rss0) * 1024
    print(json.dumps({"lib": "hnswlib", "n": n, "dim": dim, "build_s": round(build, 2),
                      "inserts_per_s": round(n / build), "rss_bytes_per_vector": round(grow / n)}), flush=True)

    for ef in [int(e) for e in a.ef.split(",")]:
        idx.set_ef(ef)
        idx.knn_query(queries[:100], k=a.k, num_threads=1)  # warm
        t = time.perf_counter()
        for _ in range(a.rounds):
            labels, _ = idx.knn_query(queries, k=a.k, num_threads=1)
        el = time.perf_counter() - t
        hits = sum(len(set(labels[q]) & set(gt[q])) for q in range(len(queries)))
        # One call per query, as a server answers them: the Python call's
        # cost is in this figure, not in the batched one.
        t = time.perf_counter()
        for q in queries:
            idx.knn_query(q, k=a.k, num_threads=1)
        single = time.perf_counter() - t
        print(json.dumps({"lib": "hnswlib", "ef": ef, "queries_per_s": round(a.rounds * len(queries) / el),
                          "queries_per_s_one_call_each": round(len(queries) / single),
                          "recall": round(hits / gt.size, 4)}), flush=True)

    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "index.bin")
        t = time.perf_counter()
        idx.save_index(p)
        save = time.perf_counter() - t
        size = os.path.getsize(p)
        del idx
        t = time.perf_counter()
        idx = hnswlib.Index(space="ip", dim=dim)
        idx.load_index(p, max_elements=n)
        load = time.perf_counter() - t
    print(json.dumps({"lib": "hnswlib", "save_s": round(save, 3), "load_s": round(load, 3),
                      "file_bytes_per_vector": round(size / n)}), flush=True)


if __name__ == "__main__":
    main()
