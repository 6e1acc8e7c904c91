"""A batch's input file: JSON Lines of `{"custom_id", "method": "POST", "url", "body"}`, checked
as OpenAI checks it while the batch is `validating` (every offending line named, the file
streamed, never held whole), then read again request by request while it runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_REQUESTS = 50_000
"""OpenAI's limit of requests in one batch."""
MAX_INPUTS = 50_000
"""OpenAI's limit of embedding inputs over all of a batch's requests (--batch-max-inputs)."""
MAX_REPORTED = 1000
"""Line errors kept in a failed batch's `errors` (a file can have millions of bad lines)."""


@dataclass(frozen=True)
class Request:
    line: int
    custom_id: str
    body: dict[str, Any]


@dataclass
class Checked:
    requests: int = 0
    inputs: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def fail(
        self, code: str, message: str, line: int | None = None, param: str | None = None
    ) -> None:
        if len(self.errors) < MAX_REPORTED:
            self.errors.append({"code": code, "message": message, "param": param, "line": line})


def check(path: Path, endpoint: str, max_inputs: int = MAX_INPUTS) -> Checked:
    """Every request line well-formed for `endpoint`, custom ids unique, within the limits."""
    checked = Checked()
    seen: set[str] = set()
    for number, raw in _lines(path):
        try:
            line = json.loads(raw)
        except ValueError as exc:
            checked.fail("invalid_json_line", f"line {number} is not valid JSON: {exc}", number)
            continue
        if not isinstance(line, dict):
            checked.fail("invalid_json_line", f"line {number} is not a JSON object", number)
            continue
        checked.requests += 1
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            message = f"line {number} has no 'custom_id' string"
            checked.fail("missing_required_parameter", message, number, "custom_id")
        elif custom_id in seen:
            message = f"line {number} repeats the custom_id {custom_id!r}; each must be unique"
            checked.fail("duplicate_custom_id", message, number, "custom_id")
        else:
            seen.add(custom_id)
        if line.get("method") != "POST":
            message = f"line {number}: 'method' must be POST, got {line.get('method')!r}"
            checked.fail("invalid_method", message, number, "method")
        if line.get("url") != endpoint:
            message = (
                f"line {number}: 'url' must be the batch's endpoint {endpoint}, "
                f"got {line.get('url')!r}"
            )
            checked.fail("invalid_url", message, number, "url")
        body = line.get("body")
        if not isinstance(body, dict):
            message = f"line {number}: 'body' must be a JSON object (a {endpoint} request)"
            checked.fail("missing_required_parameter", message, number, "body")
        else:
            checked.inputs += input_count(body.get("input"))
    if not checked.requests and not checked.errors:
        checked.fail("empty_file", "the input file has no request lines")
    if checked.requests > MAX_REQUESTS:
        message = f"the file has {checked.requests} requests; a batch may have {MAX_REQUESTS}"
        checked.fail("too_many_requests", message)
    if checked.inputs > max_inputs:
        message = (
            f"the file's requests carry {checked.inputs} inputs; a batch may carry {max_inputs} "
            f"on this server (--batch-max-inputs)"
        )
        checked.fail("too_many_inputs", message)
    return checked


def requests(path: Path, skip: int = 0) -> Iterator[Request]:
    """The requests of a checked file in order, after the first `skip`."""
    count = 0
    for number, raw in _lines(path):
        count += 1
        if count <= skip:
            continue
        line = json.loads(raw)
        yield Request(number, line["custom_id"], line["body"])


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, line) of every line that is not blank."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, 1):
            if raw.strip():
                yield number, raw


def input_count(value: Any) -> int:
    """How many inputs an embeddings body's `input` carries (one text, or one token-id list,
    is one)."""
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return len(value)
    return 1
