"""Every dataset's expression order and its mapping to the package's canonical order.

The one place these mappings live: loaders, the evaluation tool and the tests import
them from here. The canonical order is
:data:`ros2_affect.core.types.CANONICAL_EXPRESSIONS` (neutral, happy, sad, surprise,
fear, disgust, anger), optionally followed by :data:`~ros2_affect.core.types.CONTEMPT`.

A mapping is a lookup table ``table[source_code] -> canonical index`` with
:data:`DROP` (``-1``) for codes that are not an expression of the target class list
(AffectNet's "None"/"Uncertain"/"No-Face", Aff-Wild2's "Other" unless kept, contempt in
7-class mode), so a whole label column converts with ``table[codes]``.
"""

from __future__ import annotations

from typing import Dict, Iterable, Sequence, Tuple

import numpy as np

from ros2_affect.core.types import CANONICAL_EXPRESSIONS, CONTEMPT
from ros2_affect.errors import DatasetError, did_you_mean

#: Table value for a source code that has no class in the target list.
DROP = -1
#: The seven canonical classes.
CLASSES_7: Tuple[str, ...] = tuple(CANONICAL_EXPRESSIONS)
#: The seven canonical classes plus contempt (AffectNet's 8-class setting).
CLASSES_8: Tuple[str, ...] = CLASSES_7 + (CONTEMPT,)
#: Aff-Wild2's "Other" class, appended after the canonical seven when it is kept.
OTHER = "other"

# -- the datasets' own orders (index = the code in the dataset's files) -----------------------

#: AffectNet ``expression`` codes 0..10 (official manual). 8-10 are not expressions.
AFFECTNET_CODES: Tuple[str, ...] = (
    "neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt",
    "none", "uncertain", "no-face",
)
#: Aff-Wild2 EXPR_Set codes 0..7, as in the file header
#: ``Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other`` (-1: unannotated).
AFFWILD2_CODES: Tuple[str, ...] = ("neutral", "anger", "disgust", "fear", "happy", "sad", "surprise", OTHER)
AFFWILD2_EXPR_HEADER = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
#: ``fer2013.csv`` ``emotion`` codes 0..6 (Kaggle/ICML 2013 release).
FER2013_CSV_CODES: Tuple[str, ...] = ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: FER2013 image-folder class names -> canonical names.
FER2013_FOLDERS: Dict[str, str] = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "happy",
    "neutral": "neutral",
    "sad": "sad",
    "surprise": "surprise",
}

#: Spellings met in dataset folders and annotation headers -> canonical name
#: (lower case). Used to read class-named image folders.
ALIASES: Dict[str, str] = {
    **{name: name for name in CLASSES_8},
    "angry": "anger",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "fearful": "fear",
    "disgusted": "disgust",
    "contemptuous": "contempt",
}


def class_names(include_contempt: bool = False, include_other: bool = False) -> Tuple[str, ...]:
    """The target class list: the canonical seven, then contempt and/or "other" if asked."""
    names = CLASSES_8 if include_contempt else CLASSES_7
    return names + ((OTHER,) if include_other else ())


def canonical_name(name: str, accepted: Sequence[str] = CLASSES_8) -> str:
    """Map a spelling (``"Angry"``, ``"happiness"``) to its canonical name.

    Raises:
        DatasetError: ``name`` is not a known expression or not in ``accepted``; the
            message lists the accepted names and the closest match.
    """
    key = name.strip().lower()
    canonical = ALIASES.get(key, key)
    if canonical not in accepted:
        choices = sorted(set(accepted) | {k for k, v in ALIASES.items() if v in accepted})
        hint = did_you_mean(key, choices)
        raise DatasetError(
            f"expression name {name!r} is not one of the accepted classes {list(accepted)} "
            f"(aliases: {', '.join(sorted(k for k in ALIASES if ALIASES[k] != k))}){hint}"
        )
    return canonical


def code_table(source: Iterable[str], target: Sequence[str]) -> np.ndarray:
    """``(len(source),)`` int64: index in ``target`` of each source class, :data:`DROP` if absent."""
    index = {name: i for i, name in enumerate(target)}
    return np.asarray([index.get(name, DROP) for name in source], dtype=np.int64)


def affectnet_table(include_contempt: bool = False) -> np.ndarray:
    """AffectNet code (0..10) -> index in :func:`class_names` (``include_contempt``)."""
    return code_table(AFFECTNET_CODES, class_names(include_contempt))


def affwild2_table(keep_other: bool = False) -> np.ndarray:
    """Aff-Wild2 code (0..7) -> index in ``class_names(include_other=keep_other)``."""
    return code_table(AFFWILD2_CODES, class_names(include_other=keep_other))


def fer2013_csv_table() -> np.ndarray:
    """``fer2013.csv`` code (0..6) -> canonical index."""
    return code_table(FER2013_CSV_CODES, CLASSES_7)


def map_codes(codes: np.ndarray, table: np.ndarray, dataset: str) -> np.ndarray:
    """Convert a column of dataset codes with ``table``; codes outside it map to :data:`DROP`.

    Args:
        codes: int array of the dataset's own codes (any negative value: unannotated).
        table: from one of the ``*_table`` functions.
        dataset: name used in error messages.

    Returns:
        int64 array of target indices or :data:`DROP`, same shape as ``codes``.
    """
    codes = np.asarray(codes)
    if codes.size and not np.issubdtype(codes.dtype, np.integer):
        raise DatasetError(f"{dataset}: expression codes must be integers, got dtype {codes.dtype}")
    codes = codes.astype(np.int64)
    valid = (codes >= 0) & (codes < len(table))
    out = np.full(codes.shape, DROP, dtype=np.int64)
    out[valid] = table[codes[valid]]
    return out
