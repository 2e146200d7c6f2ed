"""Adaptive batching: concurrent requests share model calls; answers stay per
request."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batching import ModelBatcher


class SlowModel:
    """Identity 'probabilities' that take a while, recording each call's rows."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            self.calls.append(len(x))
        time.sleep(0.01)
        return x * 2


def test_concurrent_requests_are_coalesced_and_answered_in_order() -> None:
    model = SlowModel()

    async def main() -> list[np.ndarray]:
        batcher = ModelBatcher(model, max_batch_rows=64)
        inputs = [np.full((i % 3 + 1, 2), float(i)) for i in range(20)]
        outs = await asyncio.gather(*(batcher.predict(x) for x in inputs))
        for x, out in zip(inputs, outs, strict=True):
            np.testing.assert_array_equal(out, x * 2)
        return outs

    asyncio.run(main())
    assert sum(model.calls) == sum(i % 3 + 1 for i in range(20))
    assert len(model.calls) < 20  # rows of waiting requests went into shared calls
    assert max(model.calls) <= 64


def test_a_batch_never_exceeds_max_rows() -> None:
    model = SlowModel()

    async def main() -> None:
        batcher = ModelBatcher(model, max_batch_rows=5)
        await asyncio.gather(*(batcher.predict(np.ones((2, 1))) for _ in range(10)))

    asyncio.run(main())
    assert max(model.calls) <= 5


def test_a_model_error_reaches_every_waiting_request() -> None:
    def broken(_x: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    async def main() -> list[object]:
        batcher = ModelBatcher(broken, max_batch_rows=8)
        return await asyncio.gather(
            *(batcher.predict(np.ones((1, 1))) for _ in range(3)),
            return_exceptions=True,
        )

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)


def test_require_gpu_refuses_a_cpu_only_session(default_pack) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    from packs.errors import GpuRequired
    from packs.loader import ModelPack

    pack = ModelPack.load(default_pack)
    if pack.provider == "CUDAExecutionProvider":
        pytest.skip("this machine has a working GPU: the refusal cannot happen here")
    assert "CUDAExecutionProvider" in ort.get_available_providers()  # listed, unusable
    with pytest.raises(GpuRequired, match="CPUExecutionProvider"):
        ModelPack.load(default_pack, require_gpu=True)


def test_cuda_is_asked_for_without_tf32_unless_allowed() -> None:
    """TF32 moves CUDA probabilities ~1e-3 away from the CPU's; the loader asks
    the CUDA provider for full float32 unless the setting allows TF32."""
    from packs.loader import _with_options

    cuda, cpu = "CUDAExecutionProvider", "CPUExecutionProvider"
    assert _with_options([cuda, cpu], allow_tf32=False) == [
        (cuda, {"use_tf32": "0"}),
        cpu,
    ]
    assert _with_options([cuda, cpu], allow_tf32=True)[0] == (cuda, {"use_tf32": "1"})
    assert _with_options([cpu], allow_tf32=False) == [cpu]


def test_a_pack_loads_with_cuda_options_where_cuda_cannot_run(default_pack) -> None:  # type: ignore[no-untyped-def]
    from packs.loader import ModelPack

    for allow in (False, True):
        pack = ModelPack.load(default_pack, allow_tf32=allow)
        assert (
            pack.predict_proba(np.zeros((2, len(pack.metadata.feature_names)))).shape[0]
            == 2
        )
