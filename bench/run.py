"""Benchmark embedserve against Infinity and an h2oGPT-style server, side by side, in one run.

    python bench/run.py [--seconds 15] [--rounds 3] [--only "embedserve fp32,infinity"]

Every server is started at once on 127.0.0.1 (its own port) with the same packaged
all-MiniLM-L6-v2 folder; an idle one takes no CPU. Ray Serve's idle cluster does (~0.12 of a
core measured: 6% of a 2-core machine, taken from the server measured beside it), so it is
measured after the others have stopped, beside Infinity again for its ratio. Each load is
measured in rounds: every
round drives each server in turn (the order rotating) for its share of the seconds, so a drift in
this VM's speed falls on all of them alike. Prints a markdown table (and writes it to
bench/results/latest.md) with each ratio to Infinity over the whole run and its range over the
rounds, and to llama.cpp's native server where it ran. Infinity runs from its own virtual
environment (it pins numpy<2 and sentence-transformers<4): create it with
bench/setup_infinity.sh; llama.cpp's server and the model's bf16 GGUF come from
bench/setup_llama_cpp.sh. A peer not set up is skipped with a note. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import mixed_corpus, short_texts
from embedserve.models.source import resolve
from embedserve.models.tokenizer import ModelTokenizer
from load import Result, drive

HERE = Path(__file__).resolve().parent
INFINITY = "infinity (torch)"
LLAMA_CPP = "llama.cpp bf16"
EXTRA = os.environ.get("EMBEDSERVE_BENCH_ARGS", "").split()
INFINITY_VENV = Path(os.environ.get("INFINITY_VENV", HERE / ".venv-infinity"))
LLAMA_CPP_DIR = Path(os.environ.get("LLAMA_CPP_DIR", HERE / ".llama-cpp"))


MODES = {  # our servers: name -> (precision, backend)
    "embedserve default": ("auto", "auto"),  # bf16 on OpenVINO where the CPU has it, else fp32
    "embedserve fp32": ("fp32", "auto"),
    "embedserve int8": ("int8", "auto"),
    "embedserve int8 (ONNX Runtime)": ("int8", "onnx"),
}
ENGINES = {"onnx": "ONNX Runtime", "openvino": "OpenVINO", "torch": "torch"}


PORT = "{port}"  # stands for the server's port in its command


@dataclass
class Server:
    name: str
    command: list[str]
    path: str  # the embeddings route
    apart: bool = False  # busy while idle: measured after the others, beside Infinity only
    setup: str = ""  # the script that provides its files, for the note when they are missing

    def argv(self, port: int) -> list[str]:
        return [str(port) if arg == PORT else arg for arg in self.command]


@dataclass
class Running:
    server: Server
    process: subprocess.Popen[bytes]
    memory: PeakMemory
    url: str


@dataclass
class Scenario:
    name: str
    batches: list[list[str]]
    clients: int


def servers(folder: Path) -> list[Server]:
    ours = [
        sys.executable,
        "-m",
        "embedserve",
        "serve",
        "--port",
        PORT,
        "--no-access-log",
        "--log-level",
        "warning",
        *EXTRA,  # $EMBEDSERVE_BENCH_ARGS: the same flags for every mode, for A/B runs
    ]
    return [
        *(
            Server(name, [*ours, "--precision", precision, "--backend", backend], "/v1/embeddings")
            for name, (precision, backend) in MODES.items()
        ),
        Server(  # the same app from two Ray Serve replicas of one CPU, behind Ray's proxy
            "embedserve default on Ray Serve",
            [*ours, "--ray", "--replicas", "2"],
            "/v1/embeddings",
            apart=True,
        ),
        Server(
            INFINITY,
            [
                str(INFINITY_VENV / "bin" / "infinity_emb"),
                "v2",
                "--model-id",
                str(folder),
                "--port",
                PORT,
                "--engine",
                "torch",
                "--device",
                "cpu",
                "--no-bettertransformer",
            ],
            "/embeddings",
            setup="bench/setup_infinity.sh",
        ),
        Server(  # its best setting on this 2-core machine (docs/performance.md)
            LLAMA_CPP,
            [
                str(LLAMA_CPP_DIR / "llama-server"),
                "-m",
                str(LLAMA_CPP_DIR / "minilm-bf16.gguf"),
                "--embedding",
                "--pooling",
                "mean",
                "-c",
                "8192",
                "-np",
                "16",
                "-b",
                "1024",
                "-ub",
                "1024",
                "-t",
                str(len(os.sched_getaffinity(0))),
                "--no-webui",
                "--host",
                "127.0.0.1",
                "--port",
                PORT,
            ],
            "/v1/embeddings",
            setup="bench/setup_llama_cpp.sh",
        ),
        Server(
            "h2oGPT-style",
            [sys.executable, str(HERE / "h2ogpt_style.py"), str(folder), PORT],
            "/v1/embeddings",
        ),
    ]


def scenarios() -> list[Scenario]:
    short = short_texts(8 * 500)
    mixed = mixed_corpus(1024)
    return [
        Scenario(
            "16 clients x 8 short texts", [short[i : i + 8] for i in range(0, len(short), 8)], 16
        ),
        Scenario(
            "4 clients x 32 mixed-length texts",
            [mixed[i : i + 32] for i in range(0, len(mixed), 32)],
            4,
        ),
        Scenario("1 client x 1 short text", [[t] for t in short[:400]], 1),
    ]


class PeakMemory:
    """Samples the resident memory of a process and its children every 500 ms. Every server
    is sampled the whole run, so each sample (~1 ms: psutil walks /proc for the children) is CPU
    taken from the server under load; at 100 ms the samplers took ~4% of the machine."""

    def __init__(self, pid: int) -> None:
        self.peak = 0
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                tree = [self._process, *self._process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak // 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(process: subprocess.Popen[bytes], base: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("did not become ready")


@contextmanager
def default_server(log_name: str) -> Iterator[str]:
    """The default command (`embedserve serve`) on a free port, its log in results/: its base
    URL once ready; stopped after."""
    port = free_port()
    log = HERE / "results" / log_name
    log.parent.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "embedserve", "serve", "--port", str(port), "--no-access-log"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(process, base)
        yield base
    finally:
        process.terminate()
        process.wait(30)


def start(server: Server) -> Running | None:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "DO_NOT_TRACK": "1",
    }
    slug = "-".join("".join(c if c.isalnum() else " " for c in server.name).split())
    log = (HERE / "results" / f"{slug}.log").open("ab")
    port = free_port()
    process = subprocess.Popen(server.argv(port), env=env, stdout=log, stderr=subprocess.STDOUT)
    running = Running(server, process, PeakMemory(process.pid), f"http://127.0.0.1:{port}")
    try:
        wait_ready(process, running.url)
    except RuntimeError as exc:
        print(f"  {server.name}: {exc}", file=sys.stderr)
        stop(running)
        return None
    return running


def stop(running: Running) -> int:
    """Stop the server; its peak resident memory in MiB."""
    running.process.terminate()
    try:
        running.process.wait(30)
    except subprocess.TimeoutExpired:
        running.process.kill()
    return running.memory.stop()


def phase(
    plan: list[Scenario],
    group: list[Server],
    counts: Callable[[list[str]], int],
    args: argparse.Namespace,
    table: dict[str, list[tuple[str, Result]]],
    rounds: dict[tuple[str, str], list[float]],
    peaks: dict[str, int],
    reference: str = "",
) -> None:
    """Start `group`, measure every scenario in rounds, stop it; results into table, rounds and
    peaks. Infinity's are filed under its name + `reference` when it ran for another's ratio."""
    running = []
    for server in group:
        print(f"starting {server.name} ...", flush=True)
        started = start(server)
        if started:
            running.append(started)

    def name(r: Running) -> str:
        return r.server.name + (reference if r.server.name == INFINITY else "")

    for r in running:
        table[name(r)] = []
    try:
        for scenario in plan:
            print(f"measuring {scenario.name} ...", flush=True)
            tokens = [counts(batch) for batch in scenario.batches]
            totals, per_round = measure(running, scenario, tokens, args.seconds, args.rounds)
            for r in running:
                table[name(r)].append((scenario.name, totals[r.server.name]))
                rounds[name(r), scenario.name] = per_round[r.server.name]
    finally:
        for r in running:
            peaks[name(r)] = stop(r)


def measure(
    running: list[Running], scenario: Scenario, tokens: list[int], seconds: float, rounds: int
) -> tuple[dict[str, Result], dict[str, list[float]]]:
    """Each server's result over all rounds, and its inputs/s in each round."""

    def load(r: Running, seconds: float, max_requests: int) -> Result:
        url = r.url + r.server.path
        return asyncio.run(
            drive(
                url,
                scenario.batches,
                tokens,
                clients=scenario.clients,
                seconds=seconds,
                max_requests=max_requests,
            )
        )

    for r in running:  # warm-up: the same load for 3 s, so every server has met its shapes
        load(r, 3, 2000)
    totals = {r.server.name: Result() for r in running}
    per_round: dict[str, list[float]] = {r.server.name: [] for r in running}
    for k in range(rounds):
        for r in running[k % len(running) :] + running[: k % len(running)]:
            result = load(r, seconds / rounds, 100_000)
            totals[r.server.name].add(result)
            per_round[r.server.name].append(result.rate)
    return totals, per_round


def bare_engine(corpus: list[str], precision: str, backend: str) -> tuple[str, float, float | None]:
    """The engine a mode serves with, and its tokens/s alone on the corpus, length-sorted in
    batches as the batcher forms them, run on as many streams at once as the server runs: the
    ceiling. Where the engine packs, also its tokens/s on the whole corpus packed (None
    elsewhere)."""
    from embedserve.backends.packing import packed_passes
    from embedserve.config import Settings
    from embedserve.engine.batcher import pad
    from embedserve.engine.loading import load_embedder

    embedder = load_embedder(resolve(None), Settings(precision=precision, backend=backend))  # type: ignore[arg-type]
    sequences = embedder.tokenize(corpus, truncate=True)
    sequences.sort(key=len)
    limits = embedder.batcher.limits
    batches = []
    i = 0
    while i < len(sequences):
        rows = 1
        while (
            i + rows < len(sequences)
            and rows < limits.max_batch_size
            and len(sequences[i + rows]) * (rows + 1) <= limits.max_batch_tokens
        ):
            rows += 1
        batches.append(pad(sequences[i : i + rows], embedder.tokenizer.pad_id))
        i += rows
    tokens = sum(map(len, sequences))
    padded = streamed(embedder.backend.embed, batches, tokens, embedder.backend.streams)
    packed = None
    passes = packed_passes(embedder.backend)
    if passes is not None:
        layouts = packed_batches(sequences, limits.max_batch_tokens, limits.max_batch_size)
        packed = streamed(passes[0], [(b,) for b in layouts], tokens, embedder.backend.streams)
    label = f"{ENGINES[embedder.backend.kind]} {embedder.precision}"
    embedder.close()
    return label, padded, packed


def streamed(
    run: Callable[..., object], batches: Sequence[tuple[object, ...]], tokens: int, streams: int
) -> float:
    """Tokens/s of `run` over `batches` on `streams` threads (largest first: no long tail), the
    best of two runs."""
    from concurrent.futures import ThreadPoolExecutor

    def size(batch: tuple[object, ...]) -> int:
        return int(getattr(batch[0], "size", 0) or batch[0].padded_tokens)  # type: ignore[attr-defined]

    batches = sorted(batches, key=size, reverse=True)
    best = 0.0
    with ThreadPoolExecutor(streams) as pool:
        for _ in range(2):
            started = time.perf_counter()
            list(pool.map(lambda batch: run(*batch), batches))
            best = max(best, tokens / (time.perf_counter() - started))
    return best


def packed_batches(sequences: list[list[int]], max_tokens: int, max_texts: int) -> list[object]:
    """The whole corpus in packed batches as the batcher lays them out (rows of one coarse
    width, first-fit longest first), each up to `max_tokens` and `max_texts`."""
    from embedserve.backends.packing import MIN_PACKED_WIDTH, fill_rows, lay_out
    from embedserve.engine.batcher import coarse_width

    waiting = sorted(sequences, key=len, reverse=True)
    out: list[object] = []
    while waiting:
        head = waiting[:max_texts]
        width = coarse_width(max(len(head[0]), min(MIN_PACKED_WIDTH, sum(map(len, head)))))
        rows = fill_rows([len(s) for s in head], width, max(1, max_tokens // width))
        placed = {i for row in rows for i in row}
        out.append(lay_out([[head[i] for i in row] for row in rows], width))
        waiting = [s for i, s in enumerate(head) if i not in placed] + waiting[max_texts:]
    return out


def bare_torch(folder: Path, texts: list[str]) -> float:
    """Tokens/s of sentence-transformers on torch fp32 alone (Infinity's engine here), batches of
    32 sorted by length as its encode does."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    tokens = sum(len(ids) for ids in model.tokenizer(texts, truncation=True)["input_ids"])
    model.encode(texts[:64], batch_size=32)  # warm-up
    best = 0.0
    for _ in range(2):
        started = time.perf_counter()
        model.encode(texts, batch_size=32)
        best = max(best, tokens / (time.perf_counter() - started))
    return best


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = psutil.virtual_memory().total / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15, help="measured time per scenario")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds each load's seconds are split into"
    )
    parser.add_argument("--only", default="", help="comma-separated server name prefixes")
    parser.add_argument(
        "--skip", default="", help="comma-separated server name prefixes to leave out"
    )
    args = parser.parse_args()
    (HERE / "results").mkdir(exist_ok=True)
    folder = resolve(None).files
    tokenizer = ModelTokenizer(folder / "tokenizer.json", 256)

    def counts(batch: list[str]) -> int:
        return sum(min(len(c) + 2, 256) for c in tokenizer.content_ids(batch))

    plan = scenarios()
    chosen = []
    for server in servers(folder):
        if args.only and not any(server.name.startswith(p.strip()) for p in args.only.split(",")):
            continue
        if args.skip and any(server.name.startswith(p.strip()) for p in args.skip.split(",")):
            continue
        missing = [a for a in server.command if a.startswith("/") and not Path(a).exists()]
        if missing:
            print(f"skipping {server.name}: {missing[0]} not found ({server.setup})")
            continue
        chosen.append(server)
    table: dict[str, list[tuple[str, Result]]] = {}
    rounds: dict[tuple[str, str], list[float]] = {}
    peaks: dict[str, int] = {}
    together = [s for s in chosen if not s.apart]
    beside = [s for s in together if s.name == INFINITY]
    phase(plan, together, counts, args, table, rounds, peaks)
    for apart in [s for s in chosen if s.apart]:  # each beside its own run of Infinity
        phase(plan, [apart, *beside], counts, args, table, rounds, peaks, f" beside {apart.name}")
    mixed = [t for batch in plan[1].batches for t in batch]
    short = [t for batch in plan[0].batches for t in batch][:1024]
    ceilings = {name: bare_engine(mixed, *mode) for name, mode in MODES.items()}
    short_ceilings = dict(bare_engine(short, *mode)[:2] for mode in MODES.values())
    short_ceilings["torch fp32 (Infinity's engine)"] = bare_torch(folder, short)
    print(render(table, rounds, peaks, ceilings, args, short_ceilings))


def render(
    table: dict[str, list[tuple[str, Result]]],
    rounds: dict[tuple[str, str], list[float]],
    peaks: dict[str, int],
    ceilings: dict[str, tuple[str, float, float | None]],
    args: argparse.Namespace,
    short_ceilings: dict[str, float],
) -> str:
    peer = LLAMA_CPP in table
    lines = [
        f"Machine: {machine()}. {args.seconds:.0f} s per load in {args.rounds} rounds, the "
        "servers taking turns; closed-loop clients on the same machine.",
        "",
        "| server | load | inputs/s | tokens/s | p50 ms | p99 ms | errors | peak RSS MiB "
        "| inputs/s vs Infinity (range over rounds) |"
        + (" vs llama.cpp (range) | p50 vs llama.cpp |" if peer else ""),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        + (" ---: | ---: |" if peer else ""),
    ]

    def ratio(server: str, scenario: str, reference: str) -> str:
        ref = dict(table.get(reference, [])).get(scenario)
        if not ref or not ref.inputs or (server, scenario) not in rounds:
            return "n/a"
        ours = dict(table[server])[scenario]
        each = [
            mine / theirs if theirs else float("inf")
            for mine, theirs in zip(
                rounds[server, scenario], rounds[reference, scenario], strict=True
            )
        ]
        return f"{ours.rate / ref.rate:.2f}x ({min(each):.2f}-{max(each):.2f})"

    for server, rows in table.items():
        if server.startswith(f"{INFINITY} beside "):
            continue  # only another's reference
        infinity = (
            f"{INFINITY} beside {server}" if f"{INFINITY} beside {server}" in table else INFINITY
        )
        for scenario, r in rows:
            line = (
                f"| {server} | {scenario} | {r.rate:,.0f} | {r.tokens / r.seconds:,.0f} | "
                f"{r.percentile(50):.1f} | {r.percentile(99):.1f} | {r.errors} | "
                f"{peaks[server]:,} | {ratio(server, scenario, infinity)} |"
            )
            if peer:
                theirs = dict(table[LLAMA_CPP]).get(scenario)
                same_phase = infinity == INFINITY  # measured in the same rounds as llama.cpp
                p50 = (
                    f"{r.percentile(50) / theirs.percentile(50):.2f}x"
                    if theirs and theirs.latencies and same_phase
                    else "n/a"
                )
                line += f" {ratio(server, scenario, LLAMA_CPP) if same_phase else 'n/a'} | {p50} |"
            lines.append(line)
    lines.append("")
    for server, (engine, ceiling, packed) in ceilings.items():
        mixed = next((r for name, r in table.get(server, []) if "mixed" in name), None)
        rate = mixed.tokens / mixed.seconds if mixed else 0.0
        share = f"; served: {rate / ceiling:.0%} of it" if mixed else ""
        if packed:
            share += f"; packed, the whole corpus: {packed:,.0f}" + (
                f" (served: {rate / packed:.0%} of it)" if mixed else ""
            )
        lines.append(
            f"- Bare engine of {server} ({engine}), mixed corpus length-sorted: "
            f"{ceiling:,.0f} tokens/s{share}."
        )
    engines = ", ".join(f"{name} {rate:,.0f}" for name, rate in short_ceilings.items())
    lines.append(
        f"- Bare engines on the short texts, length-sorted batches, no HTTP: {engines} tokens/s."
    )
    text = "\n".join(lines)
    (HERE / "results" / "latest.md").write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
