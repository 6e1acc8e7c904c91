"""`embedserve embed`: a corpus of files embedded into a folder of Parquet parts, with the
server's engine and request policy (the serving layer), so a vector equals the server's for the
same text and options.

A pipeline: records are read a part at a time, each part's texts are submitted in windows to
the model's batcher (which sorts them by length and forms the batches, as for the server), and
two parts are in flight so the engine never waits for the reader or the writer. Memory is what
two parts hold, whatever the corpus."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from embedserve import __version__
from embedserve.bulk.inputs import (
    Cursor,
    Fields,
    InputFile,
    Record,
    expand,
    read,
    scan,
    signature,
)
from embedserve.bulk.output import REJECTS, OutputFolder, PartRows
from embedserve.bulk.progress import Progress, Tally
from embedserve.config import Settings
from embedserve.engine.embedder import Embedder
from embedserve.engine.loading import build_registry
from embedserve.errors import BadInput
from embedserve.serving.policy import Serving
from embedserve.serving.requests import EmbedRequest, InputType

WINDOW = 1024
"""Inputs in one request to the serving layer; the batcher sorts all waiting ones by length."""

PARTS_IN_FLIGHT = 2
WINDOWS_IN_FLIGHT = 8
"""Per worker: enough for the batcher to sort across, few enough that a part of many chunks
does not fill the queue."""

RETOKENIZE_MARGIN = 8
"""A chunk cut inside a word can take a few more tokens when it is tokenized alone."""
_A_DAY_S = 86400.0


@dataclass(frozen=True)
class JobOptions:
    inputs: tuple[str, ...]
    output: Path
    text_field: str = "text"
    id_field: str | None = None
    input_format: str = "auto"
    input_type: InputType = "document"
    dimensions: int | None = None
    keep_text: bool = False
    format: str = "parquet"
    part_rows: int = 2048
    chunk_tokens: int | None = None
    chunk_overlap: int = 0
    skip_bad: bool = False
    progress_every_s: float = 10.0

    def __post_init__(self) -> None:
        if self.part_rows < 1:
            raise BadInput(f"--part-rows must be at least 1, got {self.part_rows}")
        if self.dimensions is not None and self.dimensions < 1:
            raise BadInput(f"--dimensions must be at least 1, got {self.dimensions}")
        if self.chunk_tokens is None:
            if self.chunk_overlap:
                raise BadInput("--chunk-overlap needs --chunk-tokens")
        elif not 0 <= self.chunk_overlap < self.chunk_tokens:
            raise BadInput(
                f"--chunk-overlap must be at least 0 and less than --chunk-tokens "
                f"({self.chunk_tokens}), got {self.chunk_overlap}"
            )

    def remembered(self) -> dict[str, Any]:
        """The options that decide the output's rows: a folder is resumed only with the same."""
        kept = asdict(self)
        for option in ("inputs", "output", "skip_bad", "progress_every_s"):
            del kept[option]
        return kept


@dataclass
class _Row:
    record: Record
    chunk: int
    start: int
    end: int
    text: str


def run_job(options: JobOptions, settings: Settings) -> str:
    """Run the job to the end in this process; its summary line."""
    job = EmbedJob(options, settings)
    return asyncio.run(job.run_here())


@dataclass(frozen=True)
class Plan:
    """The inputs, their signature (taken before they are read: a file that grows after it
    is refused on resume), and where each part starts."""

    files: list[InputFile]
    signature: list[dict[str, Any]]
    total: int
    starts: list[Cursor]

    @classmethod
    def of(cls, options: JobOptions) -> Plan:
        files = expand(options.inputs, options.input_format, exclude=options.output)
        inputs = signature(files)
        total, starts = scan(files, options.part_rows)
        return cls(files, inputs, total, starts)


class EmbedJob:
    """The plan of a job: its inputs, where each part starts, the model it uses and the output
    folder's manifest. Parts are embedded by a `PartWorker`: one here, or one per Ray actor."""

    def __init__(self, options: JobOptions, settings: Settings, plan: Plan | None = None) -> None:
        """`plan`: the inputs already scanned (a Ray actor gets the driver's)."""
        if len(settings.models) > 1 and settings.default_model is None:
            raise BadInput("embed uses one model: give one --model (or --default-model)")
        self.options = options
        # A job's windows wait in the queue as long as the corpus takes, never refused for it.
        self.settings = replace(
            settings,
            preload=True,
            max_inputs=max(settings.max_inputs, WINDOW),
            max_queued=max(settings.max_queued or 0, 4 * WINDOW * PARTS_IN_FLIGHT * 64),
            request_timeout_s=_A_DAY_S,
            max_request_tokens=None,
        )
        self.plan = plan or Plan.of(options)
        self.files, self.total, self.starts = self.plan.files, self.plan.total, self.plan.starts
        self.parts = max(1, math.ceil(self.total / options.part_rows))  # one, maybe empty
        self.registry = build_registry(self.settings)  # the workers' serving layer opens it
        model = self.registry.resolve(self.settings.default_model)
        self.model_id = model.source.id
        self.instruction = model.instructions.for_type(options.input_type)
        self.manifest: dict[str, Any] = {
            "embedserve": __version__,
            "options": {
                "model": self.model_id,
                "precision": self.settings.precision,
                "backend": self.settings.backend,
                "instruction": self.instruction,
                **options.remembered(),
            },
            "inputs": self.plan.signature,
            "records": self.total,
            "parts": self.parts,
            "complete": False,
        }
        self.folder = OutputFolder(options.output, options.format)

    def open(self) -> set[int]:
        """Create or resume the output folder: the parts already complete."""
        done = self.folder.open(self.manifest)
        self.folder.keep_rejects(done)
        return done

    def finish(self) -> None:
        self.folder.finish(self.parts, self.manifest)

    def part_size(self, index: int) -> int:
        return max(0, min(self.options.part_rows, self.total - index * self.options.part_rows))

    def records(self, index: int) -> list[Record]:
        """The records of part `index`, read from where it starts."""
        if not self.total:
            return []
        position = index * self.options.part_rows
        fields = Fields(self.options.text_field, self.options.id_field)
        reader = read(self.files, fields, self.starts[index], position)
        return list(itertools.islice(reader, self.part_size(index)))

    def progress(self, done: set[int]) -> Progress:
        already = sum(self.part_size(i) for i in done)
        return Progress(self.total, already, every_s=self.options.progress_every_s)

    async def run_here(self) -> str:
        worker = PartWorker(self)
        try:
            await worker.start()
            self.manifest["engine"] = worker.engine
            done = self.open()
        except BaseException:
            await worker.close()
            raise
        progress = self.progress(done)
        try:
            in_flight: set[asyncio.Task[Tally]] = set()
            try:
                for index in (i for i in range(self.parts) if i not in done):
                    while len(in_flight) >= PARTS_IN_FLIGHT:
                        finished, in_flight = await asyncio.wait(
                            in_flight, return_when=asyncio.FIRST_COMPLETED
                        )
                        for task in finished:
                            task.result()
                    in_flight.add(asyncio.create_task(worker.embed_part(index, progress)))
                await asyncio.gather(*in_flight)
            finally:
                for task in in_flight:
                    task.cancel()
            self.finish()
            return progress.summary(len(done))
        finally:
            progress.close()
            self.folder.close()
            await worker.close()


class PartWorker:
    """A loaded model that embeds parts and writes their files, with the serving layer's
    request policy: the local job has one, each Ray actor its own."""

    def __init__(self, job: EmbedJob) -> None:
        self.job = job
        self.options = job.options
        self.serving = Serving.build(job.settings, job.registry)
        self.service: Any = None
        self.output = job.folder

    async def start(self) -> None:
        await self.serving.start()
        model = self.serving.model(self.job.settings.default_model)
        self.service = await self.serving.embedding_service(model)
        self._check_chunking()
        self.dimension = self.options.dimensions or self.service.dimension or 0
        most = self.service.dimension
        if self.options.dimensions and most and self.options.dimensions > most:
            raise BadInput(
                f"--dimensions must be between 1 and {self.service.dimension} for this "
                f"model, got {self.options.dimensions}"
            )
        self.engine = {"precision": str(self.service.precision), "backend": self.service.kind}
        self.windows = asyncio.Semaphore(WINDOWS_IN_FLIGHT)
        self.output = OutputFolder(
            self.options.output,
            self.options.format,
            {
                "model": model.id,
                **self.engine,
                "input_type": self.options.input_type,
                "dimension": str(self.dimension),
                "version": __version__,
            },
        )

    async def close(self) -> None:
        await self.serving.close()

    def _check_chunking(self) -> None:
        size = self.options.chunk_tokens
        if size is None:
            return
        if not isinstance(self.service, Embedder):
            raise BadInput("--chunk-tokens needs a local model (its tokenizer cuts the chunks)")
        tokenizer = self.service.tokenizer
        instruction = len(tokenizer.content_ids([self.job.instruction])[0])
        room = tokenizer.max_content - instruction - RETOKENIZE_MARGIN
        if size > room:
            raise BadInput(
                f"--chunk-tokens {size} is more than this model reads beside its special tokens, "
                f"its instruction and a margin for chunks cut inside a word: at most {room}"
            )

    async def embed_part(self, index: int, progress: Progress | None = None) -> Tally:
        """Read, embed and write part `index`; a bad record stops it unless --skip-bad."""
        records = await asyncio.to_thread(self.job.records, index)
        bad = [r for r in records if r.problem is not None]
        if bad and not self.options.skip_bad:
            raise BadInput(
                f"{bad[0].where}: {bad[0].problem} (--skip-bad writes such records to "
                f"{REJECTS} and goes on)"
            )
        good = [r for r in records if r.problem is None]
        rows = await asyncio.to_thread(self._rows, good)
        windows = [rows[at : at + WINDOW] for at in range(0, len(rows), WINDOW)]
        tally = Tally(documents=len(good), rows=len(rows), skipped=len(bad))
        vectors = await asyncio.gather(*(self._embed(w, tally, progress) for w in windows))
        chunked = self.options.chunk_tokens is not None
        part = PartRows(
            ids=[row.record.id for row in rows],
            vectors=np.concatenate(vectors)
            if vectors
            else np.zeros((0, self.dimension), np.float32),
            chunks=[row.chunk for row in rows] if chunked else None,
            starts=[row.start for row in rows] if chunked else None,
            ends=[row.end for row in rows] if chunked else None,
            texts=[row.text for row in rows] if self.options.keep_text else None,
        )
        rejects = [
            {"file": r.file, "line": r.line, "record": r.raw, "reason": r.problem} for r in bad
        ]
        await asyncio.to_thread(self.output.append_rejects, index, rejects)
        await asyncio.to_thread(self.output.write_part, index, part)
        if progress is not None:
            progress.advance(0, 0, 0, skipped=len(bad))
        return tally

    def _rows(self, records: list[Record]) -> list[_Row]:
        """A row per record, or per chunk of it, with the text it embeds."""
        texts = [r.text or "" for r in records]
        if self.options.chunk_tokens is None:
            return [_Row(r, 0, 0, len(t), t) for r, t in zip(records, texts, strict=True)]
        spans = self.service.tokenizer.windows(
            texts, self.options.chunk_tokens, self.options.chunk_overlap
        )
        return [
            _Row(record, n, start, end, text[start:end])
            for record, text, chunks in zip(records, texts, spans, strict=True)
            for n, (start, end) in enumerate(chunks)
        ]

    async def _embed(
        self, window: Sequence[_Row], tally: Tally, progress: Progress | None
    ) -> np.ndarray:
        request = EmbedRequest(
            [row.text for row in window],
            model=self.job.settings.default_model,
            input_type=self.options.input_type,
            truncate=True,
            dimensions=self.options.dimensions,
        )
        async with self.windows:
            embedded = await self.serving.embed(request)
        tally.tokens += embedded.prompt_tokens
        if progress is not None:
            started = sum(1 for row in window if row.chunk == 0)  # documents, at their start
            progress.advance(started, len(window), embedded.prompt_tokens)
        return embedded.vectors
