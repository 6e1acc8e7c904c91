"""How near the exact (fp32) engine runs to this CPU's limit, measured side by side in one run.

    python bench/gemm_bound.py [--rows 15] [--width 14] [--passes 200]

One ONNX Runtime thread runs the served fp32 graph of the packaged all-MiniLM-L6-v2 on a batch
shaped like those the batcher forms at 16 clients x 8 short texts, with ONNX Runtime's profiler
on. It prints each operator's share of the pass and the GFLOP/s of the weight products, beside
numpy (OpenBLAS) and torch running the same products, and a large square one, on one thread each.
Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from embedserve.backends.onnx_build import cached_onnx_model
from embedserve.models.cache import default_cache_dir
from embedserve.models.source import resolve

Product = tuple[int, int, int]  # (tokens, in, out)


@dataclass
class Profile:
    micros: dict[str, float]  # kernel time per pass by operator type
    products: dict[tuple[int, int], float]  # of it, the weight products' by (in, out) shape
    nodes: Counter[tuple[int, int]]  # weight products of each shape in the graph

    @property
    def total(self) -> float:
        return sum(self.micros.values()) + sum(self.products.values())


def profiled_pass(model: Path, rows: int, width: int, passes: int) -> Profile:
    """The kernel time of `passes` passes of a `rows` x `width` batch, per pass, by operator."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(model), load_external_data=False).graph
    weights = {w.name: (w.dims[0], w.dims[1]) for w in graph.initializer if len(w.dims) == 2}
    shapes = {
        node.name: weights[node.input[1]]
        for node in graph.node
        if node.op_type == "MatMul" and node.input[1] in weights
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as scratch:
        options.profile_file_prefix = str(Path(scratch) / "pass")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        ids = np.random.default_rng(0).integers(2000, 20000, (rows, width))
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids}
        feeds = {i.name: feeds[i.name] for i in session.get_inputs()}
        for _ in range(passes):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    profile = Profile(defaultdict(float), defaultdict(float), Counter(shapes.values()))
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name.removesuffix("_kernel_time")
        if node in shapes:
            profile.products[shapes[node]] += event["dur"] / passes
        else:
            op = event["args"]["op_name"]
            op = "MatMul of activations (attention)" if op == "MatMul" else op
            profile.micros[op] += event["dur"] / passes
    return profile


def best_gflops(product: Callable[[], object], flop: float, seconds: float = 1.0) -> float:
    """GFLOP/s of the quickest of three timed stretches of `product`."""
    product()
    reps = max(3, int(seconds * 1e11 / flop / 3))
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(reps):
            product()
        best = min(best, (time.perf_counter() - started) / reps)
    return flop / best / 1e9


def library_rows(products: list[Product]) -> list[tuple[str, Product, float]]:
    """GFLOP/s of numpy's BLAS and of torch on `products`, one thread each."""
    import torch

    torch.set_num_threads(1)
    rows = []
    rng = np.random.default_rng(0)
    with threadpool_limits(1), torch.inference_mode():
        for tokens, n_in, n_out in products:
            a = rng.random((tokens, n_in), dtype=np.float32)
            b = rng.random((n_in, n_out), dtype=np.float32)
            flop = 2.0 * tokens * n_in * n_out
            for engine, product in (
                ("numpy (OpenBLAS)", partial(np.matmul, a, b)),
                ("torch", partial(torch.matmul, torch.from_numpy(a), torch.from_numpy(b))),
            ):
                rows.append((engine, (tokens, n_in, n_out), best_gflops(product, flop)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--width", type=int, default=14)
    parser.add_argument("--passes", type=int, default=200)
    args = parser.parse_args()

    source = resolve(None)  # the packaged default, from the cache the server builds and serves
    model = cached_onnx_model(source.files, "fp32", default_cache_dir(), name=source.id)
    tokens = args.rows * args.width
    profile = profiled_pass(model, args.rows, args.width, args.passes)
    total, weights = profile.total, sum(profile.products.values())
    print(f"Pass: {args.rows} rows x {args.width} tokens on one thread, {total / 1e3:.2f} ms")
    print(f"of kernels ({tokens / total * 1e6:,.0f} tokens/s).\n")
    print("| operator | share of the pass |")
    print("| --- | ---: |")
    print(f"| MatMul on the model's weights | {weights / total:.1%} |")
    for op, micros in Counter(profile.micros).most_common(8):
        print(f"| {op} | {micros / total:.1%} |")
    print(
        f"\nWith every other operator free, the pass would be {total / weights - 1:.0%} faster.\n"
    )

    print("| engine | product (tokens x in) . (in x out) | GFLOP/s, one thread |")
    print("| --- | --- | ---: |")
    products = [(tokens, n_in, n_out) for n_in, n_out in sorted(profile.products)]
    for t, n_in, n_out in products:
        flop = 2.0 * t * n_in * n_out * profile.nodes[n_in, n_out]
        gflops = flop / profile.products[n_in, n_out] / 1e3
        print(
            f"| ONNX Runtime (MLAS), in the pass | {t} x {n_in} . {n_in} x {n_out} | {gflops:.1f} |"
        )
    for engine, (t, n_in, n_out), gflops in library_rows([*products, (2048, 2048, 2048)]):
        print(f"| {engine} | {t} x {n_in} . {n_in} x {n_out} | {gflops:.1f} |")


if __name__ == "__main__":
    main()
