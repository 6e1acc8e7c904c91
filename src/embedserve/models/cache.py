"""Where embedserve keeps what it derives from models (ONNX exports, OpenVINO models), content
keys for them, and the build-once folder both use."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def default_cache_dir() -> Path:
    configured = os.environ.get("EMBEDSERVE_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "embedserve"


TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.txt",
        "merges.txt",
        "vocab.json",
        "sentencepiece.bpe.model",
        "spiece.model",
        "tokenizer.model",
    }
)
# Files that change neither the graph nor its numbers: prompts and options read at run time,
# documentation, and the other formats a hub repository ships beside the weights.
_NOT_IN_GRAPH = frozenset({"config_sentence_transformers.json", "sentence_bert_config.json"})
_OTHER_FORMATS = frozenset({"onnx", "openvino", ".git", ".cache"})


def folder_digest(folder: Path, include: Callable[[Path], bool] = lambda path: True) -> str:
    """sha256 over the relative path and content of every file `include` takes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if _OTHER_FORMATS.isdisjoint(relative.parts) and include(relative):
            digest.update(str(relative).encode())
            digest.update(file_digest(path).encode())
    return digest.hexdigest()


def graph_digest(folder: Path) -> str:
    """What determines a model's exported graph: its weights and module configurations, not
    its name, its folder's name, its tokenizer or its prompts."""
    return folder_digest(folder, _in_graph)


def tokenizer_digest(folder: Path) -> str:
    return folder_digest(folder, lambda path: path.name in TOKENIZER_FILES)


def _in_graph(path: Path) -> bool:
    name = path.name
    return not (
        name in TOKENIZER_FILES
        or name in _NOT_IN_GRAPH
        or name.lower().endswith((".md", ".txt", ".png", ".jpg"))
        or name.startswith(".")
    )


_DIGESTS: dict[tuple[str, int, int, int], str] = {}
_KEPT_IN: list[Path] = []  # where digests outlive the process (remember_digests_in)


def remember_digests_in(cache_root: Path) -> None:
    """Keep file digests under `<cache>/digests/` too, so that the next start does not hash
    the same weights again (6 s of a warm start for 2.4 GB of weights here)."""
    _KEPT_IN[:] = [cache_root / "digests"]


def file_digest(path: Path) -> str:
    """sha256 of a file's content; hashed once while the file stays as it was (the same path,
    inode, size and modification time to the nanosecond, as git's index and make trust), once
    a process, or once a cache where remember_digests_in says."""
    stat = path.stat()
    seen = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if seen in _DIGESTS:
        return _DIGESTS[seen]
    kept = _KEPT_IN[0] / hashlib.sha256(repr(seen).encode()).hexdigest()[:32] if _KEPT_IN else None
    try:
        digest = kept.read_text() if kept else ""
    except OSError:
        digest = ""
    if len(digest) != 64:
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if kept:
            _keep_text(kept, digest)
    _DIGESTS[seen] = digest
    return digest


def _keep_text(target: Path, text: str) -> None:
    """Written whole or not at all; a cache that cannot be written is only slower."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        partial.replace(target)
    except OSError as exc:
        log.debug("cannot keep a digest in %s (%s)", target.parent, exc)


def cached_build(
    target: Path,
    key: str,
    build: Callable[[Path, Path], None],
    *,
    what: str,
    owner: str,
    notes: dict[str, str] | None = None,
) -> Path:
    """The folder `target`, holding what `build(out, scratch)` writes into `out`, built once.

    Its manifest records `key` and every file's hash: a folder built from other inputs, or with
    a file changed or missing, is rebuilt. The build runs in a scratch folder next to `target`
    and is moved into place whole, so a crash never leaves half a cache. `owner` says who it
    is for (build_owner): a build serves every owner whose files and options make the same key,
    and the builds an owner made from older files or options are dropped once no other owner
    uses them."""
    problem = cache_problem(target, key)
    if problem is None:
        log.info("%s from cache %s", what, target)
        _adopt(target, owner)
        return target
    if target.exists():
        log.warning("%s cache %s is unusable (%s); rebuilding it", what, target, problem)
        shutil.rmtree(target, ignore_errors=True)
    _remove_stale(target, owner)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
    try:
        out = work / "final"
        out.mkdir()
        build(out, work)
        files = {p.name: file_digest(p) for p in sorted(out.iterdir())}
        manifest = {"key": key, "owners": [owner], "files": files, **(notes or {})}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
        try:
            out.replace(target)
        except OSError:  # another process finished the same build first
            if cache_problem(target, key) is not None:
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def cache_problem(target: Path, key: str) -> str | None:
    """Why the folder cannot be used as built for `key`, or None when it can."""
    if not target.exists():
        return "missing"
    try:
        manifest = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError):
        return "no readable manifest"
    if manifest.get("key") != key:
        return "built from other model files or options"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "the manifest lists no files"
    for name, digest in files.items():
        path = target / name
        if not path.is_file() or file_digest(path) != digest:
            return f"{name} is missing or does not match its recorded hash"
    return None


def build_owner(folder: Path, kind: str) -> str:
    """Who a build is for: the model's home and the kind of build. The home is its folder, or
    for a hub snapshot the repository's cache folder, so that a new revision's builds replace
    the old one's."""
    home = folder.resolve()
    if home.parent.name == "snapshots":
        home = home.parent.parent
    return f"{kind} {home}"


def _adopt(target: Path, owner: str) -> None:
    """Record another owner of a build it shares (best effort: at worst it is rebuilt)."""
    manifest = _manifest(target)
    if manifest is not None and owner not in manifest.get("owners", []):
        manifest["owners"] = [*manifest.get("owners", []), owner]
        _write_manifest(target, manifest)


def _remove_stale(target: Path, owner: str) -> None:
    """Drop `owner` from the builds beside `target` (older files or options of its model), and
    each build left with no owner; builds from before owners were kept go too."""
    for old in target.parent.iterdir() if target.parent.exists() else []:
        if old == target or not old.is_dir() or old.name.startswith("."):
            continue
        manifest = _manifest(old)
        if manifest is None:
            continue
        owners = manifest.get("owners")
        if owners is not None and owner not in owners:
            continue
        rest = [o for o in owners or [] if o != owner]
        if rest:
            _write_manifest(old, {**manifest, "owners": rest})
        else:
            log.info("removing stale cache %s", old)
            shutil.rmtree(old, ignore_errors=True)


def _manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    partial = folder / f".{MANIFEST}.{os.getpid()}.tmp"
    try:
        partial.write_text(json.dumps(manifest, indent=2))
        partial.replace(folder / MANIFEST)
    except OSError as exc:
        log.warning("cannot update %s (%s)", folder / MANIFEST, exc)
