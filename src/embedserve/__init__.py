"""embedserve: a fast, OpenAI-compatible text embeddings server."""

from embedserve.config import Settings

__version__ = "0.1.0"
__all__ = ["Settings", "__version__"]
