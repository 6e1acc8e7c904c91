"""Domain errors. api/errors.py maps each to an HTTP status and an OpenAI error envelope."""

from __future__ import annotations


class EmbedServeError(Exception):
    """Base of every error embedserve raises on purpose."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidInput(EmbedServeError):
    """The request is well-formed JSON but asks for something we cannot do (a user error)."""


class ModelNotFound(EmbedServeError):
    """The request names a model this server does not serve."""


class ModelNotReady(EmbedServeError):
    """The model is still loading, or failed to load."""


class ModelUnavailable(EmbedServeError):
    """A model source cannot be resolved or loaded (missing folder, hub unreachable, bad files)."""


class MissingDependency(EmbedServeError):
    """A part of the server is not installed (a broken install): a fault of ours, answered 500
    and logged with what to install, never blamed on the request."""


class ConfigError(EmbedServeError):
    """The server's own configuration is inconsistent (reported at start-up)."""


class Overloaded(EmbedServeError):
    """The model's queue is full; the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, code="overloaded")
        self.retry_after = retry_after


class OverBudget(Overloaded):
    """The model does not fit in --memory-budget beside those that cannot be unloaded now (busy
    or pinned); the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, retry_after=retry_after)
        self.code = "memory_budget"


class QueueTimeout(Overloaded):
    """The request's inputs waited longer than the request timeout; they were dropped."""


class ClientGone(EmbedServeError):
    """The client disconnected before its result was ready; nothing is sent back."""


class UpstreamUnavailable(EmbedServeError):
    """The upstream embeddings service failed, refused our key, or could not be reached."""


class UpstreamTimeout(EmbedServeError):
    """The upstream embeddings service did not answer in time."""


class BadInput(EmbedServeError):
    """A job's input cannot be read: a missing or unreadable file, a malformed record (named by
    its file and line), or an output folder written with other options."""


class NotFound(EmbedServeError):
    """A file or batch that does not exist, or that belongs to another API key."""


class TooLarge(EmbedServeError):
    """An upload over the server's size limit."""
