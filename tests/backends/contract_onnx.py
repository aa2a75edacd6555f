"""Small real ONNX graphs that follow the model contract (ros2_affect/backends/base.py).

Built with ``onnx.helper`` (no torch): a frame graph ``image [N,C,S,S] -> logits [N,K],
valence_arousal [N,2]`` (conv -> relu -> global pool -> two linear heads), an encoder
``image -> features [N,D]`` and a sequence head ``features [N,T,D] -> logits, va``.
Weights come from a seeded generator, so every run builds the same file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ros2_affect.backends.base import ModelMetadata
from ros2_affect.core.types import CANONICAL_EXPRESSIONS


def contract_metadata(role: str, channels: int = 1, size: int = 48, length: int = 8, dim: int = 16,
                      model_id: str = "test_model-0.1") -> ModelMetadata:
    return ModelMetadata(
        role=role,
        model_id=model_id,
        class_names=CANONICAL_EXPRESSIONS,
        input_size=size,
        channels=channels,
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
        sequence_length=length if role == "sequence" else 1,
        feature_dim=dim,
        va_mode="derived",
        alignment={"margin": 0.25},
    )


def make_contract_onnx(path: Path, role: str, channels: int = 1, size: int = 48, length: int = 8, dim: int = 16,
                       props: Optional[Dict[str, str]] = None, seed: int = 0) -> Path:
    """Write a contract graph for ``role`` to ``path``; ``props`` overrides metadata_props."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    k = len(CANONICAL_EXPRESSIONS)
    inits = []

    def weight(name: str, *shape: int) -> str:
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name))
        return name

    nodes = []
    if role in ("frame", "encoder"):
        graph_input = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", channels, size, size])
        nodes += [
            helper.make_node("Conv", ["image", weight("conv_w", dim, channels, 3, 3), weight("conv_b", dim)], ["c"],
                             pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["g"]),
            helper.make_node("Flatten", ["g"], ["feat"], axis=1),
        ]
    else:
        graph_input = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", length, dim])
        nodes += [helper.make_node("ReduceMean", ["features"], ["feat"], axes=[1], keepdims=0)]
    if role == "encoder":
        nodes.append(helper.make_node("Gemm", ["feat", weight("enc_w", dim, dim), weight("enc_b", dim)], ["features"]))
        outputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", dim])]
    else:
        nodes += [
            helper.make_node("Gemm", ["feat", weight("cls_w", dim, k), weight("cls_b", k)], ["logits"]),
            helper.make_node("Gemm", ["feat", weight("va_w", dim, 2), weight("va_b", 2)], ["va_raw"]),
            helper.make_node("Tanh", ["va_raw"], ["valence_arousal"]),
        ]
        outputs = [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k]),
            helper.make_tensor_value_info("valence_arousal", TensorProto.FLOAT, ["N", 2]),
        ]
    graph = helper.make_graph(nodes, f"contract_{role}", [graph_input], outputs, initializer=inits)
    # opset 13: ReduceMean still takes axes as an attribute; old enough for TensorRT 8.6.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    meta = props if props is not None else contract_metadata(role, channels, size, length, dim).to_props()
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
