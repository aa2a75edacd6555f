"""Training's class lists, on top of the runtime's one class-name table.

Names, aliases and every dataset's own codes live in :mod:`ros2_affect.bags.labels`
(:data:`~ros2_affect.bags.labels.EXPRESSION_ALIASES`) and :mod:`ros2_affect.bags.photos`
(AffectNet categories, FER2013 folders and csv codes); the readers there turn a dataset's
labels into canonical names. What is training's own: the target class lists (the canonical
seven, optionally contempt); ``-1`` (:data:`DROP`) is a row's index when it has no class of
the list.
"""

from __future__ import annotations

from typing import Sequence, Tuple

from ros2_affect.bags.labels import KNOWN_EXPRESSIONS, expression_name
from ros2_affect.bags.photos import FER2013_FOLDERS
from ros2_affect.core.types import CANONICAL_EXPRESSIONS

__all__ = ["CLASSES_7", "CLASSES_8", "DROP", "FER2013_FOLDERS", "canonical_name", "class_names"]

#: Class index of a row without a class of the target list.
DROP = -1
#: The seven canonical classes.
CLASSES_7: Tuple[str, ...] = tuple(CANONICAL_EXPRESSIONS)
#: The seven canonical classes plus contempt (AffectNet's 8-class setting).
CLASSES_8: Tuple[str, ...] = tuple(KNOWN_EXPRESSIONS)


def class_names(include_contempt: bool = False) -> Tuple[str, ...]:
    """The target class list: the canonical seven, then contempt if asked."""
    return CLASSES_8 if include_contempt else CLASSES_7


def canonical_name(name: str, accepted: Sequence[str] = CLASSES_8) -> str:
    """Map a spelling (``"Angry"``, ``"happiness"``) to its canonical name in ``accepted``.

    Raises:
        LabelError (a DatasetError): unknown or not accepted; the message lists the
            accepted names, their aliases and the closest match.
    """
    return expression_name(name, "", tuple(accepted))
