"""Load a model pack from disk and run its ONNX model with onnxruntime.

`ModelPack.load` validates everything at start-up (files present, metadata valid,
ONNX input/output names and widths matching the metadata) so that a broken pack
stops the service with one clear message instead of failing on the first request.
One `ModelPack` holds one inference session; each worker loads its own.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from packs.calibration_scores import CalibrationSet, read_calibration
from packs.errors import (
    GpuRequired,
    PackFileMissing,
    PackMetadataInvalid,
    PackModelMismatch,
    PackModelUnreadable,
)
from packs.format import (
    METADATA_FILE,
    MODEL_FILE,
    POLICY_FILE,
    REFERENCE_FILE,
    TEST_FILE,
    PackMetadata,
)

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
__all__ = ["POLICY_FILE", "ModelPack", "load_table", "metadata_json", "read_metadata"]


def read_metadata(pack_dir: Path) -> PackMetadata:
    """Read and validate `metadata.json` of a pack directory."""
    path = Path(pack_dir) / METADATA_FILE
    if not path.is_file():
        raise PackFileMissing(path)
    try:
        return PackMetadata.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in exc.errors()
        )
        raise PackMetadataInvalid(path, problems) from None


def _with_options(
    providers: list[str], allow_tf32: bool
) -> list[str | tuple[str, dict[str, str]]]:
    """Providers as onnxruntime takes them, with CUDA's options. onnxruntime's CUDA
    provider multiplies float32 matrices in TF32 by default on Ampere and newer
    GPUs (a 10-bit mantissa): probabilities then differ from the CPU's by about
    1e-3, enough to move a threshold or a conformal set. It is off unless asked."""
    cuda = {"use_tf32": "1" if allow_tf32 else "0"}
    return [(p, cuda) if p == "CUDAExecutionProvider" else p for p in providers]


def _import_onnxruntime():  # type: ignore[no-untyped-def]
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    # The CUDA-to-CPU fallback logs an error line per session; the provider actually
    # used is read back from the session and reported instead.
    ort.set_default_logger_severity(4)
    return ort


@dataclass
class ModelPack:
    """A loaded pack: metadata plus one onnxruntime session."""

    path: Path
    metadata: PackMetadata
    session: object
    provider: str
    """The execution provider onnxruntime actually uses (read back, not requested)."""

    @classmethod
    def load(
        cls,
        pack_dir: Path | str,
        *,
        providers: list[str] | tuple[str, ...] = DEFAULT_PROVIDERS,
        require_gpu: bool = False,
        intra_op_threads: int = 1,
        allow_tf32: bool = False,
    ) -> ModelPack:
        pack_dir = Path(pack_dir)
        meta = read_metadata(pack_dir)
        model_path = pack_dir / MODEL_FILE
        if not model_path.is_file():
            raise PackFileMissing(model_path)
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        available = set(ort.get_available_providers())
        wanted = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(
                str(model_path), options, providers=_with_options(wanted, allow_tf32)
            )
        except Exception as exc:  # onnxruntime's own errors (e.g. InvalidProtobuf)
            problem = str(exc).splitlines()[0].replace(str(model_path), "it")
            raise PackModelUnreadable(model_path, problem) from None
        used = session.get_providers()
        if require_gpu and "CUDAExecutionProvider" not in used:
            raise GpuRequired(used)
        _check_signature(session, meta)
        log.info("loaded pack %s %s on %s", meta.name, meta.version, used[0])
        return cls(path=pack_dir, metadata=meta, session=session, provider=used[0])

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, len(labels)), for rows in feature order."""
        spec = self.metadata.input
        x = np.ascontiguousarray(features, dtype=spec.dtype)
        if spec.tensor_shape is not None:
            x = x.reshape((x.shape[0], *spec.tensor_shape))
        (probs,) = self.session.run(  # type: ignore[attr-defined]
            [self.metadata.output.onnx_name], {spec.onnx_name: x}
        )
        return np.asarray(probs, dtype=np.float64)

    def calibration(self) -> CalibrationSet | None:
        """The validation rows kept for conformal sets; None if the pack has none."""
        return read_calibration(self.path, self.metadata.labels)

    def reference_path(self) -> Path:
        return self.path / REFERENCE_FILE

    def test_path(self) -> Path:
        return self.path / TEST_FILE

    def policy_path(self) -> Path:
        return self.path / POLICY_FILE


def _check_signature(session: object, meta: PackMetadata) -> None:
    inputs = {i.name: i for i in session.get_inputs()}  # type: ignore[attr-defined]
    outputs = {o.name: o for o in session.get_outputs()}  # type: ignore[attr-defined]
    if meta.input.onnx_name not in inputs:
        raise PackModelMismatch("input name", meta.input.onnx_name, sorted(inputs))
    if meta.output.onnx_name not in outputs:
        raise PackModelMismatch("output name", meta.output.onnx_name, sorted(outputs))
    width = outputs[meta.output.onnx_name].shape[-1]
    if isinstance(width, int) and width != len(meta.labels):
        raise PackModelMismatch(
            "output width (number of labels)", len(meta.labels), width
        )
    shape = inputs[meta.input.onnx_name].shape
    expected = meta.input.tensor_shape or [len(meta.feature_names)]
    actual = list(shape[1:])
    if all(isinstance(d, int) for d in actual) and actual != expected:
        raise PackModelMismatch("input shape per row", expected, actual)
    # Probe once: a model whose real output width differs from a symbolic shape
    # must fail here, at start-up, not on the first request.
    probe = np.zeros((1, len(meta.feature_names)), dtype=np.float32)
    pack = ModelPack(Path("."), meta, session, "")
    got = pack.predict_proba(probe).shape[-1]
    if got != len(meta.labels):
        raise PackModelMismatch(
            "output width (number of labels)", len(meta.labels), got
        )


def load_table(path: Path):  # type: ignore[no-untyped-def]
    """Read a pack's reference or test table (Parquet) as a pandas DataFrame."""
    import pandas as pd

    if not Path(path).is_file():
        raise PackFileMissing(Path(path))
    return pd.read_parquet(path)


def metadata_json(meta: PackMetadata) -> str:
    """Canonical JSON for a metadata file (sorted keys, stable across builds)."""
    return json.dumps(meta.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
