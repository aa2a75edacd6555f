"""Small real ONNX graphs following the model contract, for backend, model and pipeline tests.

Built with ``onnx.helper`` (no torch), seeded, so each call writes the same graph. Every
output depends on every input pixel or feature (dense layers), so the tests can tell
frames, flips and sequence orders apart. Options break the contract on purpose
(``input_name``, ``input_shape``, ``props``, ``drop_keys``, ``with_metadata=False``: no
metadata at all) or make the graph emit NaN
(``nan_when_dark``: logits + log(mean input), NaN for a crop darker than the mean) or
valence/arousal outside -1..1 (``va_tanh=False``: the raw linear output).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from ros2_affect.backends.base import METADATA_PREFIX, ModelMetadata
from ros2_affect.core.types import CANONICAL_EXPRESSIONS


def graph_metadata(
    role: str,
    channels: int = 1,
    size: int = 48,
    length: int = 4,
    dim: int = 16,
    model_id: str = "test_affect-0.1",
    classes: Sequence[str] = CANONICAL_EXPRESSIONS,
    va_mode: str = "regressed",
    alignment: Optional[Dict[str, object]] = None,
) -> ModelMetadata:
    return ModelMetadata(
        role=role,
        model_id=model_id,
        class_names=tuple(classes),
        input_size=size,
        channels=channels,
        mean=(0.5,) * channels,
        std=(0.5,) * channels,
        sequence_length=length if role == "sequence" else 1,
        feature_dim=dim,
        va_mode=va_mode,
        alignment=dict(alignment) if alignment is not None else {"margin": 0.25},
    )


def write_graph(
    path: Path,
    role: str,
    *,
    channels: int = 1,
    size: int = 48,
    length: int = 4,
    dim: int = 16,
    model_id: str = "test_affect-0.1",
    classes: Sequence[str] = CANONICAL_EXPRESSIONS,
    va_mode: str = "regressed",
    alignment: Optional[Dict[str, object]] = None,
    with_va_output: bool = True,
    input_name: Optional[str] = None,
    input_shape: Optional[Sequence[object]] = None,
    props: Optional[Dict[str, str]] = None,
    drop_keys: Sequence[str] = (),
    with_metadata: bool = True,
    nan_when_dark: bool = False,
    va_tanh: bool = True,
    seed: int = 0,
) -> Path:
    """Write a contract graph for ``role`` (frame, encoder or sequence) to ``path``.

    ``props`` overrides single metadata entries (keys without the ``ros2_affect.`` prefix);
    the metadata written is :func:`graph_metadata` of the same arguments.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    k = len(classes)
    inits = []

    def weight(name: str, *shape: int, scale: float = 0.05) -> str:
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    x_name = input_name or ("features" if role == "sequence" else "image")
    if role == "sequence":
        shape = list(input_shape) if input_shape is not None else ["N", length, dim]
    else:
        shape = list(input_shape) if input_shape is not None else ["N", channels, size, size]
    width = int(np.prod([int(d) for d in shape[1:]]))  # weights fit the declared shape, even a wrong one
    graph_input = helper.make_tensor_value_info(x_name, TensorProto.FLOAT, shape)
    nodes = [helper.make_node("Flatten", [x_name], ["flat"], axis=1)]
    outputs = []
    if role == "encoder":
        nodes += [
            helper.make_node("Gemm", ["flat", weight("enc_w", width, dim), weight("enc_b", dim)], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["features"]),
        ]
        outputs.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", dim]))
    else:
        logits = "logits"
        if nan_when_dark:
            logits = "raw_logits"
            nodes += [
                helper.make_node("ReduceMean", ["flat"], ["mean"], axes=[1], keepdims=1),
                helper.make_node("Log", ["mean"], ["log_mean"]),
            ]
        nodes.append(helper.make_node("Gemm", ["flat", weight("cls_w", width, k), weight("cls_b", k)], [logits]))
        if nan_when_dark:
            nodes.append(helper.make_node("Add", ["raw_logits", "log_mean"], ["logits"]))
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k]))
        if with_va_output:
            nodes += [
                helper.make_node("Gemm", ["flat", weight("va_w", width, 2), weight("va_b", 2)], ["va_pre"]),
                helper.make_node("Tanh" if va_tanh else "Identity", ["va_pre"], ["valence_arousal"]),
            ]
            outputs.append(helper.make_tensor_value_info("valence_arousal", TensorProto.FLOAT, ["N", 2]))
    graph = helper.make_graph(nodes, f"test_{role}", [graph_input], outputs, initializer=inits)
    # opset 13: ReduceMean still takes axes as an attribute; old enough for TensorRT 8.6.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    meta = graph_metadata(role, channels, size, length, dim, model_id, classes, va_mode, alignment).to_props()
    for key, value in (props or {}).items():
        meta[METADATA_PREFIX + key] = value
    for key in drop_keys:
        meta.pop(METADATA_PREFIX + key, None)
    for key, value in (meta.items() if with_metadata else ()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)
