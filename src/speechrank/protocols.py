"""Published measurement protocols by name: ``rank --protocol aldeneh2025 | whetten2025``.

Reproducing a paper means setting half a dozen conventions right (pooling, centring, eps, N,
layers). A :class:`Protocol` is a typed preset of :class:`~speechrank.spec.MeasureSpec` fields
and a function from a spec to a spec (:meth:`Protocol.apply`): it fills the fields the caller
left at their defaults; fields given explicitly still win, and both are recorded
(:meth:`Protocol.record`), so a result says which paper's protocol it follows and where it
departs. ``rank``, the sweep and the training monitor all apply it through
:func:`apply_protocol`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from speechrank.errors import SpeechrankError
from speechrank.spec import DEFAULT_SPEC, MeasureSpec, ProtocolName

__all__ = ["ALDENEH2025", "PROTOCOLS", "WHETTEN2025", "Protocol", "ProtocolName",
           "apply_protocol", "get_protocol"]


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A named preset of measurement fields.

    Attributes:
        name: the ``--protocol`` value.
        citation: the paper.
        options: :class:`~speechrank.spec.MeasureSpec` fields the preset sets.
        stated: details the paper states.
        inferred: details the paper does not state that the preset had to choose.

    Every preset keeps the convergence record on (whether N was enough belongs to reading any
    protocol's number), also in the training monitor, where it is off by default.
    """

    name: str
    citation: str
    options: Mapping[str, Any]
    stated: tuple[str, ...]
    inferred: tuple[str, ...]

    def _explicit(self, spec: MeasureSpec, defaults: MeasureSpec) -> dict[str, Any]:
        """The preset's fields that ``spec`` sets to something other than ``defaults``."""
        return {key: getattr(spec, key) for key in self.options
                if getattr(spec, key) != getattr(defaults, key)}

    def apply(self, spec: MeasureSpec, defaults: MeasureSpec = DEFAULT_SPEC) -> MeasureSpec:
        """``spec`` with the preset's values wherever it holds ``defaults``' value."""
        explicit = self._explicit(spec, defaults)
        return spec.replace(**{key: value for key, value in self.options.items()
                               if key not in explicit})

    def record(self, spec: MeasureSpec, defaults: MeasureSpec = DEFAULT_SPEC
               ) -> dict[str, Any]:
        """What to record of applying the preset to ``spec``: the protocol, its citation,
        which fields it filled, which explicit fields departed from it, and what it states
        and infers."""
        preset = MeasureSpec().replace(**self.options)  # the preset's values, normalised
        explicit = self._explicit(spec, defaults)
        overridden = {key: {"protocol": _jsonable(getattr(preset, key)),
                            "used": _jsonable(value)}
                      for key, value in explicit.items() if getattr(preset, key) != value}
        return {"name": self.name, "citation": self.citation,
                "filled": sorted(k for k in self.options if k not in explicit),
                "overridden": overridden, "stated": list(self.stated),
                "inferred": list(self.inferred)}


ALDENEH2025 = Protocol(
    name="aldeneh2025",
    citation=("Aldeneh, Thilak, Higuchi, Theobald, Likhomanenko, 'Towards Automatic "
              "Assessment of Self-Supervised Speech Models using Rank', ICASSP 2025, "
              "arXiv 2409.10787"),
    options={"poolings": ("sum",), "metrics": ("rankme",), "num_utterances": 10_000,
             "layers": "all", "total_seconds": None, "convergence": True},
    stated=(
        "RankMe-t: per utterance, the sum of a layer's frame vectors over its valid frames",
        "RankMe of the raw (uncentred) matrix from its singular values, eps = 1e-7",
        "10,000 utterances",
        "every layer",
    ),
    inferred=(
        "the 10,000 utterances are a seeded random subset when the data holds more "
        "(the paper does not say how they were drawn)",
        "layer 0 is the transformer's input (Hugging Face hidden_states[0])",
    ),
)
"""RankMe-t as Aldeneh et al. (ICASSP 2025) define it: the ``sum`` pooling of valid frames, the
raw matrix, singular values, eps 1e-7 (``rankme``'s own defaults), 10,000 utterances, every
layer. Inferred, not stated: how the utterances are drawn (seeded random subset) and the layer
numbering (Hugging Face's)."""

WHETTEN2025 = Protocol(
    name="whetten2025",
    citation=("Whetten et al., 'Towards Early Prediction of Self-Supervised Speech Model "
              "Performance', Interspeech 2025, arXiv 2501.05966"),
    options={"poolings": ("sum", "frames"),
             "metrics": ("rankme", "kmeans_inertia", "davies_bouldin"),
             "num_utterances": None, "total_seconds": 3600.0, "max_frames": None,
             "n_clusters": 1024, "cluster_max_rows": 25_600, "layers": "all",
             "convergence": True},
    stated=(
        "one hour of unlabelled audio",
        "RankMe-t, and the effective rank of all the frames pooled",
        "mini-batch k-means with k = 1024: inertia and Davies-Bouldin index",
    ),
    inferred=(
        "the hour is a seeded random draw of whole utterances until 3,600 s are reached",
        "'effective rank of all frames' is rankme (raw matrix, singular values, eps 1e-7) of "
        "every valid frame of the hour (the frames pooling, uncapped)",
        "k-means runs on at most 25,600 of those frames, a seeded uniform sample, to bound "
        "memory and time (the paper's frame count for clustering is not known to us)",
        "the inertia is normalised by the total sum of squares (see metrics.cluster)",
        "every layer (the paper reads layers 8 and 12 for its predictions)",
    ),
)
"""One hour of audio, RankMe-t, the effective rank of all frames pooled, and mini-batch
k-means (k = 1024) inertia and Davies-Bouldin, after Whetten et al. (Interspeech 2025).
Stated there (through third-party notes, not the paper text): the hour, the four measures,
k = 1024. Inferred: how the hour is drawn, the effective-rank variant, the cap of 25,600
clustered frames, the inertia normalisation, and measuring every layer."""

PROTOCOLS: Mapping[str, Protocol] = {p.name: p for p in (ALDENEH2025, WHETTEN2025)}


def get_protocol(name: str) -> Protocol:
    """The preset called ``name``; one-line error otherwise."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise SpeechrankError(f"unknown protocol '{name}'; choose from "
                              f"{', '.join(PROTOCOLS)}") from None


def apply_protocol(spec: MeasureSpec, defaults: MeasureSpec = DEFAULT_SPEC
                   ) -> tuple[MeasureSpec, dict[str, Any] | None]:
    """``spec`` with its protocol applied (fields left at ``defaults`` filled from the preset)
    and the record of what was filled and overridden; ``(spec, None)`` without a protocol.

    ``defaults`` are the caller's own: ``rank``'s :data:`~speechrank.spec.DEFAULT_SPEC`, the
    monitor's :data:`~speechrank.spec.MONITOR_SPEC`."""
    if spec.protocol is None:
        return spec, None
    protocol = get_protocol(spec.protocol)
    return protocol.apply(spec, defaults), protocol.record(spec, defaults)
