"""Where a lone request's time goes, stage by stage, for one short text on the default model.
Each request is the next of the benchmark's short texts (10-15 tokens), as a lone client's
questions differ in length.

    python bench/stages.py [--model ID] [--precision auto] [--requests 400]

Each stage is timed on its own in this process with the server's real parts (median of many
runs), and the whole request end to end against a real `embedserve serve` on the same
settings, over one kept-alive connection as bench/load.py's lone client sends it; what the
stages do not account for is the HTTP server and the framework. Never a test: a table for
docs/performance.md."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

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

    async def measured() -> None:
        loop = asyncio.get_running_loop()
        hop = await median_us_async(lambda: loop.run_in_executor(None, lambda: None), count)
        stages["a thread hop and back (tokenizer's executor)"] = hop
        sequence = cycled(sequences)
        through = await median_us_async(lambda: embedder.batcher.submit([sequence()]), count)
        stages["batcher: queue, former, compute hand-offs"] = (
            through - (stages["the pass (on every core where offered)"])
        )
        requests = cycled(
            [embed_request(EmbeddingRequest.model_validate_json(bodies())) for _ in TEXTS]
        )
        whole = await median_us_async(lambda: serving.embed(requests()), count)
        result = await serving.embed(requests())
        stages["serialize the answer"] = median_us(
            lambda: render_json(embeddings_body(result, "float")), count
        )
        stages["serving layer, in all"] = whole

    asyncio.run(measured())
    embedder.close()
    return stages


def end_to_end(model: str | None, precision: str, count: int) -> tuple[float, float]:
    """A real server's lone-request p50 over TEXTS, and GET /health's, in microseconds."""
    port = 5391
    command = [sys.executable, "-m", "embedserve", "serve", "--port", str(port)]
    command += ["--no-access-log", "--log-level", "warning", "--precision", precision]
    command += ["--model", model] if model else []
    server = subprocess.Popen(command)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        deadline = time.monotonic() + 300
        while True:
            assert time.monotonic() < deadline, "the server did not get ready"
            try:
                connection.request("GET", "/ready")
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    break
            except (OSError, http.client.HTTPException):
                connection.close()
            time.sleep(0.5)
        body = cycled([json.dumps({"input": text, "model": "bench"}) for text in TEXTS])

        def post() -> None:
            connection.request(
                "POST", "/v1/embeddings", body(), {"Content-Type": "application/json"}
            )
            assert connection.getresponse().read()

        def health() -> None:
            connection.request("GET", "/health")
            connection.getresponse().read()

        return median_us(post, count), median_us(health, count)
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="default: the embedded MiniLM")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    stages = in_process(args.model, args.precision, args.requests)
    whole, health = end_to_end(args.model, args.precision, args.requests)
    stages["GET /health round trip (HTTP and framework floor)"] = health
    accounted = stages["parse and validate the body"] + stages["serialize the answer"]
    accounted += stages["serving layer, in all"]
    stages["HTTP server, framework and the rest"] = whole - accounted
    stages["end to end (POST /v1/embeddings, one short text)"] = whole
    print(f"Machine: {machine()}; model {args.model or 'MiniLM (default)'}, {args.precision}\n")
    print("| stage | median us |\n| --- | ---: |")
    for name, value in stages.items():
        print(f"| {name} | {value:,.0f} |")


if __name__ == "__main__":
    main()
