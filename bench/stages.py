"""Where a lone request's time goes, stage by stage, for one short text on the default model.
Each request is the next of the benchmark's short texts (10-15 tokens), as a lone client's
questions differ in length.

    python bench/stages.py [--model ID] [--precision auto] [--requests 400]

Each stage is timed on its own in this process with the server's real parts (median of many
runs; the batcher and the serving layer with the pass left out, so that the pass's own
variation does not swamp them), and the whole request end to end against a real `embedserve
serve` on the same settings, over one kept-alive connection as bench/load.py's lone client
sends it; what the stages do not account for is the HTTP server and the framework. Beside it,
taking turns, the floor (bench/floor_server.py: the same pass behind a bare ASGI function)
and llama.cpp's server where bench/setup_llama_cpp.sh built it. Never a test: tables for
docs/performance.md."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np

from corpus import short_texts
from run import machine

TEXTS = short_texts(400)


def cycled(items: list[Any]) -> Callable[[], Any]:
    """The next of `items` at each call, round and round."""
    it = itertools.cycle(items)
    return lambda: next(it)


def median_us(run: Callable[[], object], count: int) -> float:
    for _ in range(min(20, count)):
        run()
    times = []
    for _ in range(count):
        started = time.perf_counter_ns()
        run()
        times.append(time.perf_counter_ns() - started)
    return statistics.median(times) / 1000


async def median_us_async(run: Callable[[], Awaitable[object]], count: int) -> float:
    for _ in range(min(20, count)):
        await run()
    times = []
    for _ in range(count):
        started = time.perf_counter_ns()
        await run()
        times.append(time.perf_counter_ns() - started)
    return statistics.median(times) / 1000


def in_process(model: str | None, precision: str, count: int) -> dict[str, float]:
    """Each stage's median in microseconds, with the server's own parts."""
    import orjson

    from embedserve.api.encoding import render_json
    from embedserve.api.openai_protocol import EmbeddingRequest, embed_request, embeddings_body
    from embedserve.backends.packing import lay_out
    from embedserve.config import ModelSpec, Settings
    from embedserve.engine.batcher import coarse_width, pad
    from embedserve.engine.loading import build_registry
    from embedserve.engine.registry import ServedModel
    from embedserve.serving.policy import Serving

    settings = Settings(precision=precision)  # type: ignore[arg-type]
    if model:
        settings = Settings(models=[ModelSpec(ref=model)], precision=precision)  # type: ignore[arg-type]
    registry = build_registry(settings)
    served: ServedModel = registry.models[0]
    embedder: Any = served.load()
    serving = Serving.build(settings, registry)
    bodies = cycled([orjson.dumps({"input": text, "model": served.id}) for text in TEXTS])
    stages: dict[str, float] = {}
    stages["parse and validate the body"] = median_us(
        lambda: embed_request(EmbeddingRequest.model_validate_json(bodies())), count
    )
    text = cycled(TEXTS)
    stages["tokenize"] = median_us(lambda: embedder.tokenize([text()], True), count)
    sequences = [embedder.tokenize([t], True)[0] for t in TEXTS]
    limits = embedder.batcher.limits

    def width(sequence: list[int]) -> int:  # as the batcher lays it out
        return coarse_width(len(sequence)) if limits.coarse_widths else len(sequence)

    backend = embedder.backend
    if getattr(backend, "packs", False):
        run = backend.every_core_packed if backend.every_core_pass else backend.embed_packed
        packed = cycled([(lay_out([[s]], width(s)),) for s in sequences])
    else:
        run = backend.every_core_pass or backend.embed
        packed = cycled([pad([s], embedder.tokenizer.pad_id, width=width(s)) for s in sequences])
    stages["the pass (on every core where offered)"] = median_us(lambda: run(*packed()), count)

    def instant(*args: Any) -> np.ndarray:
        """A pass that computes nothing: what is left of a round trip is the machinery's."""
        rows = len(args[0].spans) if len(args) == 1 else len(args[0])
        return np.zeros((rows, embedder.dimension), dtype=np.float32)

    async def measured() -> None:
        loop = asyncio.get_running_loop()
        hop = await median_us_async(lambda: loop.run_in_executor(None, lambda: None), count)
        stages["a thread hop and back (tokenizer's executor)"] = hop
        requests = cycled(
            [embed_request(EmbeddingRequest.model_validate_json(bodies())) for _ in TEXTS]
        )
        result = await serving.embed(requests())
        stages["serialize the answer"] = median_us(
            lambda: render_json(embeddings_body(result, "float")), count
        )
        embedder.batcher._run = instant  # the pass is timed above, on its own
        embedder.batcher._every_core_pass = instant
        sequence = cycled(sequences)
        stages["batcher round trip, the pass left out (queue, hand-offs)"] = await median_us_async(
            lambda: embedder.batcher.submit([sequence()]), count
        )
        stages[
            "serving layer, the pass left out (tokenizing, checks, batcher)"
        ] = await median_us_async(lambda: serving.embed(requests()), count)

    asyncio.run(measured())
    embedder.close()
    return stages


Started = tuple[subprocess.Popen[bytes], http.client.HTTPConnection]


def _start(command: list[str], port: int) -> Started:
    """A server process and a kept-alive connection to it, once it answers GET /ready 200."""
    server = subprocess.Popen(command)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    deadline = time.monotonic() + 300
    while True:
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise RuntimeError(f"{command[0]} did not get ready")
        try:
            connection.request("GET", "/ready" if "llama" not in command[0] else "/health")
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                return server, connection
        except (OSError, http.client.HTTPException):
            connection.close()
        time.sleep(0.5)


def end_to_end(
    model: str | None, precision: str, count: int, rounds: int = 3
) -> tuple[dict[str, float], float]:
    """The lone-request p50 over TEXTS, in microseconds, of a real `embedserve serve`, of the
    floor (bench/floor_server.py: the same pass behind a bare ASGI function) and of llama.cpp's
    server where bench/setup_llama_cpp.sh built it (MiniLM only), in `rounds` taking turns; and
    embedserve's GET /health round trip."""
    here = Path(__file__).resolve().parent
    options = ["--precision", precision, *(["--model", model] if model else [])]
    commands = {
        "embedserve serve": [
            *[sys.executable, "-m", "embedserve", "serve", "--port", "5391"],
            *["--no-access-log", "--log-level", "warning", *options],
        ],
        "the floor (bench/floor_server.py)": [
            sys.executable,
            str(here / "floor_server.py"),
            "5392",
            *options,
        ],
    }
    llama = here / ".llama-cpp"
    if model is None and (llama / "llama-server").exists():
        commands["llama.cpp's server"] = [
            str(llama / "llama-server"), "-m", str(llama / "minilm-bf16.gguf"), "--embedding",
            "--pooling", "mean", "-np", "16", "-b", "1024", "-ub", "1024", "-t",
            str(len(os.sched_getaffinity(0))), "--no-webui", "--host", "127.0.0.1",
            "--port", "5393",
        ]  # fmt: skip
    started: dict[str, Started] = {}
    try:
        for (name, command), port in zip(commands.items(), (5391, 5392, 5393), strict=False):
            started[name] = _start(command, port)
        body = cycled([json.dumps({"input": text, "model": "bench"}) for text in TEXTS])

        def post(connection: http.client.HTTPConnection) -> None:
            connection.request(
                "POST", "/v1/embeddings", body(), {"Content-Type": "application/json"}
            )
            assert connection.getresponse().read()

        times: dict[str, list[float]] = {name: [] for name in started}
        for _ in range(rounds):
            for name, (_, connection) in started.items():
                times[name].append(median_us(partial(post, connection), count))
        _, ours = started["embedserve serve"]

        def health() -> None:
            ours.request("GET", "/health")
            ours.getresponse().read()

        return {name: statistics.median(t) for name, t in times.items()}, median_us(health, count)
    finally:
        for server, _ in started.values():
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="default: the embedded MiniLM")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    stages = in_process(args.model, args.precision, args.requests)
    lone, health = end_to_end(args.model, args.precision, args.requests)
    whole = lone["embedserve serve"]
    stages["GET /health round trip (HTTP and framework floor)"] = health
    accounted = stages["parse and validate the body"] + stages["serialize the answer"]
    accounted += stages["serving layer, the pass left out (tokenizing, checks, batcher)"]
    accounted += stages["the pass (on every core where offered)"]
    stages["HTTP server, framework and the rest (end to end less the above)"] = whole - accounted
    stages["end to end (POST /v1/embeddings, one short text)"] = whole
    print(f"Machine: {machine()}; model {args.model or 'MiniLM (default)'}, {args.precision}\n")
    print("| stage | median us |\n| --- | ---: |")
    for name, value in stages.items():
        print(f"| {name} | {value:,.0f} |")
    print("\nOne short text end to end, the servers taking turns (median of the rounds' p50s):\n")
    print("| server | p50 us | vs llama.cpp's |\n| --- | ---: | ---: |")
    peer = lone.get("llama.cpp's server")
    for name, value in lone.items():
        ratio = f"{value / peer:.2f}x" if peer else "-"
        print(f"| {name} | {value:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
