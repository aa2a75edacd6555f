"""Argument and settings handling shared by the ``ros2-affect`` subcommands.

Every command that runs the pipeline reads the node's parameter file (``--config``, by
default the packaged ``config/affect.yaml``), so a replay or a run on a video uses what the
robot uses; ``--set KEY=VALUE`` changes single parameters on top of it.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ros2_affect.config import PipelineConfig, flatten, load_pipeline_config, pipeline_config_from_dict
from ros2_affect.settings import parse_override

CONFIG_HELP = "ROS 2 parameter file (default: the packaged config/affect.yaml)"


def plain_text(doc: Optional[str]) -> Optional[str]:
    """A docstring as plain text for ``--help``: Sphinx/reST markup removed (````x```` -> x,
    ``:func:`~a.b.c``` -> c, ``:class:`X``` -> X, ``::`` -> ``:``)."""
    if doc is None:
        return None
    text = re.sub(r":[a-z]+:`~([\w.]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], doc)
    text = re.sub(r":[a-z]+:`([^`<]*?)(?:\s*<[^>]*>)?`", lambda m: m.group(1), text)
    text = re.sub(r"``([^`]*)``", r"\1", text)
    text = re.sub(r"`([^`]*)`", r"\1", text)
    return re.sub(r"::$", ":", text, flags=re.MULTILINE)


def add_command(subparsers: Any, name: str, help: str, doc: Optional[str]) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows ``doc`` (the module docstring, as plain text) with its
    line breaks kept."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=plain_text(doc), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return parser


def add_config_arguments(parser: argparse.ArgumentParser, overrides: bool = True,
                         example: str = "model.kind=none") -> None:
    """``--config FILE`` (``args.config``) and, with ``overrides``, ``--set KEY=VALUE``
    (``args.overrides``, a list); read them with :func:`config_with_overrides`."""
    parser.add_argument("--config", type=Path, default=None, help=CONFIG_HELP)
    if overrides:
        parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                            help=f"override a pipeline parameter, e.g. --set {example} (repeatable)")


def apply_overrides(config: PipelineConfig, overrides: Sequence[str]) -> PipelineConfig:
    """``config`` with ``KEY=VALUE`` overrides (dotted keys, e.g. ``detector.min_score=0.6``).

    Values are parsed as YAML scalars (``model.kind=none``, ``landmarks.enabled=false``).

    Raises:
        ConfigError: a malformed override, an unknown key (with the closest one) or an
            invalid value.
    """
    if not overrides:
        return config
    values = flatten(config)
    for item in overrides:
        key, value = parse_override(item)
        values[key] = value
    return pipeline_config_from_dict(values)


def config_with_overrides(config_path: Optional[Path], overrides: Sequence[str] = ()) -> PipelineConfig:
    """The pipeline settings of a parameter file (None: the packaged one) with ``KEY=VALUE``
    overrides applied (see :func:`apply_overrides`).

    Raises:
        ConfigError: an unreadable parameter file, or a bad override.
    """
    return apply_overrides(load_pipeline_config(config_path), overrides)


# -- argument types: a bad value is one line naming the option, the value and what is accepted ---

#: A ROS 2 topic name as written into a bag: optionally absolute, tokens of letters, digits
#: and underscores that do not start with a digit, no empty token, no trailing slash.
_TOPIC_RE = re.compile(r"^/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


def topic_name(text: str) -> str:
    """argparse type: a valid ROS 2 topic name (``/camera/image_raw``, ``faces``)."""
    if not _TOPIC_RE.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a valid ROS 2 topic name; use letters, digits and '_' in '/'-separated parts that "
            "do not start with a digit, e.g. /camera/image_raw"
        )
    return text


def bounded_float(low: float, high: float, unit: str = "") -> Callable[[str], float]:
    """argparse type: a finite float in ``low..high`` (nan, inf and values outside are refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not accepted; pass a finite number in {_number(low)}..{_number(high)}{unit}"
            )
        return value

    return parse


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def track_seed(text: str) -> int:
    """argparse type: a track-id seed, an integer in 0..2**32-1."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text!r} is not accepted; pass a seed in 0..{2**32 - 1}")
    return value
