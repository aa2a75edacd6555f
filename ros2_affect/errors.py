"""Narrow error classes. Every message names the value, what is accepted and the fix."""

from typing import Iterable


class AffectError(Exception):
    """Base class of all errors raised by ros2_affect."""


class ConfigError(AffectError, ValueError):
    """A configuration value or key is invalid."""


class AssetMissingError(AffectError, FileNotFoundError):
    """A model file the package needs (detector, landmarks, affect model) is absent."""


class ModelLoadError(AffectError):
    """A model file exists but cannot be loaded (corrupt, wrong format, wrong version)."""


class ModelContractError(ModelLoadError):
    """A model's inputs, outputs or metadata do not follow the documented contract."""


class BackendUnavailableError(AffectError):
    """An inference backend cannot run here (library or device missing)."""


class InvalidImageError(AffectError, ValueError):
    """An input image is empty, of the wrong dtype, shape or encoding, or truncated."""


class UnknownNameError(AffectError, KeyError):
    """A registry lookup for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class BagError(AffectError):
    """A rosbag cannot be read or written as asked (missing topic, corrupt file)."""


class DatasetError(AffectError, ValueError):
    """A training/evaluation dataset is missing, has an unexpected layout or bad records."""


class InvalidCameraInfoError(AffectError, ValueError):
    """A sensor_msgs/CameraInfo cannot be used (uncalibrated, unknown distortion model, other image size)."""


class InferenceError(AffectError):
    """A loaded model fails while running (inside the inference library): every frame would fail."""


class OutputError(AffectError):
    """An output path cannot be written as asked: it is (or holds, or lies inside) an input,
    it exists and ``--overwrite`` was not given, or it holds files the tool did not write."""


class Interrupted(AffectError):
    """A run stopped on SIGINT or SIGTERM after closing what it had written (kept as partial).

    ``exit_code`` is the shell's convention for a process ended by that signal (128 + number).
    """

    def __init__(self, message: str, signal_name: str = "SIGINT") -> None:
        import signal

        super().__init__(message)
        self.signal_name = signal_name
        self.exit_code = 128 + int(getattr(signal.Signals, signal_name, signal.SIGINT))


def did_you_mean(name: object, choices: Iterable[object], prefix: str = "") -> str:
    """``" (did you mean 'x'?)"`` for the accepted choice closest to ``name``, or ``""``.

    The one closest-name hint of every error message that names what is accepted
    (configuration keys and choices, registries, dataset splits and class names).
    """
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""
