"""The physics prior under the trees: its terms, its fit and its evaluation, in one place.

Latency ≈ compute (FLOPs / f) + memory traffic (bytes / f, or bytes at a fixed bandwidth) + per-layer and
per-call overheads (cycles / f, or fixed): the prior is a non-negative mix of exactly these `PRIOR_TERMS`,
followed, when the featuriser has kernels, by each accelerator cost (version 3), each CPU roofline and
cache-spill sum (version 6) and each kernel shape's work, over f and as it is (the extra cost of that shape
beyond the generic rates). Training fits the
coefficients (`fit_prior`, `fit_prior_choosing_kernel_terms`) and stores them with the terms in the
feature schema (`prior_entry`); serving reads them back (`read_prior`) and takes log(prior) as the trees'
base margin (`PhysicsPrior.log_ms`). Everything is computed from the featurised matrix `x`, whose columns
the prior finds by name in `Featurizer.names`, so training, serving and snapshots see the same numbers.

Condition priors (features version 4): a predictor trained on several compute units or precisions may keep,
per (unit, precision) group with enough rows, coefficients of its own over the same terms (`"groups"` in the
schema's prior, keyed `<unit>/<precision>`) — a GPU at fp16 moves its bytes and MACs at other rates than the
same GPU at fp32 or a CPU cluster, and one shared mix of rates leaves the trees a factor-of-two residual to
learn per group. They are kept only where the validation rows say the grouped prior predicts better; rows
of any other group use the shared coefficients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.optimize import nnls

from service.predictors.features import Featurizer, accelerator_prior_columns, cpu_prior_columns

#: The generic terms (`PhysicsPrior.design` without kernels), in column order.
PRIOR_TERMS = (
    "flops_per_mhz",
    "activation_bytes_per_mhz",
    "layers_per_mhz",
    "per_mhz",
    "activation_bytes",
    "layers",
    "constant",
)

#: Floor of the prior (ms) before its logarithm: a row whose non-negative terms all vanish stays finite.
PRIOR_FLOOR_MS = 1e-6

#: Reweighting rounds of `fit_prior` (the first is plain least squares).
PRIOR_L1_ROUNDS = 5
#: Folds by config of the out-of-fold prior a stacked margin is fitted on (`out_of_fold_log_ms`).
STACKING_FOLDS = 5

#: Ridge strength on the per-kernel prior terms, per row, in the unit-scaled relative space of `fit_prior`.
KERNEL_SHRINKAGE = 1e-3

#: The same, in a prior that has the CPU terms (features version 6, a CPU unit): the per-kind MACs and bytes
#: and the spill ladder then price most of what the kernel shapes did, the kernel terms are a smaller
#: correction, and a stronger pull toward 0 keeps small trainings from scattering it. bench_accuracy (333
#: configs headline) at 1e-3: 85.6 / 95.2 / 98.6 / 98.8 / 99.6 / 99.7 % at 50 / 100 / 200 / 333 / 500 /
#: 1,000 configs; 3e-3: 87.4 / 95.6 / 98.4 / 99.1 / 99.6 / 99.7 %; 1e-2: 90.8 / 95.1 / 98.3 / 99.0 / 99.6 /
#: 99.8 % (the virtual phones of bench_transfer, which mostly drop the kernel terms, within ±1 point).
CPU_KERNEL_SHRINKAGE = 1e-2

#: Fewest fitted rows a (unit, precision) group needs for coefficients of its own.
MIN_GROUP_ROWS = 30

#: Fewest validation configs of a group that let it choose its kernel terms (see `fit_group_priors`).
MIN_GROUP_VALIDATION_CONFIGS = 3

#: The matrix columns the generic terms are built from (widened to float64 on their own, not the matrix).
_GENERIC_INPUTS = ("frequency_mhz", "flops_per_mhz", "activation_bytes_per_mhz", "activation_bytes", "layers")


class PhysicsPrior:
    """The prior's terms over one featuriser's matrix: names, design, and the milliseconds it predicts."""

    def __init__(self, featurizer: Featurizer) -> None:
        self.featurizer = featurizer
        names = featurizer.names
        self._generic = [names.index(c) for c in _GENERIC_INPUTS]
        kernels = featurizer.kernels
        self._kernels = slice(0, 0)
        if kernels:
            first = names.index(f"kernel:{kernels[0]}")
            self._kernels = slice(first, first + len(kernels))
        # The accelerator and CPU terms join the kernel prior only (no kernels: the generic 7-term prior, as
        # asked); both are costs of the hardware, fitted unshrunk, unlike the per-kernel-shape terms. The CPU
        # terms only where a unit is a CPU (`cpu_prior_columns`).
        version = featurizer.version
        cpu = cpu_prior_columns(version, featurizer.clusters)
        accelerator = accelerator_prior_columns(version) + cpu if kernels else ()
        self._accelerator = [names.index(c) for c in accelerator]
        self.has_pairs = bool(kernels)
        #: The ridge strength `fit_prior` puts on the per-kernel-shape terms.
        self.shrinkage = CPU_KERNEL_SHRINKAGE if cpu else KERNEL_SHRINKAGE
        accelerator_terms = [name for c in accelerator for name in (f"{c}/MHz", c)]
        #: Names of the `design` columns, in order (stored with a predictor's coefficients).
        self.terms = [*PRIOR_TERMS, *accelerator_terms, *(n for k in kernels for n in (f"{k}/MHz", k))]
        #: First term `fit_prior` shrinks toward 0: the per-kernel-shape terms.
        self.shrunk_from = len(PRIOR_TERMS) + len(accelerator_terms)

    def design(self, x: np.ndarray) -> np.ndarray:
        """Terms of the prior, one row per row of `x` (float64, n × len(terms))."""
        generic, mhz = self._generic_design(x)
        if not self.has_pairs:
            return generic
        paired = self._paired(x)
        design = np.empty((x.shape[0], len(PRIOR_TERMS) + 2 * paired.shape[1]), dtype=np.float64)
        design[:, : len(PRIOR_TERMS)] = generic
        design[:, len(PRIOR_TERMS) :: 2] = paired / mhz[:, None]
        design[:, len(PRIOR_TERMS) + 1 :: 2] = paired
        return design

    def ms(self, x: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
        """`design(x) @ coefficients` without building the design (the serving path's margin).

        The kernel terms are summed as (kernels @ per-MHz weights) / MHz + kernels @ fixed weights: at 1,000
        rows and ~60 kernels that is a tenth of the cost of materialising the 130-column design first.
        """
        n_generic = len(PRIOR_TERMS)
        generic, mhz = self._generic_design(x)
        prior: np.ndarray = generic @ coefficients[:n_generic]
        if self.has_pairs:
            # Accelerator then kernel terms, each pair (over f, as it is), as `design` lays them out.
            paired = self._paired(x)
            prior += (paired @ coefficients[n_generic::2]) / mhz + paired @ coefficients[n_generic + 1 :: 2]
        return prior

    def log_ms(
        self, x: np.ndarray, coefficients: np.ndarray, groups: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """log of the prior (ms) of each row of `x` (float64), floored at `PRIOR_FLOOR_MS`; rows of a
        (unit, precision) group in `groups` use that group's coefficients."""
        prior = self.ms(x, coefficients)
        if groups:
            index = self.featurizer.condition_groups(x)
            names = self.featurizer.condition_names()
            for name, own in groups.items():
                rows = index == names.index(name)
                if rows.any():
                    prior[rows] = self.ms(x[rows], own)
        log_ms: np.ndarray = np.log(np.maximum(prior, PRIOR_FLOOR_MS))
        return log_ms

    def _paired(self, x: np.ndarray) -> np.ndarray:
        """The accelerator and CPU, then the kernel columns of `x` (float64): terms over f and as they are."""
        accelerator = (
            x[:, self._accelerator].astype(np.float64)
            if self._accelerator
            else np.empty((x.shape[0], 0), dtype=np.float64)
        )
        return np.hstack([accelerator, x[:, self._kernels].astype(np.float64)])

    def _generic_design(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The `PRIOR_TERMS` columns of each row, and the rows' MHz."""
        cols = x[:, self._generic].astype(np.float64)
        mhz, flops_per_mhz, acts_per_mhz, acts, layers = cols.T
        generic = [flops_per_mhz, acts_per_mhz, layers / mhz, 1.0 / mhz, acts, layers, np.ones(x.shape[0])]
        return np.column_stack(generic), mhz


def read_prior(schema: Mapping[str, Any], prior: PhysicsPrior) -> np.ndarray | None:
    """The stored coefficients of a feature schema (None: trained before the prior); refuses other terms."""
    entry = schema.get("prior")
    if entry is None:
        return None
    if list(entry["terms"]) != prior.terms:
        raise ValueError("the prior terms of the schema differ from the ones this build computes")
    return np.asarray(entry["coefficients"], dtype=np.float64)


def read_group_priors(schema: Mapping[str, Any], prior: PhysicsPrior) -> dict[str, np.ndarray]:
    """The stored condition priors of a feature schema (empty: none, as for every schema before version 4);
    refuses a group this featuriser has no columns for."""
    entry = schema.get("prior") or {}
    groups = entry.get("groups") or {}
    known = set(prior.featurizer.condition_names())
    unknown = sorted(set(groups) - known)
    if unknown:
        raise ValueError(f"the prior's groups {unknown} are not unit/precision groups of this schema")
    return {str(name): np.asarray(c, dtype=np.float64) for name, c in groups.items()}


def prior_entry(
    prior: PhysicsPrior,
    coefficients: np.ndarray,
    kernel_terms: bool | None,
    groups: Mapping[str, np.ndarray] | None = None,
    group_kernel_terms: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    """The schema's `"prior"`: terms, coefficients, (when fitted here) whether kernel terms were kept, and
    the condition priors with the same choice of each, when there are any."""
    entry: dict[str, Any] = {"terms": prior.terms}
    if kernel_terms is not None:
        entry["kernel_terms"] = kernel_terms
    entry["coefficients"] = coefficients.tolist()
    if groups:
        entry["groups"] = {name: c.tolist() for name, c in groups.items()}
        entry["group_kernel_terms"] = dict(group_kernel_terms or {})
    return entry


def fit_prior(
    design: np.ndarray,
    measured_ms: np.ndarray,
    *,
    shrunk_from: int | None = None,
    shrinkage: float = KERNEL_SHRINKAGE,
) -> np.ndarray:
    """Non-negative coefficients of the physics prior minimising its *relative absolute* error.

    Each row is divided by its measured latency so a 0.1 ms block counts as much as a 20 ms one (the trees
    then correct a log residual); columns are scaled to unit maximum for a well-conditioned NNLS. Absolute,
    not squared, error (iteratively reweighted least squares): slow outliers of a busy host must not lift
    the prior any more than the median trees above it. Columns from `shrunk_from` on (the per-kernel terms)
    carry a small ridge penalty (`shrinkage`, see `PhysicsPrior.shrinkage`): with few configs and dozens of
    kernel shapes the plain fit has many exact solutions and scatters them, while the penalty keeps what the
    generic rates explain with them (on virtual-phone data, 50 configs: 67 % within ±10 % instead of 64 %;
    1,000 configs: unchanged).
    """
    relative = design / measured_ms[:, None]
    scale = np.abs(relative).max(axis=0)
    scale[scale == 0] = 1.0
    scaled, target = relative / scale, np.ones(len(measured_ms))
    penalty = np.zeros((0, design.shape[1]))
    if shrunk_from is not None and shrunk_from < design.shape[1]:
        shrunk = np.arange(shrunk_from, design.shape[1])
        penalty = np.zeros((len(shrunk), design.shape[1]))
        penalty[np.arange(len(shrunk)), shrunk] = np.sqrt(shrinkage * len(measured_ms))
    row_weight = np.ones(len(measured_ms))
    for _ in range(PRIOR_L1_ROUNDS):
        matrix = np.vstack([scaled * row_weight[:, None], penalty])
        rhs = np.concatenate([target * row_weight, np.zeros(len(penalty))])
        coefficients, _ = nnls(matrix, rhs, maxiter=50 * design.shape[1])
        # Weights 1/|residual| turn the next squared fit into an absolute one (floored at 1 %).
        residual = np.abs(scaled @ coefficients - 1.0)
        row_weight = 1.0 / np.sqrt(np.maximum(residual, 0.01))
    coefficients_out: np.ndarray = coefficients / scale
    return coefficients_out


def fit_prior_choosing_kernel_terms(
    prior: PhysicsPrior,
    x: np.ndarray,
    measured: np.ndarray,
    fit: np.ndarray,
    validation: np.ndarray | None,
    kernel_terms: bool | None,
) -> tuple[np.ndarray, bool]:
    """The prior's coefficients, with or without its per-kernel-shape terms (those then weigh 0), and which.

    A kernel shape's terms price its MACs at one rate, which is how CPU kernels behave; on an accelerator a
    shape's cost per MAC swings with the layer's size (fixed and serial costs), and a shape seen only in
    small layers then prices a big one many times too high. With `kernel_terms` None both priors are
    fitted and the one that predicts the `validation` rows better (alone, before any tree; mean |log error|)
    is kept.
    """
    design = prior.design(x[fit])
    start = prior.shrunk_from
    options = (
        [True, False] if kernel_terms is None and start < design.shape[1] else [kernel_terms is not False]
    )
    fitted: dict[bool, np.ndarray] = {}
    for keep in options:
        if keep:
            fitted[keep] = fit_prior(design, measured[fit], shrunk_from=start, shrinkage=prior.shrinkage)
        else:
            coefficients = np.zeros(design.shape[1])
            coefficients[:start] = fit_prior(design[:, :start], measured[fit])
            fitted[keep] = coefficients
    if len(fitted) == 1:
        keep = next(iter(fitted))
        return fitted[keep], keep
    assert validation is not None
    # Mean |log error|: the trees correct the prior in log space, so that is what they are left with.
    log_error = {
        keep: float(np.mean(np.abs(prior.log_ms(x[validation], c) - np.log(measured[validation]))))
        for keep, c in fitted.items()
    }
    keep = log_error[True] <= log_error[False]
    return fitted[keep], keep


def fit_group_priors(
    prior: PhysicsPrior,
    x: np.ndarray,
    measured: np.ndarray,
    fit: np.ndarray,
    validation: np.ndarray | None,
    shared: np.ndarray,
    wanted: Mapping[str, bool] | None,
) -> tuple[dict[str, np.ndarray], dict[str, bool]]:
    """Coefficients of every (unit, precision) group of the fitted rows, when the predictor spans several
    groups, and whether each kept its kernel terms: fitted on the group's rows when it has
    `MIN_GROUP_ROWS`, else the shared coefficients scaled by the group's median measured / prior ratio.

    `wanted` None: each group chooses its kernel terms on its own validation rows (as the shared prior
    does) when they hold `MIN_GROUP_VALIDATION_CONFIGS` configs — with fewer, a choice would be noise and
    the group takes the generic terms only: pricing each kernel shape needs more data than one group
    holds then —, and the groups are kept only if the `validation` rows' mean |log
    error| is lower with them than with the shared prior alone (an empty answer otherwise). A refit passes
    the choices made (`{group: kernel terms kept}`) instead, and exactly those groups are fitted again.
    """
    if prior.featurizer.version < 4 or wanted == {}:
        return {}, {}
    index = prior.featurizer.condition_groups(x)
    present = np.unique(index[fit & (index >= 0)])
    if len(present) < 2:
        return {}, {}  # one group: the shared prior is its own
    names = prior.featurizer.condition_names()
    groups: dict[str, np.ndarray] = {}
    kernels: dict[str, bool] = {}
    for group in present:
        name = names[group]
        rows = fit & (index == group)
        if (wanted is not None and name not in wanted) or not rows.any():
            continue
        if int(rows.sum()) < MIN_GROUP_ROWS:
            # Too few rows for rates of its own: the shared rates, scaled by the group's median ratio.
            ratio = np.median(np.log(measured[rows]) - prior.log_ms(x[rows], shared))
            groups[name], kernels[name] = shared * float(np.exp(ratio)), False
            continue
        checked = None if validation is None else validation & (index == group)
        choice = (
            wanted.get(name)
            if wanted is not None
            else _kernel_choice(x, checked, len(prior.featurizer.config_names))
        )
        groups[name], kernels[name] = fit_prior_choosing_kernel_terms(
            prior, x, measured, rows, checked, choice
        )
    if not groups or wanted is not None or validation is None or not validation.any():
        return groups, kernels

    def error(own: Mapping[str, np.ndarray]) -> float:
        logged = prior.log_ms(x[validation], shared, own)
        return float(np.mean(np.abs(logged - np.log(measured[validation]))))

    return (groups, kernels) if error(groups) < error({}) else ({}, {})


def out_of_fold_log_ms(
    prior: PhysicsPrior,
    x: np.ndarray,
    measured: np.ndarray,
    fit: np.ndarray,
    kernel_terms: bool,
    group_kernels: Mapping[str, bool],
    folds: int = STACKING_FOLDS,
) -> np.ndarray:
    """The prior's log ms of every `fit` row from a prior fitted without that row's config (k folds by
    config, each fitted as the whole was: the same kernel-term and group choices); 0 elsewhere.

    What a map that weighs the prior against other predictors (transfer.py's stacked margin) must be fitted
    on: in-sample, the prior is as good as its own fitted rows say, and with 10 configs it has fitted them
    nearly exactly, so the map would trust it far beyond what it predicts for a config it has not seen.
    With fewer than two configs there is nothing to hold out: the in-sample prior is answered.
    """
    config_of = np.unique(x[:, : len(prior.featurizer.config_names)], axis=0, return_inverse=True)[1].ravel()
    configs = np.unique(config_of[fit])
    out = np.zeros(len(x))
    k = min(folds, len(configs))
    # The fitted configs in sorted order go round the folds (rows outside `fit` are masked out below).
    row_fold = np.searchsorted(configs, config_of) % max(k, 1)
    splits = (
        [(fit & (row_fold == fold), fit & (row_fold != fold)) for fold in range(k)]
        if k >= 2
        else [(fit, fit)]
    )
    for held, rest in splits:
        coefficients, _ = fit_prior_choosing_kernel_terms(prior, x, measured, rest, None, kernel_terms)
        groups, _ = fit_group_priors(prior, x, measured, rest, None, coefficients, group_kernels)
        out[held] = prior.log_ms(x[held], coefficients, groups)
    return out


def _kernel_choice(x: np.ndarray, checked: np.ndarray | None, n_config: int) -> bool | None:
    """None (let the validation rows choose) when `checked` rows hold enough configs (distinct rows of
    the `n_config` config columns), else False."""
    if checked is None:
        return False
    configs = np.unique(x[checked][:, :n_config], axis=0).shape[0] if checked.any() else 0
    return None if configs >= MIN_GROUP_VALIDATION_CONFIGS else False
