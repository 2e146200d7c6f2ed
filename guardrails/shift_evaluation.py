"""Label-shift evaluation on scikit-learn's datasets: does the online prior estimate
recover what known deployment priors give, and cost nothing when nothing shifted?

For each dataset (iris, wine, digits, breast cancer; all bundled with
scikit-learn), model kind and fold of a stratified `folds`-fold split, a model is
trained on 60% of the rows outside the fold, exported with skl2onnx's defaults
and packed with the bring-your-own packer, which gets 20% as its validation and
20% as its test file (its generic policy, online estimate switched on). Windows
of `sizes` rows are drawn from the fold (over the folds every row is in a pool
once): class priors from a Dirichlet(α, ..., α) over the classes,
rows of each class drawn with replacement; "no shift" windows use the pack's
training priors. Each window goes through the pipeline the service builds
(`build_pipeline`, mode `evaluate`) as:

    raw               training priors (temperature applied)
    known priors      the window's true priors, through the policy's floor and
                      smoothing, as a request with explicit priors gets them
    floored priors    the true priors with the former defaults (floor 0.01, no
                      smoothing)
    exact priors      the true priors applied without floor or smoothing (the
                      log-loss a floor or smoothing must not give up)
    guarded EM        the estimator as the service runs it on that window (minimum
                      window, EM on posteriors calibrated on the pack's validation
                      rows, the test on distinct rows, shrinkage, minimum shift,
                      anchored on the pack's reference rows); used only when its
                      guard says so
    always EM         plain EM (no calibration, no guard), used on every window

`recovered` is Σ(guarded − raw) / Σ(known − raw) accuracy over a cell's windows.

    python -m guardrails.shift_evaluation [--windows 20] [--folds 4] [--out FILE]
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guardrails.batch import RequestContext
from guardrails.build import build_pipeline
from guardrails.em import em_priors
from guardrails.online_priors import OnlinePriorEstimator, row_keys
from guardrails.pipeline import GuardrailPipeline
from guardrails.policy import Policy
from packs.calibration import log_loss
from packs.format import POLICY_FILE
from packs.loader import ModelPack

DATASETS = ("iris", "wine", "digits", "breast_cancer")
KINDS = ("logreg", "mlp")
SIZES = (200, 500, 1000)
ALPHAS = (0.1, 1.0)
VARIANTS = ("raw", "known", "floored", "exact", "guarded", "always")
SEED = 0
FOLDS = 4


@dataclass(frozen=True)
class Window:
    dataset: str
    kind: str
    shift: str
    """`α=0.1`, `α=1.0` or `none`."""
    rows: int
    accuracy: dict[str, float]
    log_loss: dict[str, float]
    guarded_used: bool


@dataclass(frozen=True)
class Case:
    """One packed model and its held-out pool."""

    dataset: str
    kind: str
    pack: ModelPack
    policy: Policy
    x: np.ndarray
    y: np.ndarray
    fold: int = 0


def _model(kind: str):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=SEED),
    )


def build_case(
    dataset: str, kind: str, workdir: Path, *, fold: int = 0, folds: int = FOLDS
) -> Case:
    """Train, export with skl2onnx's defaults and pack one model.

    Fold `fold` of a stratified `folds`-fold split is the evaluation pool (over
    all folds every row is in a pool exactly once). The model is fitted on 60% of
    the other rows only; the other 20% + 20% reach the packer as its validation and test
    files, so everything the pack learns from labels (temperature, metrics, its
    shift check) is held out from the model, as the packer asks of its users."""
    import pandas as pd
    from skl2onnx import to_onnx
    from sklearn import datasets
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold, train_test_split

    from packs.byo import pack_onnx

    x, y = getattr(datasets, f"load_{dataset}")(return_X_y=True)
    pool_rows = list(
        StratifiedKFold(folds, shuffle=True, random_state=SEED).split(x, y)
    )[fold][1]
    in_pool = np.zeros(len(y), dtype=bool)
    in_pool[pool_rows] = True
    x_rest, x_pool, y_rest, y_pool = x[~in_pool], x[in_pool], y[~in_pool], y[in_pool]
    x_fit, x_held, y_fit, y_held = train_test_split(
        x_rest, y_rest, test_size=0.4, stratify=y_rest, random_state=SEED
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_held, y_held, test_size=0.5, stratify=y_held, random_state=SEED
    )
    model = _model(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_fit, y_fit)
    onnx_path = workdir / f"{dataset}-{kind}-{fold}.onnx"
    onnx_path.write_bytes(to_onnx(model, x_fit).SerializeToString())
    files = {}
    for part, (xs, ys) in {
        "fit": (x_fit, y_fit),
        "validation": (x_val, y_val),
        "test": (x_test, y_test),
    }.items():
        frame = pd.DataFrame(xs, columns=[f"f{i}" for i in range(x.shape[1])])
        frame["label"] = ys
        files[part] = workdir / f"{dataset}-{fold}-{part}.csv"
        frame.to_csv(files[part], index=False)
    out = workdir / f"{dataset}-{kind}-{fold}"
    meta = pack_onnx(
        onnx_path,
        files["fit"],
        out,
        name=out.name,
        validation_path=files["validation"],
        test_path=files["test"],
    )
    policy = Policy.load(out / POLICY_FILE)
    pack = ModelPack.load(out, providers=["CPUExecutionProvider"])
    index = {label: i for i, label in enumerate(meta.labels)}
    labels = np.array([index[str(v)] for v in y_pool])
    return Case(dataset, kind, pack, policy, x_pool, labels, fold)


def _online(policy: Policy, enabled: bool) -> Policy:
    online = policy.priors.online.model_copy(update={"enabled": enabled})
    priors = policy.priors.model_copy(update={"online": online})
    return policy.model_copy(update={"priors": priors})


def _floored(policy: Policy) -> Policy:
    """`policy` with the previous prior defaults: floor 0.01, no smoothing."""
    priors = _online(policy, False).priors.model_copy(
        update={"floor": 0.01, "smoothing": 0.0}
    )
    return policy.model_copy(update={"priors": priors})


def _draw(
    case: Case, priors: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    present = np.bincount(case.y, minlength=len(priors)) > 0
    p = priors * present
    y = rng.choice(len(p), size=n, p=p / p.sum())
    rows = np.array([rng.choice(np.flatnonzero(case.y == c)) for c in y])
    return case.x[rows], y


def evaluate_case(
    case: Case,
    *,
    sizes: Iterable[int] = SIZES,
    alphas: Iterable[float] = ALPHAS,
    windows: int = 20,
    seed: int = SEED,
) -> list[Window]:
    meta = case.pack.metadata
    labels = meta.labels
    train = np.array([meta.training_priors[label] for label in labels])
    plain = build_pipeline(case.pack, _online(case.policy, False), "evaluate")
    floored = build_pipeline(case.pack, _floored(case.policy), "evaluate")
    guarded = build_pipeline(case.pack, _online(case.policy, True), "evaluate")
    estimator = guarded.prior_estimator
    assert isinstance(estimator, OnlinePriorEstimator)
    predict = case.pack.predict_proba
    rng = np.random.default_rng(seed)
    k = len(labels)
    out = []
    shifts: list[tuple[str, float | None]] = [(f"α={a}", a) for a in alphas]
    shifts.append(("none", None))
    for shift, alpha in shifts:
        for n in sizes:
            for _ in range(windows):
                priors = train if alpha is None else rng.dirichlet(np.full(k, alpha))
                x, y = _draw(case, priors, n, rng)

                def with_priors(
                    p: np.ndarray,
                    pipeline: GuardrailPipeline = plain,
                    x: np.ndarray = x,
                ) -> np.ndarray:
                    ctx = RequestContext(
                        priors=dict(zip(labels, p.tolist(), strict=True))
                    )
                    return pipeline.run(x, predict, ctx).probabilities

                raw = plain.run(x, predict, RequestContext()).probabilities
                exact = raw * (priors / np.maximum(train, 1e-12))
                exact /= exact.sum(axis=1, keepdims=True)
                estimate = estimator.estimate(raw, row_keys(x))
                always, _ = em_priors(raw, train, 100, 1e-6)
                probs = {
                    "raw": raw,
                    "known": with_priors(priors),
                    "floored": with_priors(priors, floored),
                    "exact": exact,
                    "guarded": with_priors(estimate.priors) if estimate.used else raw,
                    "always": with_priors(always),
                }
                out.append(
                    Window(
                        case.dataset,
                        case.kind,
                        shift,
                        n,
                        {v: float((p.argmax(1) == y).mean()) for v, p in probs.items()},
                        {v: log_loss(p, y) for v, p in probs.items()},
                        estimate.used,
                    )
                )
    return out


def _cell(windows: list[Window]) -> dict[str, float]:
    acc = {v: float(np.mean([w.accuracy[v] for w in windows])) for v in VARIANTS}
    ll = {v: float(np.mean([w.log_loss[v] for w in windows])) for v in VARIANTS}
    known_gain = acc["known"] - acc["raw"]
    return {
        **{f"acc_{v}": a for v, a in acc.items()},
        **{f"ll_{v}": x for v, x in ll.items()},
        "recovered": (acc["guarded"] - acc["raw"]) / known_gain
        if known_gain > 1e-9
        else float("nan"),
        "used": float(np.mean([w.guarded_used for w in windows])),
        "windows": float(len(windows)),
    }


def to_markdown(windows: list[Window]) -> str:
    """Per-cell table, then the totals each target is judged on."""
    lines = [
        "| dataset | shift | rows | windows | raw | known priors | guarded EM | "
        "always EM | recovered | guard used | log-loss known / floor 0.01 / exact "
        "/ guarded |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    keys = sorted(
        {(w.dataset, w.shift, w.rows) for w in windows},
        key=lambda t: (DATASETS.index(t[0]), t[1], t[2]),
    )
    shifts = {w.shift for w in windows}
    for dataset, shift, rows in keys:
        cell = _cell(
            [
                w
                for w in windows
                if (w.dataset, w.shift, w.rows) == (dataset, shift, rows)
            ]
        )
        rec = "" if np.isnan(cell["recovered"]) else f"{cell['recovered']:.0%}"
        lines.append(
            f"| {dataset} | {shift} | {rows} | {int(cell['windows'])} | "
            f"{cell['acc_raw']:.4f} | {cell['acc_known']:.4f} | "
            f"{cell['acc_guarded']:.4f} | {cell['acc_always']:.4f} | {rec} | "
            f"{cell['used']:.0%} | {cell['ll_known']:.4f} / "
            f"{cell['ll_floored']:.4f} / {cell['ll_exact']:.4f} / "
            f"{cell['ll_guarded']:.4f} |"
        )
    lines += [
        "",
        "| dataset | shift | windows | raw | known | guarded | recovered | "
        "guarded − raw, points | guard used |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    groups = [(d, sh) for d in [*DATASETS, "all"] for sh in sorted(shifts)]
    for dataset, shift in groups:
        chosen = [
            w for w in windows if w.shift == shift and dataset in (w.dataset, "all")
        ]
        if not chosen:
            continue
        cell = _cell(chosen)
        rec = "" if np.isnan(cell["recovered"]) else f"{cell['recovered']:.1%}"
        lines.append(
            f"| {dataset} | {shift} | {int(cell['windows'])} | "
            f"{cell['acc_raw']:.4f} | {cell['acc_known']:.4f} | "
            f"{cell['acc_guarded']:.4f} | {rec} | "
            f"{100 * (cell['acc_guarded'] - cell['acc_raw']):+.3f} | "
            f"{cell['used']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def run(
    *,
    datasets: Iterable[str] = DATASETS,
    kinds: Iterable[str] = KINDS,
    windows: int = 20,
    folds: int = FOLDS,
    echo: Callable[[str], object] = print,
) -> list[Window]:
    results: list[Window] = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in datasets:
            for kind in kinds:
                echo(
                    f"{dataset} / {kind}: {folds} folds, each packed, then {windows}"
                    " windows per cell"
                )
                for fold in range(folds):
                    case = build_case(dataset, kind, Path(tmp), fold=fold, folds=folds)
                    results += evaluate_case(case, windows=windows, seed=SEED + fold)
    return results


def main() -> None:
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--windows", type=int, default=20, help="windows per cell and fold"
    )
    parser.add_argument(
        "--folds", type=int, default=FOLDS, help="models per dataset and kind"
    )
    parser.add_argument("--out", type=Path, help="also write the tables here")
    args = parser.parse_args()
    table = to_markdown(
        run(
            windows=args.windows,
            folds=args.folds,
            echo=lambda s: print(s, file=sys.stderr),
        )
    )
    print(table)
    if args.out is not None:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
