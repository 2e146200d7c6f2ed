"""The guardrail policy: one YAML file, validated by pydantic, that configures every
stage. Unknown keys and impossible values are refused with `PolicyInvalid`, whose
message names the field path and the YAML line.

`Policy.check_against(meta)` then checks the names in the policy (labels, features,
contexts) against a model pack, because a policy is written for one pack's labels.
See `policies/default.yaml` for a commented example of every field.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from guardrails.errors import PolicyInvalid, PolicyProblem

if TYPE_CHECKING:
    from packs.format import PackMetadata


Path_ = tuple[str | int, ...]
"""Where a field sits in the policy, e.g. ("priors", "contexts", "Dream")."""

Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A prior weight or a cost: finite and not negative."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True)


class FeatureRange(_Section):
    min: float | None = Field(default=None, allow_inf_nan=False)
    """Lowest allowed value (inclusive); None leaves this side open."""
    max: float | None = Field(default=None, allow_inf_nan=False)
    """Highest allowed value (inclusive); None leaves this side open."""

    @model_validator(mode="after")
    def _ordered(self) -> FeatureRange:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class InputBoundsPolicy(_Section):
    enabled: bool = True
    """False turns the input-bounds stage off."""
    source: Literal["training", "explicit"] = "training"
    """`training`: the pack's training range widened by `margin_fraction`;
    `explicit`: only the ranges listed under `features` (others are unbounded)."""
    margin_fraction: float = Field(default=0.1, ge=0, allow_inf_nan=False)
    """Widen the training range by this fraction of its width on each side."""
    features: dict[str, FeatureRange] = Field(default_factory=dict)
    """Per-feature ranges; with `source: training` they replace the training range
    of the listed features."""
    action: Literal["reject", "abstain"] = "reject"
    """`reject`: the whole request fails (422) naming the feature and the range;
    `abstain`: those rows are still predicted but abstain with `out_of_bounds`."""

    @model_validator(mode="after")
    def _explicit_needs_features(self) -> InputBoundsPolicy:
        if self.enabled and self.source == "explicit" and not self.features:
            raise ValueError("source 'explicit' needs at least one entry in features")
        return self


class TemperaturePolicy(_Section):
    enabled: bool = True
    """False ignores the pack's fitted temperature (T = 1)."""
    min: float = Field(default=0.5, gt=0, allow_inf_nan=False)
    """A fitted temperature below this is clamped up to it."""
    max: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    """A fitted temperature above this is clamped down to it."""
    min_validation_rows: int = Field(default=30, ge=0)
    """A temperature fitted on fewer validation rows is ignored (T = 1): on a
    small, nearly error-free set the fit collapses towards 0."""

    @model_validator(mode="after")
    def _ordered(self) -> TemperaturePolicy:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class OnlinePriorsPolicy(_Section):
    enabled: bool = False
    """Estimate deployment priors from recent traffic (EM) when a request names
    neither priors nor a context."""
    window_rows: int = Field(default=1000, ge=1)
    """Most recent rows kept for the estimate."""
    min_window_rows: int = Field(default=200, ge=1)
    """No estimate is used before the window holds this many rows."""
    significance: float = Field(default=0.01, gt=0, le=1)
    """The estimate is used only when the likelihood-ratio test against the
    training priors has a p-value below this."""
    min_total_variation: float = Field(default=0.0, ge=0, le=1)
    """...and only when it differs from the training priors by at least this much
    (total variation distance, 0-1)."""
    max_iter: int = Field(default=100, ge=1)
    """EM iterations at most."""
    tol: float = Field(default=1e-6, gt=0, allow_inf_nan=False)
    """EM stops when no prior moves by more than this."""
    refresh_interval_s: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    """How often the service re-runs EM over the window (off the request path)."""
    anchor_on_reference: bool = True
    """Test the window against where EM lands on the pack's reference rows (no
    shift) rather than against the training priors, and apply the relative change:
    a miscalibrated model then does not read as a shift. False is plain EM."""

    @model_validator(mode="after")
    def _window(self) -> OnlinePriorsPolicy:
        if self.min_window_rows > self.window_rows:
            raise ValueError(
                f"min_window_rows {self.min_window_rows} is above "
                f"window_rows {self.window_rows}"
            )
        return self


class PriorsPolicy(_Section):
    contexts: dict[str, dict[str, Weight]] = Field(default_factory=dict)
    """Named deployment contexts and their label priors. Weights are normalised, so
    counts work; a label left out has weight 0; `{}` declares a context without
    priors (it can still carry a blacklist)."""
    allow_hard_zeros: bool = False
    """True lets a prior of exactly 0 rule a label out; otherwise priors are
    smoothed and floored, because a zero prior turns one surprising row into an
    infinite log-loss."""
    floor: float = Field(default=0.01, ge=0, lt=1, allow_inf_nan=False)
    """Lowest prior any label gets (before renormalising)."""
    smoothing: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False)
    """Mix this fraction of the uniform distribution into deployment priors."""
    online: OnlinePriorsPolicy = OnlinePriorsPolicy()

    @model_validator(mode="after")
    def _check(self) -> PriorsPolicy:
        if not self.allow_hard_zeros and self.floor == 0 and self.smoothing == 0:
            raise ValueError(
                "floor and smoothing are both 0, so zero priors would stay zero: "
                "set floor > 0 or allow_hard_zeros: true"
            )
        for name, weights in self.contexts.items():
            if weights and sum(weights.values()) <= 0:
                raise ValueError(f"contexts.{name}: priors are all zero")
        return self


class BlacklistPolicy(_Section):
    global_: list[str] = Field(default_factory=list, alias="global")
    """Labels never returned as the answer, in any context."""
    per_context: dict[str, list[str]] = Field(default_factory=dict)
    """Labels never returned in the named context (must be in priors.contexts)."""
    action: Literal["fallback", "abstain"] = "fallback"
    """`fallback`: answer the best allowed label; `abstain`: answer nothing,
    reason `blacklisted`. When every label is blacklisted the row abstains."""


class OutputBoundsPolicy(_Section):
    min_top_probability: float = Field(default=0.0, ge=0, le=1)
    """Abstain (`low_confidence`) when the best allowed label's probability is
    below this."""
    max_entropy_nats: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Abstain (`high_entropy`) when the distribution's entropy is above this."""


class ConformalPolicy(_Section):
    enabled: bool = False
    """Give every answer a `prediction_set`: the labels that, together, hold the
    true one with probability at least 1 - alpha (split-conformal, calibrated on
    the pack's validation split; a pack without one gets no sets)."""
    mode: Literal["report", "abstain"] = "report"
    """`report`: sets shown, nothing abstains; `abstain`: rows whose set is larger
    than `max_set_size` (`large_prediction_set`) or, with `abstain_on_empty`, empty
    (`empty_prediction_set`) abstain."""
    score: Literal["lac", "aps", "raps"] = "lac"
    """Conformity score: `lac` (1 - p, smallest sets), `aps` (cumulative
    probability, sets adapt to how hard the row is), `raps` (aps penalising long
    sets by `raps_lambda` per label beyond `raps_k_reg`)."""
    alpha: float = Field(default=0.1, gt=0, lt=1)
    """Target miscoverage: sets miss the true label at most this often."""
    max_set_size: int | None = Field(default=None, ge=1)
    """In `abstain` mode, abstain when the set has more labels than this."""
    abstain_on_empty: bool = False
    """In `abstain` mode, abstain when the set is empty (no label fits)."""
    weighted: bool = True
    """Under a deployment prior (explicit, context or online estimate) reweight the
    calibration rows by pi_deploy/pi_cal so coverage holds for that label mix."""
    randomize: bool = False
    """Smoothed conformal p-values: sets cover 1 - alpha on average instead of at
    least 1 - alpha. Without it, a small calibration set (or one a strong prior
    shift leaves few rows of weight in) over-covers by up to one quantile step.
    A row's random number is a fixed function of its probabilities, so a
    repeated row gets the same set."""
    raps_lambda: float = Field(default=0.01, ge=0, allow_inf_nan=False)
    """`raps` penalty per label beyond `raps_k_reg`."""
    raps_k_reg: int = Field(default=1, ge=0)
    """`raps`: this many top labels are not penalised."""
    cached_priors: int = Field(default=64, ge=1)
    """Thresholds are computed once per deployment prior; at most this many kept."""

    @model_validator(mode="after")
    def _abstain_needs_a_rule(self) -> ConformalPolicy:
        if (
            self.enabled
            and self.mode == "abstain"
            and self.max_set_size is None
            and not self.abstain_on_empty
        ):
            raise ValueError(
                "mode 'abstain' needs max_set_size or abstain_on_empty: true"
            )
        return self


class DecisionPolicy(_Section):
    cost_matrix: dict[str, dict[str, Weight]] | None = None
    """`{true_label: {predicted_label: cost}}`: answer the label with the lowest
    expected cost instead of the most probable one. Missing entries cost 0 on the
    diagonal and 1 elsewhere."""


class Policy(_Section):
    """A whole guardrail policy. `version` names it in every answer and log row."""

    version: str = Field(min_length=1)
    """Policy version, returned with every answer (e.g. `default-2026-12-03`)."""
    description: str = ""
    store_inputs: bool = True
    """Keep request inputs in the prediction log (False stores outputs only)."""
    log_retention_days: int | None = Field(default=None, ge=1)
    """Delete logged predictions older than this; None keeps them."""
    input_bounds: InputBoundsPolicy = InputBoundsPolicy()
    temperature: TemperaturePolicy = TemperaturePolicy()
    priors: PriorsPolicy = PriorsPolicy()
    blacklist: BlacklistPolicy = BlacklistPolicy()
    conformal: ConformalPolicy = ConformalPolicy()
    output_bounds: OutputBoundsPolicy = OutputBoundsPolicy()
    decision: DecisionPolicy = DecisionPolicy()

    _node: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> Policy:
        # from_yaml runs these itself, to report them with their YAML lines.
        if info.context and info.context.get("defer_cross_checks"):
            return self
        problems = self._cross_problems()
        if problems:
            raise ValueError("; ".join(f"{_dotted(p)}: {m}" for p, m in problems))
        return self

    def _cross_problems(self) -> list[tuple[Path_, str]]:
        """Problems between sections (each section is valid on its own)."""
        declared = sorted(self.priors.contexts)
        return [
            (
                ("blacklist", "per_context", name),
                f"context {name!r} is not declared in priors.contexts "
                f"(declared: {declared})",
            )
            for name in self.blacklist.per_context
            if name not in self.priors.contexts
        ]

    @property
    def contexts(self) -> list[str]:
        """Context names a request may use."""
        return sorted(self.priors.contexts)

    @classmethod
    def from_yaml(cls, text: str) -> Policy:
        """Parse and validate a policy; `PolicyInvalid` names field and line."""
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            raise PolicyInvalid(
                [PolicyProblem("", f"not valid YAML: {problem}", line)]
            ) from None
        duplicates = _duplicate_keys(node)
        if duplicates:
            raise PolicyInvalid(duplicates)
        if not isinstance(data, dict):
            raise PolicyInvalid(
                [PolicyProblem("", "the policy must be a YAML mapping")]
            )
        try:
            policy = cls.model_validate(data, context={"defer_cross_checks": True})
        except ValidationError as exc:
            raise PolicyInvalid(_problems(exc, node)) from None
        policy._node = node
        policy._raise_located(policy._cross_problems())
        return policy

    @classmethod
    def load(cls, path: Path | str) -> Policy:
        """Read a policy file; a missing file is a `PolicyInvalid` too."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyInvalid(
                [PolicyProblem("", f"cannot read policy file {path}: {exc.strerror}")]
            ) from None
        return cls.from_yaml(text)

    def check_against(self, meta: PackMetadata) -> None:
        """Refuse names the pack does not have (labels, features) and floors that
        cannot hold for its number of labels."""
        labels, features = set(meta.labels), set(meta.feature_names)
        problems: list[tuple[Path_, str]] = []

        def label(path: Path_, name: str) -> None:
            if name not in labels:
                problems.append(
                    (path, f"unknown label {name!r}; labels: {meta.labels}")
                )

        for ctx, weights in self.priors.contexts.items():
            for name in weights:
                label(("priors", "contexts", ctx, name), name)
        for i, name in enumerate(self.blacklist.global_):
            label(("blacklist", "global", i), name)
        for ctx, names in self.blacklist.per_context.items():
            for i, name in enumerate(names):
                label(("blacklist", "per_context", ctx, i), name)
        for true, row in (self.decision.cost_matrix or {}).items():
            label(("decision", "cost_matrix", true), true)
            for name in row:
                label(("decision", "cost_matrix", true, name), name)
        for name in self.input_bounds.features:
            if name not in features:
                problems.append(
                    (
                        ("input_bounds", "features", name),
                        f"unknown feature {name!r}; features: {meta.feature_names}",
                    )
                )
        if self.priors.floor * len(labels) > 1:
            problems.append(
                (
                    ("priors", "floor"),
                    f"floor {self.priors.floor} times {len(labels)} labels is above 1",
                )
            )
        self._raise_located(problems)

    def _raise_located(self, problems: list[tuple[Path_, str]]) -> None:
        if problems:
            raise PolicyInvalid(
                [
                    PolicyProblem(_dotted(path), msg, _line(self._node, path))
                    for path, msg in problems
                ]
            )


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + part
    return out


def _problems(exc: ValidationError, node: yaml.Node | None) -> list[PolicyProblem]:
    problems = []
    for err in exc.errors():
        path = tuple(err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key (not a policy field)"
        problems.append(PolicyProblem(_dotted(path), message, _line(node, path)))
    return problems


def _duplicate_keys(node: yaml.Node | None, path: Path_ = ()) -> list[PolicyProblem]:
    """Keys given twice in one mapping (YAML would silently keep the last)."""
    problems = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                problems.append(
                    PolicyProblem(
                        _dotted((*path, name)),
                        "key given twice",
                        key.start_mark.line + 1,
                    )
                )
            seen.add(name)
            problems += _duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _duplicate_keys(item, (*path, i))
    return problems


def _line(node: yaml.Node | None, path: Path_) -> int | None:
    """1-based YAML line of the deepest node on `path` that exists."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in path:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    # A scalar value sits on its key's line; point at the key so
                    # an unknown or misspelt key is found too.
                    child, line = value, key.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
