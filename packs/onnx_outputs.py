"""Find the class-probability output of an exported ONNX classifier and make it a
plain (n, k) float tensor, which is what a pack serves.

Exporters name and shape that output differently:

- skl2onnx's defaults (`to_onnx(clf, X)`) give an `output_label` tensor and an
  `output_probability` *sequence of maps* built by a `ZipMap` node from an (n, k)
  tensor. The pack serves that tensor: the ZipMap node and its output are removed,
  the tensor becomes a graph output, every other node is kept as exported.
- `options={"zipmap": False}` and most other exporters give the tensor directly.
- A network may end in logits; with `logits=True` one `Softmax` node is appended.

The ZipMap node also lists the class labels in column order, which the packer uses
as the default labels and to check the ones it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

from packs.errors import PackerInputInvalid

_FLOAT_TYPES = {1: "float", 11: "double"}
_SOFTMAX_OUTPUT = "probabilities"


@dataclass(frozen=True)
class ProbabilityOutput:
    """The model to pack and where its probabilities come out."""

    model_bytes: bytes
    """The model as exported, with at most the ZipMap unwrapped or a Softmax added."""
    output_name: str
    """The (n, k) float tensor holding the class probabilities."""
    source: str
    """What was found and what, if anything, was changed, for people."""
    model_labels: list[str] | None
    """Class labels in column order as the model lists them (ZipMap), else None."""
    raw_output_name: str
    """The model's own tensor: `output_name`, or the logits a softmax was put on."""


def describe_output(value_info) -> str:  # type: ignore[no-untyped-def]
    """`name (tensor double [N, 3])` or `name (sequence of maps)`, for messages."""
    kind = value_info.type.WhichOneof("value")
    if kind == "tensor_type":
        t = value_info.type.tensor_type
        from onnx import TensorProto

        elem = TensorProto.DataType.Name(t.elem_type).lower()
        dims = [d.dim_value or d.dim_param or "N" for d in t.shape.dim]
        return f"{value_info.name} (tensor {elem} {dims})"
    if kind == "sequence_type":
        inner = value_info.type.sequence_type.elem_type.WhichOneof("value")
        return f"{value_info.name} (sequence of {inner.replace('_type', '')}s)"
    return f"{value_info.name} ({kind})"


def _is_probability_tensor(value_info) -> bool:  # type: ignore[no-untyped-def]
    if value_info.type.WhichOneof("value") != "tensor_type":
        return False
    t = value_info.type.tensor_type
    return t.elem_type in _FLOAT_TYPES and len(t.shape.dim) == 2


def _zipmap_producing(model, name: str):  # type: ignore[no-untyped-def]
    return next(
        (n for n in model.graph.node if n.op_type == "ZipMap" and name in n.output),
        None,
    )


def _zipmap_labels(node) -> list[str]:  # type: ignore[no-untyped-def]
    for attr in node.attribute:
        if attr.name == "classlabels_strings":
            return [s.decode() for s in attr.strings]
        if attr.name == "classlabels_int64s":
            return [str(i) for i in attr.ints]
    return []


def _candidates(model) -> list[str]:  # type: ignore[no-untyped-def]
    """Outputs that can hold probabilities: 2-D float tensors and ZipMap outputs."""
    return [
        o.name
        for o in model.graph.output
        if _is_probability_tensor(o) or _zipmap_producing(model, o.name) is not None
    ]


def _choices(model) -> str:  # type: ignore[no-untyped-def]
    return ", ".join(describe_output(o) for o in model.graph.output)


def probability_output(
    model, *, output_name: str | None = None, logits: bool = False
) -> ProbabilityOutput:  # type: ignore[no-untyped-def]
    """The probability output of `model` (an `onnx.ModelProto`, changed in place
    when a ZipMap is unwrapped or a Softmax appended)."""
    outputs = {o.name: o for o in model.graph.output}
    if output_name is None:
        found = _candidates(model)
        if len(found) != 1:
            what = "no output" if not found else f"{len(found)} outputs"
            raise PackerInputInvalid(
                f"{what} of the model can hold class probabilities; outputs: "
                f"{_choices(model)}; pass --output-name"
            )
        output_name = found[0]
    elif output_name not in outputs:
        raise PackerInputInvalid(
            f"the model has no output {output_name!r}; outputs: {_choices(model)}"
        )
    chosen = outputs[output_name]
    zipmap = _zipmap_producing(model, output_name)
    labels = None
    if zipmap is not None:
        labels = _zipmap_labels(zipmap) or None
        tensor, source = _unwrap_zipmap(model, zipmap)
    elif _is_probability_tensor(chosen):
        tensor, source = output_name, f"tensor output {output_name!r}"
    else:
        raise PackerInputInvalid(
            f"output {describe_output(chosen)} is not an (n, k) float tensor nor "
            f"a ZipMap output; outputs: {_choices(model)}"
        )
    raw = tensor
    if logits:
        tensor = _append_softmax(model, tensor)
        source += f", softmax applied (--logits) as output {tensor!r}"
    import onnx

    onnx.checker.check_model(model)
    return ProbabilityOutput(model.SerializeToString(), tensor, source, labels, raw)


def _unwrap_zipmap(model, node) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    from onnx import TensorProto, helper

    tensor = node.input[0]
    width = len(_zipmap_labels(node)) or None
    elem = _inferred_elem_type(model, tensor) or TensorProto.FLOAT
    kept = [o for o in model.graph.output if o.name not in node.output]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    model.graph.output.append(
        helper.make_tensor_value_info(tensor, elem, [None, width])
    )
    model.graph.node.remove(node)
    return (
        tensor,
        f"ZipMap output {node.output[0]!r} unwrapped to its tensor {tensor!r}",
    )


def _inferred_elem_type(model, name: str) -> int | None:  # type: ignore[no-untyped-def]
    """Element type of an intermediate tensor, from ONNX shape inference."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    for info in inferred.graph.value_info:
        if info.name == name:
            return int(info.type.tensor_type.elem_type) or None
    return None


def _append_softmax(model, tensor: str) -> str:  # type: ignore[no-untyped-def]
    from onnx import helper

    taken = {o.name for o in model.graph.output} | {
        out for n in model.graph.node for out in n.output
    }
    name = _SOFTMAX_OUTPUT
    while name in taken:
        name += "_"
    source = next(o for o in model.graph.output if o.name == tensor)
    model.graph.node.append(helper.make_node("Softmax", [tensor], [name], axis=1))
    out = helper.make_tensor_value_info(
        name,
        source.type.tensor_type.elem_type,
        [None, source.type.tensor_type.shape.dim[1].dim_value or None],
    )
    model.graph.output.append(out)
    return name
