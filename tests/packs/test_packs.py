"""Building, validating and loading model packs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from packs.build_default import LABELS, penguin_frame, to_onnx, train_model
from packs.byo import pack_onnx
from packs.errors import (
    PackerInputInvalid,
    PackFileMissing,
    PackMetadataInvalid,
    PackModelMismatch,
)
from packs.format import METADATA_FILE, MODEL_FILE, POLICY_FILE
from packs.loader import ModelPack, load_table
from packs.writer import split_frame

FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def copy_pack(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_metadata(pack: Path, change) -> None:  # type: ignore[no-untyped-def]
    path = pack / METADATA_FILE
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_default_pack_metadata_is_complete(default_pack: Path) -> None:
    pack = ModelPack.load(default_pack)
    meta = pack.metadata
    assert meta.labels == LABELS
    assert meta.feature_names == FEATURES
    assert abs(sum(meta.training_priors.values()) - 1) < 1e-9
    assert meta.metrics["test_accuracy"] >= 0.95
    for name in FEATURES:
        bounds = meta.feature_bounds[name]
        assert bounds.min < bounds.quantiles["0.5"] < bounds.max
    assert pack.provider == "CPUExecutionProvider"  # no GPU on CI; the fallback is real
    reference = load_table(pack.reference_path())
    assert {*FEATURES, "label", "predicted_label"} <= set(reference.columns)
    assert "island" in load_table(pack.test_path()).columns


def test_default_pack_carries_the_policy_with_island_contexts(
    default_pack: Path,
) -> None:
    from guardrails.policy import Policy

    policy = Policy.load(default_pack / POLICY_FILE)
    policy.check_against(ModelPack.load(default_pack).metadata)
    assert policy.contexts == ["Biscoe", "Dream", "Torgersen"]


def test_onnx_matches_scikit_learn_to_1e5() -> None:
    splits = split_frame(
        penguin_frame(), validation_fraction=0.2, test_fraction=0.2, seed=0
    )
    model = train_model(splits.train)
    import onnxruntime as ort

    session = ort.InferenceSession(to_onnx(model), providers=["CPUExecutionProvider"])
    x = penguin_frame()[FEATURES].to_numpy(dtype=np.float32)
    (onnx_probs,) = session.run(["probabilities"], {"features": x})
    np.testing.assert_allclose(onnx_probs, model.predict_proba(x), atol=1e-5)


def test_default_pack_build_is_deterministic(
    default_pack: Path, tmp_path: Path
) -> None:
    from packs.build_default import build_default_pack

    again = build_default_pack(tmp_path / "again")
    assert again.version == ModelPack.load(default_pack).metadata.version
    assert (tmp_path / "again" / MODEL_FILE).read_bytes() == (
        default_pack / MODEL_FILE
    ).read_bytes()


def test_default_pack_is_byte_identical_across_data_folders_and_processes(
    tmp_path: Path,
) -> None:
    """`build-pack` in two data folders (different depths), in two processes with
    different hash seeds and BLAS thread counts: every file the same bytes."""
    root = Path(__file__).resolve().parents[2]
    folders = [tmp_path / "a" / "data", tmp_path / "b" / "deeper" / "data"]
    for folder, (seed, threads) in zip(folders, [("1", "1"), ("2", "2")], strict=True):
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
        env |= {
            "FLYWHEEL_DATA_DIR": str(folder),
            "PYTHONHASHSEED": seed,
            "OMP_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
        }
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", "build-pack"],
            cwd=root,
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    a, b = (f / "packs" / "penguins" for f in folders)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and MODEL_FILE in names
    differing = [n for n in names if (a / n).read_bytes() != (b / n).read_bytes()]
    assert differing == []
    assert str(folders[0]) not in (a / METADATA_FILE).read_text()


def test_probabilities_are_distributions(default_pack: Path) -> None:
    pack = ModelPack.load(default_pack)
    probs = pack.predict_proba(penguin_frame()[FEATURES].to_numpy())
    assert probs.shape == (342, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_missing_model_file_fails_with_its_path(
    default_pack: Path, tmp_path: Path
) -> None:
    pack = copy_pack(default_pack, tmp_path / "p")
    (pack / MODEL_FILE).unlink()
    with pytest.raises(PackFileMissing, match=r"model\.onnx"):
        ModelPack.load(pack)


def test_missing_metadata_fails(default_pack: Path, tmp_path: Path) -> None:
    pack = copy_pack(default_pack, tmp_path / "p")
    (pack / METADATA_FILE).unlink()
    with pytest.raises(PackFileMissing, match=r"metadata\.json"):
        ModelPack.load(pack)


def test_labels_not_matching_output_width_fail(
    default_pack: Path, tmp_path: Path
) -> None:
    pack = copy_pack(default_pack, tmp_path / "p")

    def add_label(meta: dict) -> None:  # type: ignore[type-arg]
        meta["output"]["labels"].append("Emperor")
        meta["training_priors"]["Emperor"] = 0.0

    edit_metadata(pack, add_label)
    with pytest.raises(PackModelMismatch, match=r"number of labels.*4.*3"):
        ModelPack.load(pack)


def test_wrong_input_name_fails(default_pack: Path, tmp_path: Path) -> None:
    pack = copy_pack(default_pack, tmp_path / "p")
    edit_metadata(pack, lambda m: m["input"].__setitem__("onnx_name", "x"))
    with pytest.raises(PackModelMismatch, match=r"input name.*'x'.*features"):
        ModelPack.load(pack)


def test_wrong_feature_count_fails(default_pack: Path, tmp_path: Path) -> None:
    pack = copy_pack(default_pack, tmp_path / "p")

    def drop_feature(meta: dict) -> None:  # type: ignore[type-arg]
        meta["input"]["features"].pop()
        meta["feature_bounds"].pop("body_mass_g")

    edit_metadata(pack, drop_feature)
    with pytest.raises(PackModelMismatch, match="input shape"):
        ModelPack.load(pack)


def test_invalid_metadata_names_the_field(default_pack: Path, tmp_path: Path) -> None:
    pack = copy_pack(default_pack, tmp_path / "p")
    edit_metadata(pack, lambda m: m["training_priors"].__setitem__("Adelie", 5.0))
    with pytest.raises(PackMetadataInvalid, match="training_priors"):
        ModelPack.load(pack)


def test_bring_your_own_onnx_from_csv(default_pack: Path, tmp_path: Path) -> None:
    frame = penguin_frame().rename(columns={"label": "species"}).drop(columns="island")
    csv = tmp_path / "sample.csv"
    frame.to_csv(csv, index=False)
    meta = pack_onnx(
        default_pack / MODEL_FILE,
        csv,
        tmp_path / "byo",
        labels=LABELS,
        name="my-penguins",
        label_column="species",
    )
    loaded = ModelPack.load(tmp_path / "byo")
    assert loaded.metadata == meta
    assert meta.input.onnx_name == "features"
    assert meta.output.onnx_name == "probabilities"
    assert meta.feature_names == FEATURES
    assert meta.metrics["test_accuracy"] > 0.9


def test_bring_your_own_tensor_model_from_parquet(tmp_path: Path) -> None:
    """An image-shaped model (8x8 digits, 10 classes) packs and serves unchanged."""
    import pandas as pd
    from skl2onnx import to_onnx as skl_to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    model = LogisticRegression(max_iter=500).fit(digits.data, digits.target)
    onx = skl_to_onnx(
        model,
        initial_types=[("pixels", FloatTensorType([None, 64]))],
        options={id(model): {"zipmap": False}},
    )
    (tmp_path / "digits.onnx").write_bytes(onx.SerializeToString())
    frame = pd.DataFrame(digits.data, columns=[f"px{i}" for i in range(64)])
    frame["label"] = digits.target.astype(str)
    frame.to_parquet(tmp_path / "digits.parquet")
    meta = pack_onnx(
        tmp_path / "digits.onnx",
        tmp_path / "digits.parquet",
        tmp_path / "digits-pack",
        labels=[str(i) for i in range(10)],
        name="digits",
    )
    assert len(meta.feature_names) == 64
    pack = ModelPack.load(tmp_path / "digits-pack")
    assert pack.predict_proba(digits.data[:5]).shape == (5, 10)


def test_byo_refuses_labels_that_do_not_match_the_model(
    default_pack: Path, tmp_path: Path
) -> None:
    frame = penguin_frame().drop(columns="island")
    frame.to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(PackerInputInvalid, match=r"Chinstrap.*--labels does not name"):
        pack_onnx(
            default_pack / MODEL_FILE,
            tmp_path / "s.csv",
            tmp_path / "bad",
            labels=["Adelie", "Gentoo"],
            name="bad",
        )
    assert not (tmp_path / "bad").exists()
