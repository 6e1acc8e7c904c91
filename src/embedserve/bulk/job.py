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
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from embedserve import __version__
from embedserve.bulk.inputs import Fields, Record, count, expand, read, signature
from embedserve.bulk.output import REJECTS, OutputFolder, PartRows
from embedserve.bulk.progress import Progress
from embedserve.config import Settings
from embedserve.engine.embedder import Embedder
from embedserve.errors import BadInput
from embedserve.serving.embeddings import Serving
from embedserve.serving.requests import EmbedRequest, InputType

WINDOW = 1024
"""Inputs in one request to the serving layer; the batcher sorts all waiting ones by length."""

PARTS_IN_FLIGHT = 2
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
    """Run the job to the end; its summary line."""
    return asyncio.run(EmbedJob(options, settings).run())


class EmbedJob:
    def __init__(self, options: JobOptions, settings: Settings) -> None:
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
        self.files = expand(options.inputs, options.input_format)
        self.total = sum(count(file) for file in self.files)
        self.parts = math.ceil(self.total / options.part_rows)

    async def run(self) -> str:
        serving = Serving.build(self.settings)
        await serving.start()
        progress = None
        try:
            model = serving.model(self.settings.default_model)
            service = await model.embedder()
            instruction = model.instructions.for_type(self.options.input_type)
            self._check_model(service, instruction)
            dimension = self.options.dimensions or service.dimension or 0
            output = OutputFolder(
                self.options.output,
                self.options.format,
                {
                    "model": model.id,
                    "precision": str(service.precision),
                    "backend": service.kind,
                    "input_type": self.options.input_type,
                    "dimension": str(dimension),
                    "version": __version__,
                },
            )
            manifest = self._manifest(model.source.id, instruction)
            done = output.open(manifest)
            output.keep_rejects(done)
            progress = Progress(
                self.total,
                sum(self._part_size(i) for i in done),
                every_s=self.options.progress_every_s,
            )
            await self._embed_parts(serving, service, output, done, progress, dimension)
            output.finish(self.parts, manifest)
            return progress.summary(len(done))
        finally:
            if progress is not None:
                progress.close()
            await serving.close()

    def _check_model(self, service: Any, instruction: str) -> None:
        size = self.options.chunk_tokens
        if size is None:
            return
        if not isinstance(service, Embedder):
            raise BadInput("--chunk-tokens needs a local model (its tokenizer cuts the chunks)")
        room = service.tokenizer.max_content - len(service.tokenizer.content_ids([instruction])[0])
        if size > room:
            raise BadInput(
                f"--chunk-tokens {size} is more than this model reads beside its special tokens "
                f"and instruction: at most {room}"
            )

    def _manifest(self, model_id: str, instruction: str) -> dict[str, Any]:
        settings = self.settings
        return {
            "embedserve": __version__,
            "options": {
                "model": model_id,
                "precision": settings.precision,
                "backend": settings.backend,
                "instruction": instruction,
                **self.options.remembered(),
            },
            "inputs": signature(self.files),
            "records": self.total,
            "parts": self.parts,
            "complete": False,
        }

    def _part_size(self, index: int) -> int:
        return min(self.options.part_rows, self.total - index * self.options.part_rows)

    async def _embed_parts(
        self,
        serving: Serving,
        service: Any,
        output: OutputFolder,
        done: set[int],
        progress: Progress,
        dimension: int,
    ) -> None:
        records = read(self.files, Fields(self.options.text_field, self.options.id_field))
        in_flight: set[asyncio.Task[None]] = set()
        try:
            for index in range(self.parts):
                part = await asyncio.to_thread(_take, records, self.options.part_rows)
                if index in done:
                    continue
                while len(in_flight) >= PARTS_IN_FLIGHT:
                    finished, in_flight = await asyncio.wait(
                        in_flight, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in finished:
                        task.result()
                in_flight.add(
                    asyncio.create_task(
                        self._embed_part(index, part, serving, service, output, progress, dimension)
                    )
                )
            await asyncio.gather(*in_flight)
        finally:
            for task in in_flight:
                task.cancel()

    async def _embed_part(
        self,
        index: int,
        records: list[Record],
        serving: Serving,
        service: Any,
        output: OutputFolder,
        progress: Progress,
        dimension: int,
    ) -> None:
        bad = [r for r in records if r.problem is not None]
        if bad and not self.options.skip_bad:
            raise BadInput(
                f"{bad[0].where}: {bad[0].problem} (--skip-bad writes such records to "
                f"{REJECTS} and goes on)"
            )
        rows = await asyncio.to_thread(
            self._rows, [r for r in records if r.problem is None], service
        )
        windows = [rows[at : at + WINDOW] for at in range(0, len(rows), WINDOW)]
        vectors = await asyncio.gather(
            *(self._embed_window(window, serving, progress) for window in windows)
        )
        chunked = self.options.chunk_tokens is not None
        part = PartRows(
            ids=[row.record.id for row in rows],
            vectors=np.concatenate(vectors) if vectors else np.zeros((0, dimension), np.float32),
            chunks=[row.chunk for row in rows] if chunked else None,
            starts=[row.start for row in rows] if chunked else None,
            ends=[row.end for row in rows] if chunked else None,
            texts=[row.text for row in rows] if self.options.keep_text else None,
        )
        rejects = [
            {"file": r.file, "line": r.line, "record": r.raw, "reason": r.problem} for r in bad
        ]
        await asyncio.to_thread(output.append_rejects, index, rejects)
        await asyncio.to_thread(output.write_part, index, part)
        progress.advance(0, 0, 0, skipped=len(bad))

    def _rows(self, records: list[Record], service: Any) -> list[_Row]:
        """A row per record, or per chunk of it, with the text it embeds."""
        texts = [r.text or "" for r in records]
        if self.options.chunk_tokens is None:
            return [_Row(r, 0, 0, len(t), t) for r, t in zip(records, texts, strict=True)]
        spans = service.tokenizer.windows(
            texts, self.options.chunk_tokens, self.options.chunk_overlap
        )
        return [
            _Row(record, n, start, end, text[start:end])
            for record, text, chunks in zip(records, texts, spans, strict=True)
            for n, (start, end) in enumerate(chunks)
        ]

    async def _embed_window(
        self, window: Sequence[_Row], serving: Serving, progress: Progress
    ) -> np.ndarray:
        request = EmbedRequest(
            [row.text for row in window],
            model=self.settings.default_model,
            input_type=self.options.input_type,
            truncate=True,
            dimensions=self.options.dimensions,
        )
        embedded = await serving.embed(request)
        started = sum(1 for row in window if row.chunk == 0)  # documents, counted at their start
        progress.advance(started, len(window), embedded.prompt_tokens)
        return embedded.vectors


def _take(records: Iterator[Record], count: int) -> list[Record]:
    return list(itertools.islice(records, count))
