"""The one featuriser: config dicts × frequencies → the float32 matrix every XGBoost model of latfarm sees.

Training, the serving path and the offline snapshot loader all call `Featurizer.matrix`, so a model never
meets features computed differently from the ones it was trained on. The feature layout is derived from
the family's pydantic config model (`feature_layout`), never hand-listed per family:

- config fields: numbers as they are, booleans 0/1, string choices (Enum / Literal) one-hot, integer lists
  (per-layer widths) padded with 0 to the field's maximum length, plus the list's length;
- costs from `profilers.blocks` (`fam.costs`): totals (FLOPs, params, activation bytes, layers) and FLOPs
  and activation bytes per conv layer, padded to the family's layer slots;
- run conditions: frequency (MHz), FLOPs / frequency, activation bytes / frequency, threads, and the
  cluster one-hot plus its ordinal.

Per-config features are computed once per distinct config (parsing + cost counts take ~30 µs a config)
and cached by the config's marshal bytes (its repr when marshal cannot encode it), or by its JSON text
when the batch comes straight from a request body (`JsonConfigs`); a batch is then broadcast
over its frequencies with numpy (config-major: row `i * n_freq + j` is config `i` at frequency `j`). This
module imports no database code: the snapshot loader depends on it.
"""

from __future__ import annotations

import enum
import marshal
import threading
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydantic_core
from pydantic import BaseModel, ValidationError

from profilers.blocks import BlockConfigError, get_family

#: Bumped whenever the layout or the arithmetic of features changes; snapshots of another version are refused.
FEATURES_VERSION = 1

#: Terms of `Featurizer.prior_design`, in column order (stored with a predictor's prior coefficients).
PRIOR_TERMS = (
    "flops_per_mhz",
    "activation_bytes_per_mhz",
    "layers_per_mhz",
    "per_mhz",
    "activation_bytes",
    "layers",
    "constant",
)

#: Conv layers whose costs get their own columns; later conv layers are added into the last slot.
_LAYER_SLOTS = {"sr_block": 18, "conv": 1, "mbconv": 5}

#: Distinct configs whose features are kept per family (bounded so a long search cannot grow memory).
_CACHE_LIMIT = 200_000


class FeatureError(ValueError):
    """A config that cannot be featurised: `index` in the batch and the offending `field` (or None)."""

    def __init__(self, index: int, field: str | None, msg: str) -> None:
        super().__init__(f"configs[{index}]{'.' + field if field else ''}: {msg}")
        self.index = index
        self.field = field
        self.msg = msg


@dataclass(frozen=True)
class FieldSpec:
    """How one config field becomes columns: kind is number | bool | category | list."""

    name: str
    kind: str
    choices: tuple[str, ...] = ()
    length: int = 0


def _field_spec(name: str, annotation: Any, metadata: list[Any], max_depth: int) -> FieldSpec:
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return FieldSpec(name, "bool")
    if annotation in (int, float):
        return FieldSpec(name, "number")
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return FieldSpec(name, "category", tuple(str(m.value) for m in annotation))
    if origin is typing.Literal:
        args = typing.get_args(annotation)
        if all(isinstance(a, str) for a in args):
            return FieldSpec(name, "category", tuple(args))
        return FieldSpec(name, "number")
    if origin is list:
        max_len = next((m.max_length for m in metadata if hasattr(m, "max_length")), None)
        return FieldSpec(name, "list", length=int(max_len or max_depth + 1))
    raise BlockConfigError(f"config field {name!r} has a type the featuriser cannot encode: {annotation!r}")


def feature_layout(family: str) -> tuple[list[FieldSpec], int]:
    """The field specs and conv-layer slot count of `family`, derived from its config model."""
    fam = get_family(family)
    hints = typing.get_type_hints(fam.config_model)
    specs = [
        _field_spec(name, hints[name], list(info.metadata), fam.max_depth)
        for name, info in fam.config_model.model_fields.items()
    ]
    return specs, _LAYER_SLOTS.get(family, fam.max_depth + 2)


def _config_feature_names(specs: list[FieldSpec], slots: int) -> list[str]:
    names: list[str] = []
    for spec in specs:
        if spec.kind in ("number", "bool"):
            names.append(spec.name)
        elif spec.kind == "category":
            names.extend(f"{spec.name}={c}" for c in spec.choices)
        else:
            names.append(f"{spec.name}.len")
            names.extend(f"{spec.name}[{i}]" for i in range(spec.length))
    names += ["flops", "params", "activation_bytes", "layers", "conv_layers"]
    names += [f"layer{i}.flops" for i in range(slots)]
    names += [f"layer{i}.activation_bytes" for i in range(slots)]
    return names


class _RowCache:
    """Bounded, thread-safe map of config key (see `_cache_keys`) → feature row (FIFO eviction)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.rows: dict[bytes | str, np.ndarray] = {}
        self.lock = threading.Lock()

    def get_many(self, keys: list[bytes | str]) -> list[np.ndarray | None]:
        rows = self.rows
        return [rows.get(k) for k in keys]

    def put_many(self, items: list[tuple[bytes | str, np.ndarray]]) -> None:
        with self.lock:
            for key, row in items:
                self.rows[key] = row
            overflow = len(self.rows) - self.limit
            if overflow > 0:
                for key in list(self.rows)[:overflow]:
                    del self.rows[key]


_CACHES: dict[str, _RowCache] = {}
#: Rows keyed by a config's JSON text (`JsonConfigs`): a key space of its own, apart from marshal keys.
_JSON_CACHES: dict[str, _RowCache] = {}
_CACHES_LOCK = threading.Lock()


def _cache_for(family: str, caches: dict[str, _RowCache] = _CACHES) -> _RowCache:
    cache = caches.get(family)
    if cache is None:
        with _CACHES_LOCK:
            cache = caches.setdefault(family, _RowCache(_CACHE_LIMIT))
    return cache


class JsonConfigs(Sequence[Any]):
    """A batch of configs still as their JSON texts (one `bytes` per config), decoded only where needed.

    The feature cache looks a config up by its text, so a warm batch never builds 1,000 dicts nor their
    marshal keys (together most of a warm `/v1/predict` beside the trees). Equal texts are equal configs;
    the same config written differently is only a cache miss. Texts are decoded with pydantic-core's
    parser, the one `model_validate_json` uses, so a config reads exactly as in a validated body.
    """

    def __init__(self, family: str, texts: list[bytes]) -> None:
        self.family = family
        self.texts = texts
        self._decoded: dict[int, Any] = {}

    @classmethod
    def checked(cls, family: str, texts: list[bytes]) -> JsonConfigs:
        """The batch, with every text the feature cache does not hold decoded now.

        Raises ValueError when one is not valid JSON (a cached text decoded before), so a caller can fall
        back to full validation and report the body exactly as it would have.
        """
        batch = cls(family, texts)
        cache = _JSON_CACHES.get(family)  # never made here: `family` is not known to be a family yet
        rows = cache.get_many(texts) if cache is not None else [None] * len(texts)
        for i, row in enumerate(rows):
            if row is None:
                batch._decoded[i] = pydantic_core.from_json(texts[i])
        return batch

    def __len__(self) -> int:
        return len(self.texts)

    @typing.overload
    def __getitem__(self, index: int) -> Any: ...
    @typing.overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self.texts)
        if index not in self._decoded:
            self._decoded[index] = pydantic_core.from_json(self.texts[index])
        return self._decoded[index]


def _cache_keys(configs: Sequence[Any]) -> list[bytes | str]:
    """Feature-cache keys of a batch: `marshal.dumps` of each config, `repr` where marshal cannot encode it.

    Both are unambiguous encodings (2, 2.0 and True differ; marshal output decodes back to its value), so
    equal keys mean equal configs. Marshal is ~2× cheaper than repr and ~7× cheaper than sorted JSON on a
    JSON-born dict. Key order, or marshal's back-references to shared objects, can only give one config two
    keys — a cache miss, never a wrong row. A marshal key (bytes) never equals a repr key (str).
    """
    try:
        return [marshal.dumps(c) for c in configs]
    except ValueError:  # a config model or another object marshal does not know
        keys: list[bytes | str] = []
        for c in configs:
            try:
                keys.append(marshal.dumps(c))
            except ValueError:
                keys.append(repr(c))
        return keys


def _first_error(exc: ValidationError) -> tuple[str | None, str]:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    return (loc[0] if loc else None), str(err.get("msg", "invalid"))


@dataclass
class Featurizer:
    """Turns (configs, frequencies, cluster, threads) into the feature matrix of one family.

    `clusters` are the cluster names seen in training (one-hot columns, in this order); the schema
    (`to_schema`) round-trips through the database and snapshots.
    """

    family: str
    clusters: list[str]
    specs: list[FieldSpec] = field(init=False)
    slots: int = field(init=False)
    config_names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.specs, self.slots = feature_layout(self.family)
        self.config_names = _config_feature_names(self.specs, self.slots)
        self._flops_col = self.config_names.index("flops")
        self._act_col = self.config_names.index("activation_bytes")
        self._layers_col = self.config_names.index("layers")
        self._family = get_family(self.family)

    @property
    def names(self) -> list[str]:
        """Column names of the full matrix, in order."""
        run = ["frequency_mhz", "flops_per_mhz", "activation_bytes_per_mhz", "threads", "cluster_index"]
        return self.config_names + run + [f"cluster={c}" for c in self.clusters]

    def to_schema(self) -> dict[str, Any]:
        """JSON description stored with a predictor (enough to rebuild this featuriser)."""
        return {
            "features_version": FEATURES_VERSION,
            "family": self.family,
            "clusters": list(self.clusters),
            "names": self.names,
        }

    @classmethod
    def from_schema(cls, schema: Mapping[str, Any]) -> Featurizer:
        """Rebuild the featuriser of a stored schema; refuses another features version or layout."""
        version = schema.get("features_version")
        if version != FEATURES_VERSION:
            raise ValueError(f"feature schema version {version!r}; this build computes {FEATURES_VERSION}")
        featurizer = cls(str(schema["family"]), [str(c) for c in schema.get("clusters", [])])
        if list(schema.get("names", [])) != featurizer.names:
            raise ValueError("the feature names of the schema differ from the ones this build computes")
        return featurizer

    # -- per config --------------------------------------------------------------------------------------
    def _config_row(self, config: BaseModel) -> np.ndarray:
        data = config.model_dump(mode="json")
        values: list[float] = []
        for spec in self.specs:
            value = data[spec.name]
            if spec.kind in ("number", "bool"):
                values.append(float(value))
            elif spec.kind == "category":
                values.extend(1.0 if str(value) == c else 0.0 for c in spec.choices)
            else:
                padded = [float(v) for v in value[: spec.length]]
                values.append(float(len(value)))
                values.extend(padded + [0.0] * (spec.length - len(padded)))
        costs = self._family.costs(config)
        convs = [layer for layer in costs.layers if layer.op == "Conv"]
        flops = [0.0] * self.slots
        acts = [0.0] * self.slots
        for i, layer in enumerate(convs):
            slot = min(i, self.slots - 1)
            flops[slot] += layer.flops
            acts[slot] += layer.activation_bytes
        values += [costs.flops, costs.params, costs.activation_bytes, len(costs.layers), len(convs)]
        return np.asarray(values + flops + acts, dtype=np.float64)

    def config_rows(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Per-config feature rows (float64, n × len(config_names)); raises FeatureError on a bad config."""
        if isinstance(configs, JsonConfigs) and configs.family == self.family:
            cache = _cache_for(self.family, _JSON_CACHES)
            keys: list[bytes | str] = list(configs.texts)
        else:
            cache = _cache_for(self.family)
            keys = _cache_keys(configs)
        rows = cache.get_many(keys)
        fresh: list[tuple[bytes | str, np.ndarray]] = []
        for i, row in enumerate(rows):
            if row is not None:
                continue
            config = configs[i]
            if not isinstance(config, Mapping | BaseModel):
                raise FeatureError(i, None, f"a {self.family} config must be a JSON object")
            try:
                parsed = self._family.parse(config)
            except ValidationError as exc:
                name, msg = _first_error(exc)
                raise FeatureError(i, name, msg) from None
            rows[i] = self._config_row(parsed)
            fresh.append((keys[i], rows[i]))
        if fresh:
            cache.put_many(fresh)
        if not rows:
            return np.empty((0, len(self.config_names)), dtype=np.float64)
        # np.array over equal-length rows is ~2.5× cheaper than np.vstack (no per-row atleast_2d).
        return np.array(rows, dtype=np.float64)

    # -- batch ---------------------------------------------------------------------------------------
    def matrix(
        self,
        config_rows: np.ndarray,
        frequencies_khz: np.ndarray,
        threads: np.ndarray | int,
        cluster: np.ndarray | str,
        *,
        broadcast: bool,
    ) -> np.ndarray:
        """The float32 model input.

        With `broadcast`, every config is paired with every frequency, config-major; otherwise row i of
        `config_rows` goes with `frequencies_khz[i]` (training: one row per measurement). `threads` and
        `cluster` are one value for the batch or one per row.
        """
        freqs = np.asarray(frequencies_khz, dtype=np.float64)
        if broadcast:
            n_freq = freqs.shape[0]
            base = np.repeat(config_rows, n_freq, axis=0)
            freqs = np.tile(freqs, config_rows.shape[0])
        else:
            base = config_rows
        n = base.shape[0]
        mhz = freqs / 1000.0
        cluster_idx = self._cluster_index(cluster, n)
        onehot = np.zeros((n, len(self.clusters)), dtype=np.float64)
        known = cluster_idx >= 0
        onehot[np.nonzero(known)[0], cluster_idx[known]] = 1.0
        run = np.column_stack(
            [
                mhz,
                base[:, self._flops_col] / mhz,
                base[:, self._act_col] / mhz,
                np.broadcast_to(np.asarray(threads, dtype=np.float64), (n,)),
                cluster_idx.astype(np.float64),
            ]
        )
        return np.hstack([base, run, onehot]).astype(np.float32)

    def _cluster_index(self, cluster: np.ndarray | str, n: int) -> np.ndarray:
        lookup = {c: i for i, c in enumerate(self.clusters)}
        if isinstance(cluster, str):
            return np.full(n, lookup.get(cluster, -1), dtype=np.int64)
        return np.fromiter((lookup.get(str(c), -1) for c in cluster), dtype=np.int64, count=len(cluster))

    def prior_design(self, x: np.ndarray) -> np.ndarray:
        """Terms of the physics prior, one row per row of `x` (float64, n × len(PRIOR_TERMS)).

        Latency ≈ compute (FLOPs / f) + memory traffic (bytes / f, or bytes at a fixed bandwidth) + per-layer
        and per-call overheads (cycles / f, or fixed); the prior is a non-negative mix of exactly these.
        """
        n = len(self.config_names)
        # Only the five columns used are widened to float64, not the whole matrix.
        cols = x[:, [n, n + 1, n + 2, self._act_col, self._layers_col]].astype(np.float64)
        mhz, flops_per_mhz, acts_per_mhz, acts, layers = cols.T
        return np.column_stack(
            [flops_per_mhz, acts_per_mhz, layers / mhz, 1.0 / mhz, acts, layers, np.ones(x.shape[0])]
        )

    def baseline_input(self, x: np.ndarray) -> np.ndarray:
        """log(FLOPs / MHz) of each row: the one input of the log-log baseline the trees correct."""
        col = len(self.config_names) + 1  # flops_per_mhz
        return np.log(np.maximum(x[:, col].astype(np.float64), 1.0))
