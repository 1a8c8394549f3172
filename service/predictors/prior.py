"""The physics prior under the trees: its terms, its fit and its evaluation, in one place.

Latency ≈ compute (FLOPs / f) + memory traffic (bytes / f, or bytes at a fixed bandwidth) + per-layer and
per-call overheads (cycles / f, or fixed): the prior is a non-negative mix of exactly these `PRIOR_TERMS`,
followed, when the featuriser has kernels, by each accelerator cost (version 3) and each kernel shape's
work, over f and as it is (the extra cost of that shape beyond the generic rates). Training fits the
coefficients (`fit_prior`, `fit_prior_choosing_kernel_terms`) and stores them with the terms in the
feature schema (`prior_entry`); serving reads them back (`read_prior`) and takes log(prior) as the trees'
base margin (`PhysicsPrior.log_ms`). Everything is computed from the featurised matrix `x`, whose columns
the prior finds by name in `Featurizer.names`, so training, serving and snapshots see the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.optimize import nnls

from service.predictors.features import ACCELERATOR_PRIOR_COLUMNS, Featurizer

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

#: Ridge strength on the per-kernel prior terms, per row, in the unit-scaled relative space of `fit_prior`.
KERNEL_SHRINKAGE = 1e-3

#: The matrix columns the generic terms are built from (widened to float64 on their own, not the matrix).
_GENERIC_INPUTS = ("frequency_mhz", "flops_per_mhz", "activation_bytes_per_mhz", "activation_bytes", "layers")


class PhysicsPrior:
    """The prior's terms over one featuriser's matrix: names, design, and the milliseconds it predicts."""

    def __init__(self, featurizer: Featurizer) -> None:
        names = featurizer.names
        self._generic = [names.index(c) for c in _GENERIC_INPUTS]
        kernels = featurizer.kernels
        self._kernels = slice(0, 0)
        if kernels:
            first = names.index(f"kernel:{kernels[0]}")
            self._kernels = slice(first, first + len(kernels))
        # The accelerator terms join the kernel prior only (no kernels: the generic 7-term prior, as asked).
        accelerator = ACCELERATOR_PRIOR_COLUMNS if featurizer.accelerator and kernels else ()
        self._accelerator = [names.index(c) for c in accelerator]
        self.has_pairs = bool(kernels)
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

    def log_ms(self, x: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
        """log of the prior (ms) of each row of `x` (float64), floored at `PRIOR_FLOOR_MS`."""
        log_ms: np.ndarray = np.log(np.maximum(self.ms(x, coefficients), PRIOR_FLOOR_MS))
        return log_ms

    def _paired(self, x: np.ndarray) -> np.ndarray:
        """The accelerator then the kernel columns of `x` (float64): the terms over f and as they are."""
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


def prior_entry(prior: PhysicsPrior, coefficients: np.ndarray, kernel_terms: bool | None) -> dict[str, Any]:
    """The schema's `"prior"`: terms, coefficients and (when fitted here) whether kernel terms were kept."""
    entry: dict[str, Any] = {"terms": prior.terms}
    if kernel_terms is not None:
        entry["kernel_terms"] = kernel_terms
    entry["coefficients"] = coefficients.tolist()
    return entry


def fit_prior(design: np.ndarray, measured_ms: np.ndarray, *, shrunk_from: int | None = None) -> np.ndarray:
    """Non-negative coefficients of the physics prior minimising its *relative absolute* error.

    Each row is divided by its measured latency so a 0.1 ms block counts as much as a 20 ms one (the trees
    then correct a log residual); columns are scaled to unit maximum for a well-conditioned NNLS. Absolute,
    not squared, error (iteratively reweighted least squares): slow outliers of a busy host must not lift
    the prior any more than the median trees above it. Columns from `shrunk_from` on (the per-kernel terms)
    carry a small ridge penalty: with few configs and dozens of kernel shapes the plain fit has many exact
    solutions and scatters them, while the penalty keeps what the generic rates explain with them (on
    virtual-phone data, 50 configs: 67 % within ±10 % instead of 64 %; 1,000 configs: unchanged).
    """
    relative = design / measured_ms[:, None]
    scale = np.abs(relative).max(axis=0)
    scale[scale == 0] = 1.0
    scaled, target = relative / scale, np.ones(len(measured_ms))
    penalty = np.zeros((0, design.shape[1]))
    if shrunk_from is not None and shrunk_from < design.shape[1]:
        shrunk = np.arange(shrunk_from, design.shape[1])
        penalty = np.zeros((len(shrunk), design.shape[1]))
        penalty[np.arange(len(shrunk)), shrunk] = np.sqrt(KERNEL_SHRINKAGE * len(measured_ms))
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
            fitted[keep] = fit_prior(design, measured[fit], shrunk_from=start)
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
