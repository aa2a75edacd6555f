"""Inference backends, looked up by name (``model.backend`` in the parameter file).

A backend is an :class:`~ros2_affect.backends.base.InferenceBackend` subclass registered in
:data:`BACKENDS` under its name by the module that defines it::

    @BACKENDS.register("mybackend")
    class MyBackend(InferenceBackend):
        name = "mybackend"
        def __init__(self, device: str = "cpu", threads: int = 1, **options): ...

Constructors take ``device`` and ``threads`` and may take backend-specific keyword
options (``precision``, ``engine_cache_dir`` for TensorRT); :func:`create_backend`
passes the options a backend's constructor names and drops the rest, so one
:class:`~ros2_affect.config.ModelConfig` configures any backend. Backend modules must
import without their library installed (import it inside ``is_available``/``load``):
``is_available()`` then says why the backend cannot run, and
:func:`create_backend_with_fallback` logs that reason and uses the fallback.

The registry is filled when this package is imported and frozen afterwards. One name is
only declared here: ``torch`` (eager torch on training checkpoints, for debugging) lives with
the training code (``training/torch_backend.py``), which the runtime never imports; training
code provides it (``BACKENDS.provide``) when it imports that module. Until then,
``model.backend: torch`` is refused with :data:`TORCH_BACKEND_HINT`.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from typing import Any, Optional, Type

from ros2_affect.backends.base import InferenceBackend
from ros2_affect.errors import BackendUnavailableError, UnknownNameError
from ros2_affect.registry import Registry

LOG = logging.getLogger(__name__)

#: name -> backend class.
BACKENDS: Registry[Type[InferenceBackend]] = Registry("inference backend")

#: Modules that register backends, in order. onnxruntime is the reference backend; the
#: others are optional: a module that is absent or fails to import is skipped (logged),
#: so a broken optional backend never takes the onnxruntime path down with it.
_BACKEND_MODULES = ("onnxruntime_backend", "tensorrt_backend")
_REQUIRED_MODULES = ("onnxruntime_backend",)

#: Why ``model.backend: torch`` cannot run until training code provides it, and how to run it.
TORCH_BACKEND_HINT = (
    "the torch backend runs training checkpoints and lives with the training code (training/torch_backend.py), "
    "which the runtime does not import; in a source checkout with torch, run the command through it "
    "(python -m training.torch_backend run ... / replay ...) or `import training.torch_backend` before building "
    "the pipeline; to deploy a model, export it (python -m training.export) and use onnxruntime or tensorrt"
)
BACKENDS.declare("torch", TORCH_BACKEND_HINT)


def _import_backend_modules() -> None:
    for module in _BACKEND_MODULES:
        qualified = f"{__name__}.{module}"
        if module in _REQUIRED_MODULES:
            importlib.import_module(qualified)
            continue
        try:
            importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name != qualified:
                LOG.warning("inference backend module %s is not importable (%s); skipping it", qualified, exc)
        except Exception as exc:  # an optional backend must not break the package
            LOG.warning("inference backend module %s failed to import (%s: %s); skipping it",
                        qualified, type(exc).__name__, exc)


_import_backend_modules()
BACKENDS.freeze()


def create_backend(name: str, device: str = "cpu", threads: int = 1, **options: Any) -> InferenceBackend:
    """Instantiate the backend registered as ``name``.

    Args:
        name: registered backend name (see ``BACKENDS.names()``).
        device: ``"cpu"`` or ``"cuda"``.
        threads: intra-op CPU threads (0: the library's default).
        options: backend-specific settings (e.g. ``precision``, ``engine_cache_dir``);
            those the backend's constructor does not take are ignored.

    Raises:
        UnknownNameError: no backend of that name (the message lists the registered ones).
        BackendUnavailableError: the backend cannot run here; the message has the reason.
    """
    missing = BACKENDS.missing(name)
    if missing is not None:
        raise BackendUnavailableError(f"inference backend {name!r} cannot run here: {missing}")
    cls = BACKENDS.get(name)
    available, reason = cls.is_available()
    if not available:
        raise BackendUnavailableError(f"inference backend {name!r} cannot run here: {reason}")
    accepted = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    kwargs = {k: v for k, v in options.items() if takes_any or k in accepted}
    return cls(device=device, threads=threads, **kwargs)  # type: ignore[call-arg]


def create_backend_with_fallback(
    name: str,
    fallback: Optional[str],
    device: str = "cpu",
    threads: int = 1,
    logger: Optional[logging.Logger] = None,
    **options: Any,
) -> InferenceBackend:
    """Like :func:`create_backend`, but use ``fallback`` when ``name`` cannot run here.

    One warning (on ``logger``) names the requested backend, the reason and the fallback.
    ``fallback`` of ``None``, ``""`` or ``"none"`` disables the fallback.

    Raises:
        BackendUnavailableError: neither backend can run; the message has both reasons.
        UnknownNameError: ``fallback`` is not a registered backend.
    """
    logger = logger or LOG
    try:
        return create_backend(name, device, threads, **options)
    except (BackendUnavailableError, UnknownNameError) as exc:
        reason = str(exc)
    if not fallback or fallback == "none" or fallback == name:
        raise BackendUnavailableError(f"{reason}; no fallback backend is configured (model.fallback_backend)")
    try:
        backend = create_backend(fallback, device, threads, **options)
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(f"{reason}; the fallback {fallback!r} cannot run either: {exc}") from None
    logger.warning("%s; using the fallback backend %r instead (model.fallback_backend)", reason, fallback)
    return backend


__all__ = ["BACKENDS", "TORCH_BACKEND_HINT", "InferenceBackend", "create_backend", "create_backend_with_fallback"]
