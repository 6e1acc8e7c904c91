"""Settings: declared once (settings.py), read from flags, EMBEDSERVE_* variables and config
files (sources.py)."""

from embedserve.config.settings import (
    ModelSpec,
    Precision,
    PrecisionSetting,
    Settings,
    TokenIdMode,
)

__all__ = ["ModelSpec", "Precision", "PrecisionSetting", "Settings", "TokenIdMode"]
