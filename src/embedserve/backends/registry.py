"""Which backend serves a model: the backends by name, one entry each, and the one table of
rules that picks them for a device and a precision. Adding a backend is one entry in BACKENDS
(and, for `auto` to pick it, a place in AUTO_BACKENDS)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from embedserve.backends import factories
from embedserve.backends.base import Backend
from embedserve.backends.openvino_build import NO_BF16, openvino_missing
from embedserve.backends.spec import BackendSpec
from embedserve.config import Precision, PrecisionSetting
from embedserve.errors import ModelUnavailable
from embedserve.machine import cpu_supports_bf16, native_bf16, native_int8

log = logging.getLogger(__name__)


Factory = Callable[[BackendSpec], Backend]


@dataclass(frozen=True)
class BackendEntry:
    build: Factory
    devices: tuple[str, ...]
    """Device kinds it runs on: "cpu", "cuda"."""

    precisions: tuple[str, ...]
    missing: Callable[[str, str], str | None] = lambda precision, kind: None
    """Why it cannot serve `precision` on a device kind ("cpu", "cuda") of this machine (a
    package to install, a CPU feature), or None."""

    reference: str | None = None
    """The backend whose fp32 vectors its other precisions are measured against at start-up."""

    refusals: Mapping[str, str] = field(default_factory=dict)
    """The reason to give, by precision or device kind, where it is asked for one it lacks."""

    label: str = ""
    """Its name in sentences ("ONNX Runtime"); the registry's name where empty."""

    packages: tuple[str, ...] = ()
    """The distributions whose versions decide its numbers (a cached verdict depends on them)."""

    exports: bool = False
    """It runs our ONNX export of the model (so it cannot serve one that fails to export)."""


def _torch_missing(precision: str, kind: str) -> str | None:
    return NO_BF16 if precision == "bf16" and kind == "cpu" and not cpu_supports_bf16() else None


BACKENDS: dict[str, BackendEntry] = {
    "onnx": BackendEntry(
        factories.onnx,
        devices=("cpu",),
        precisions=("fp32", "int8"),
        reference="onnx",
        refusals={
            "cuda": "ONNX Runtime runs on the CPU here: drop --device cuda, or use --backend torch",
            "bf16": "ONNX Runtime serves fp32 and int8: use --backend openvino for bf16",
        },
        label="ONNX Runtime",
        packages=("onnxruntime",),
        exports=True,
    ),
    "openvino": BackendEntry(
        factories.openvino,
        devices=("cpu",),
        precisions=("fp32", "bf16", "int8"),
        missing=openvino_missing,
        reference="onnx",
        refusals={"cuda": "OpenVINO runs on the CPU: drop --device cuda"},
        label="OpenVINO",
        packages=("openvino",),
        exports=True,
    ),
    "torch": BackendEntry(
        factories.torch,
        devices=("cpu", "cuda"),
        precisions=("fp32", "bf16", "fp16"),
        missing=_torch_missing,
        reference="torch",
        refusals={
            "int8": "int8 runs on the CPU (OpenVINO or ONNX Runtime): drop --backend torch / "
            "--device cuda"
        },
        label="torch",
        packages=("torch",),
    ),
}

AUTO: dict[str, tuple[tuple[str, Precision], ...]] = {
    # the fastest mode whose vectors are exact: bf16 where the CPU computes it natively (and
    # the probe proves it at load), else fp32; on a GPU fp16, else bf16 (fp16 overflows where
    # a model's activations are large: TEI saw Gemma3 give NaN), else fp32
    "cpu": (("openvino", "bf16"), ("onnx", "fp32"), ("torch", "fp32")),
    "cuda": (("torch", "fp16"), ("torch", "bf16"), ("torch", "fp32")),
}
"""What --precision auto tries on a device kind, as (backend, precision), in order. A
precision other than fp32 must prove exact (every probe text at cosine >= 0.9999 to fp32: a
NaN never does) or the next is tried."""

AUTO_BACKENDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("cpu", "fp32"): ("onnx", "torch"),  # torch serves what cannot be exported
    ("cpu", "int8"): ("openvino", "onnx"),  # ONNX Runtime first on a CPU without VNNI
    ("cpu", "bf16"): ("openvino", "torch"),
    ("cuda", "fp32"): ("torch",),
    ("cuda", "bf16"): ("torch",),
    ("cuda", "fp16"): ("torch",),
}
"""What --backend auto tries for a device kind and a precision, in order: the first one
available here that builds serves."""

UNSERVED = {
    ("cpu", "fp16"): "fp16 needs a CUDA GPU; on a CPU use --precision fp32, bf16 or int8",
    ("cuda", "int8"): "int8 runs on the CPU (OpenVINO or ONNX Runtime): drop --device cuda",
}


@dataclass(frozen=True)
class Choice:
    name: str
    entry: BackendEntry
    precision: Precision
    device: str
    exact: bool = False
    """It serves only if the probe finds it exact (chosen by --precision auto)."""

    why: str = ""
    """Why it is tried: what it was asked for, or what auto found."""


def known(backend: str) -> None:
    """Refuse a backend name no entry has, naming those there are."""
    if backend != "auto" and backend not in BACKENDS:
        names = ", ".join(["auto", *BACKENDS])
        raise ModelUnavailable(f"--backend {backend} is not a backend; choose one of {names}")


def choose(
    backend: str, device: str, precision: PrecisionSetting, *, onnx_only: str | None = None
) -> list[Choice]:
    """The backends to try, in order, for `backend` (a name or "auto") on `device` ("cpu",
    "cuda", "cuda:1", ...) at `precision` (or "auto"). `onnx_only`: the id of a model that ships
    only an ONNX graph. Raises ModelUnavailable with the reason when none can serve it here."""
    known(backend)
    if onnx_only is not None:
        # Served as it is, in fp32 on the CPU; only what the user asked for is refused (on a
        # GPU, "auto" would mean fp16).
        if backend not in ("auto", "onnx") or precision not in ("auto", "fp32"):
            asked = f"--backend {backend}" if backend not in ("auto", "onnx") else ""
            asked = asked or f"--precision {precision}"
            raise ModelUnavailable(
                f"{onnx_only} ships only an ONNX model: it is served by ONNX Runtime in fp32 "
                f"(drop {asked})"
            )
        why = "the model ships only an ONNX graph"
        return [Choice("onnx", BACKENDS["onnx"], "fp32", "cpu", why=why)]
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if precision == "auto":
        return _auto(backend, device, kind)
    if backend != "auto":
        entry = BACKENDS[backend]
        reason = _refusal(backend, entry, kind, precision) or entry.missing(precision, kind)
        if reason:
            raise ModelUnavailable(reason)
        return [Choice(backend, entry, precision, device, why="as asked")]
    names = AUTO_BACKENDS.get((kind, precision))
    if (kind, precision) == ("cpu", "int8") and not native_int8():
        # without VNNI, OpenVINO's int8 kernels sum in 16 bits and saturate on odd texts
        log.info("int8 on ONNX Runtime first: this CPU has no VNNI int8 dot products")
        names = ("onnx", "openvino")
    if not names:
        unserved = UNSERVED.get((kind, precision), f"no backend serves {precision} on {kind}")
        raise ModelUnavailable(unserved)
    return _available([(name, precision) for name in names], device, kind, exact=False)


def _auto(backend: str, device: str, kind: str) -> list[Choice]:
    """--precision auto: the AUTO candidates, or where a backend is named its own, then its
    fp32."""
    candidates = list(AUTO[kind])
    if backend != "auto":
        entry = BACKENDS[backend]
        candidates = [c for c in candidates if c[0] == backend]
        candidates += [(backend, "fp32")] if (backend, "fp32") not in candidates else []
        refusals = [_refusal(backend, entry, kind, precision) for _, precision in candidates]
        candidates = [c for c, refusal in zip(candidates, refusals, strict=True) if not refusal]
        if not candidates:
            raise ModelUnavailable(str(refusals[0]))
    return _available(candidates, device, kind, exact=True)


def _available(
    candidates: list[tuple[str, Precision]], device: str, kind: str, *, exact: bool
) -> list[Choice]:
    """The candidates this machine can run, each with why it is tried: the first as asked (or,
    for an exact bf16, because the CPU computes it natively), a later one because of what ruled
    out the one before it."""
    choices: list[Choice] = []
    why = "" if exact else "as asked"
    for name, precision in candidates:
        entry = BACKENDS[name]
        reason = entry.missing(precision, kind)
        if reason:
            log.info("%s without %s (%s)", precision, name, reason)
            why = reason
            continue
        if exact and precision == "bf16" and kind == "cpu":
            why = f"this CPU computes bf16 natively ({', '.join(native_bf16())})"
        choices.append(Choice(name, entry, precision, device, exact and precision != "fp32", why))
        why = ""
    if not choices:
        raise ModelUnavailable(why)
    return choices


def _refusal(name: str, entry: BackendEntry, kind: str, precision: str) -> str | None:
    if kind not in entry.devices:
        return entry.refusals.get(kind, f"--backend {name} does not run on {kind}")
    if precision not in entry.precisions:
        served = ", ".join(entry.precisions)
        return entry.refusals.get(precision, f"--backend {name} serves {served}, not {precision}")
    if (kind, precision) in UNSERVED:
        return UNSERVED[(kind, precision)]
    return None


def resolve_device(device: str, backend: str = "auto") -> str:
    """--device auto: CUDA when a GPU is there and the backend asked for runs on it, else the
    CPU."""
    if device != "auto":
        return device
    if backend != "auto" and "cuda" not in BACKENDS[backend].devices:
        return "cpu"
    from embedserve.backends.torch import gpu_present

    return "cuda" if gpu_present() else "cpu"
