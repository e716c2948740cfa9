"""Optional parts of the package and the pip command that adds each.

The base install holds what a researcher with an endpoint needs; deployment,
the local endpoint, figures, DataFrames and the demo radiograph are extras
(``pip install 'cxr-widgets[deploy]'`` and so on, ``[all]`` for everything).
Code that needs one calls :func:`require` (or uses :func:`needs`) first, so a
missing extra is a :class:`MissingDependencyError` naming the command, not an
``ImportError`` deep in a traceback.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import MissingDependencyError

#: extra -> (the module that tells whether it is installed, what it brings)
EXTRAS: dict[str, tuple[str, str]] = {
    "deploy": ("azure.ai.ml", "azure-ai-ml (deployment, workspace look-up, dry-run YAML)"),
    "local": ("azureml_inference_server_http", "Azure ML's inference server (the local endpoint)"),
    "plot": ("matplotlib", "matplotlib (figures)"),
    "pandas": ("pandas", "pandas (DataFrames)"),
    "dicom": ("pylibjpeg", "pylibjpeg (compressed DICOM)"),
    "demo": ("pydicom_data", "pydicom-data (the NEMA chest radiograph)"),
    "evaluate": ("rouge_score", "rouge-score (ROUGE-L of report text)"),
}

F = TypeVar("F", bound=Callable[..., Any])


def installed(extra: str) -> bool:
    """Whether the extra's marker module can be imported (without importing it)."""
    module = EXTRAS[extra][0]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def install_command(extra: str) -> str:
    return f"pip install 'cxr-widgets[{extra}]'"


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingDependencyError` when ``extra`` is not installed."""
    if not installed(extra):
        brings = EXTRAS[extra][1]
        raise MissingDependencyError(
            f"{what} needs {brings}, which is not installed: {install_command(extra)} "
            f"(or 'cxr-widgets[all]' for every optional part)",
            extra=extra,
        )


def needs(extra: str) -> Callable[[F], F]:
    """Decorator: check the extra before the function runs."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            require(extra, f"{func.__name__}()")
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
