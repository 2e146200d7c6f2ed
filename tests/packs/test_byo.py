"""The bring-your-own packer on models as people export them, and on their mistakes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from guardrails.input_bounds import resolve_bounds
from guardrails.policy import Policy
from packs.byo import pack_onnx
from packs.errors import PackerInputInvalid
from packs.format import POLICY_FILE
from packs.loader import ModelPack, load_table


def _export(clf, x: np.ndarray, path: Path, **kwargs) -> Path:  # type: ignore[no-untyped-def]
    from skl2onnx import to_onnx

    path.write_bytes(to_onnx(clf, x, **kwargs).SerializeToString())
    return path


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Iris with integer targets, a logistic regression exported with the defaults,
    and the same model with string classes."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    tmp = tmp_path_factory.mktemp("iris")
    data = load_iris(as_frame=True)
    x = data.data.to_numpy()
    names = np.array(data.target_names)[data.target]
    frame = data.data.copy()
    frame["species"] = data.target
    frame.to_csv(tmp / "iris.csv", index=False)
    frame["species"] = names
    frame.to_csv(tmp / "iris-names.csv", index=False)
    return {
        "csv": tmp / "iris.csv",
        "names_csv": tmp / "iris-names.csv",
        "int_model": _export(
            LogisticRegression(max_iter=1000).fit(x, data.target), x, tmp / "i.onnx"
        ),
        "str_model": _export(
            LogisticRegression(max_iter=1000).fit(x, names), x, tmp / "s.onnx"
        ),
        "dir": tmp,
    }


def test_skl2onnx_default_export_packs_with_its_own_labels(
    iris: dict[str, Path], tmp_path: Path
) -> None:
    meta = pack_onnx(
        iris["int_model"],
        iris["csv"],
        tmp_path / "p",
        name="iris",
        label_column="species",
    )
    assert meta.labels == ["0", "1", "2"]
    assert "ZipMap output 'output_probability' unwrapped" in (meta.output.source or "")
    pack = ModelPack.load(tmp_path / "p")
    probs = pack.predict_proba(np.array([[5.1, 3.5, 1.4, 0.2]]))
    assert probs.shape == (1, 3) and probs[0].argmax() == 0
    assert meta.metrics["test_accuracy"] > meta.metrics["test_majority_rate"]
    assert meta.split is not None and meta.split.method == "stratified"
    assert meta.split.rows == {"fit": 90, "validation": 30, "test": 30, "bounds": 150}


def test_every_pack_carries_a_valid_generic_policy_for_its_labels(
    iris: dict[str, Path], tmp_path: Path
) -> None:
    meta = pack_onnx(
        iris["str_model"],
        iris["names_csv"],
        tmp_path / "p",
        name="iris",
        label_column="species",
    )
    text = (tmp_path / "p" / POLICY_FILE).read_text()
    policy = Policy.from_yaml(text)
    policy.check_against(meta)
    assert policy.priors.contexts == {}
    assert policy.input_bounds.action == "abstain"
    # the commented example uses this pack's labels, so it can be uncommented
    assert '"setosa": 80' in text
    example = text.replace("contexts: {}", "contexts:\n    site-a: {setosa: 80}")
    Policy.from_yaml(example).check_against(meta)


def test_labels_in_another_order_than_the_models_zipmap_are_refused(
    iris: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(PackerInputInvalid, match="pass --labels setosa,versicolor"):
        pack_onnx(
            iris["str_model"],
            iris["names_csv"],
            tmp_path / "p",
            name="iris",
            label_column="species",
            labels=["versicolor", "setosa", "virginica"],
        )
    assert not (tmp_path / "p").exists()


def test_a_swapped_label_order_is_refused_naming_the_order_that_fits(
    tmp_path: Path,
) -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    data = load_breast_cancer(as_frame=True)
    x = data.data.to_numpy()
    clf = LogisticRegression(max_iter=5000).fit(x, data.target)
    model = _export(clf, x, tmp_path / "bc.onnx")
    frame = data.data.copy()
    frame["diagnosis"] = np.array(["malignant", "benign"])[data.target]
    frame.to_csv(tmp_path / "bc.csv", index=False)
    common = dict(name="bc", label_column="diagnosis")
    with pytest.raises(PackerInputInvalid) as caught:
        pack_onnx(
            model,
            tmp_path / "bc.csv",
            tmp_path / "p",
            **common,  # type: ignore[arg-type]
            labels=["benign", "malignant"],
        )
    assert "below the 0.627 of always answering the most frequent label" in str(
        caught.value
    )
    assert "pass --labels malignant,benign" in str(caught.value)
    meta = pack_onnx(
        model,
        tmp_path / "bc.csv",
        tmp_path / "p",
        **common,  # type: ignore[arg-type]
        labels=["malignant", "benign"],
    )
    assert meta.metrics["test_accuracy"] > 0.9


def _linear_logits_model(path: Path, weights: np.ndarray) -> Path:
    """A hand-built ONNX model whose only output is logits x @ W."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["logits"])],
        "linear",
        [
            helper.make_tensor_value_info(
                "x", TensorProto.FLOAT, [None, weights.shape[0]]
            )
        ],
        [
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, [None, weights.shape[1]]
            )
        ],
        [numpy_helper.from_array(weights.astype(np.float32), "W")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9
    )
    path.write_bytes(model.SerializeToString())
    return path


def _two_blobs(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    x = rng.normal(size=(400, 2)) + np.where(y[:, None] == 1, 2.0, -2.0)
    frame = pd.DataFrame(x, columns=["a", "b"])
    frame["label"] = np.array(["neg", "pos"])[y]
    frame.to_csv(tmp_path / "blobs.csv", index=False)
    return tmp_path / "blobs.csv"


def test_logits_need_the_flag_and_get_a_softmax(tmp_path: Path) -> None:
    model = _linear_logits_model(tmp_path / "m.onnx", np.array([[-1, 1], [-1, 1.0]]))
    data = _two_blobs(tmp_path)
    with pytest.raises(PackerInputInvalid, match="pass --logits"):
        pack_onnx(model, data, tmp_path / "p", name="blobs", labels=["neg", "pos"])
    meta = pack_onnx(
        model, data, tmp_path / "p", name="blobs", labels=["neg", "pos"], logits=True
    )
    assert "softmax applied" in (meta.output.source or "")
    x = np.array([[1.0, 0.5]])
    logits = x @ np.array([[-1, 1], [-1, 1.0]])
    expected = np.exp(logits) / np.exp(logits).sum()
    got = ModelPack.load(tmp_path / "p").predict_proba(x)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_several_probability_outputs_are_named_as_choices(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.array([[-1, 1], [-1, 1]], np.float32), "W")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["left"]),
            helper.make_node("Softmax", ["left"], ["right"], axis=1),
        ],
        "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [
            helper.make_tensor_value_info("left", TensorProto.FLOAT, [None, 2]),
            helper.make_tensor_value_info("right", TensorProto.FLOAT, [None, 2]),
        ],
        [w],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9
    )
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    data = _two_blobs(tmp_path)
    with pytest.raises(
        PackerInputInvalid, match=r"left \(tensor float.*right.*--output-name"
    ):
        pack_onnx(tmp_path / "m.onnx", data, tmp_path / "p", name="two")
    meta = pack_onnx(
        tmp_path / "m.onnx", data, tmp_path / "p", name="two", output_name="right"
    )
    assert meta.output.onnx_name == "right"


def test_validation_and_test_files_are_used_as_given(
    iris: dict[str, Path], tmp_path: Path
) -> None:
    frame = pd.read_csv(iris["csv"]).sample(frac=1.0, random_state=1)
    parts = {"fit": frame[:90], "val": frame[90:120], "test": frame[120:]}
    for part, rows in parts.items():
        rows.to_csv(tmp_path / f"{part}.csv", index=False)
    meta = pack_onnx(
        iris["int_model"],
        tmp_path / "fit.csv",
        tmp_path / "p",
        name="iris",
        label_column="species",
        validation_path=tmp_path / "val.csv",
        test_path=tmp_path / "test.csv",
    )
    assert meta.split is not None and meta.split.method == "files"
    assert meta.split.rows == {"fit": 90, "validation": 30, "test": 30, "bounds": 90}
    assert meta.split.files["test"] == "test.csv"
    assert len(load_table(tmp_path / "p" / "test.parquet")) == 30
    fit = parts["fit"]["petal length (cm)"]
    bounds = meta.feature_bounds["petal length (cm)"]
    assert (bounds.min, bounds.max) == (fit.min(), fit.max())


def test_a_constant_feature_is_reported_and_left_unchecked(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    data = pd.read_csv(_two_blobs(tmp_path))
    data["always_zero"] = 0.0
    data.to_csv(tmp_path / "c.csv", index=False)
    x = data[["a", "b", "always_zero"]].to_numpy()
    model = _export(LogisticRegression().fit(x, data["label"]), x, tmp_path / "c.onnx")
    meta = pack_onnx(model, tmp_path / "c.csv", tmp_path / "p", name="c")
    assert meta.constant_features == ["always_zero"]
    policy = Policy.load(tmp_path / "p" / POLICY_FILE)
    assert '"always_zero"' in (tmp_path / "p" / POLICY_FILE).read_text()
    low, high = resolve_bounds(policy.input_bounds, meta)
    assert (low[2], high[2]) == (-np.inf, np.inf)
    assert np.isfinite(low[:2]).all() and np.isfinite(high[:2]).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--labels", "setosa,versicolor,virginica"], "label column holds 0, 1, 2"),
        ([], "no label column 'label'; columns: sepal length"),
        (["--validation", "{csv}"], "pass both --validation and --test"),
        (["--labels", "0,1,2", "--features", "nope"], "no columns ['nope']"),
        (["--name"], "missing --name; see --help"),
    ],
)
def test_cli_mistakes_are_one_line_and_exit_2(
    iris: dict[str, Path], tmp_path: Path, args: list[str], message: str
) -> None:
    from service.cli import app

    extra = [] if args == [] else ["--label-column", "species"]
    args = [a.format(csv=iris["csv"]) for a in args]
    name = [] if args == ["--name"] else ["--name", "iris"]
    args = [] if args == ["--name"] else args
    result = CliRunner().invoke(
        app,
        [
            "pack",
            str(iris["int_model"]),
            str(iris["csv"]),
            "--out",
            str(tmp_path / "p"),
            *name,
            *extra,
            *args,
        ],
    )
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("cannot")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "p").exists()
