"""d-ar: D-AR image generation on the Hugging Face stack.

Public names are imported lazily, so ``import dar`` (and ``dar --help``) stays fast and has no side effects.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "DARPipeline": "dar.pipeline",
    "StreamStep": "dar.pipeline",
    "convert_official": "dar.convert",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dar' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
