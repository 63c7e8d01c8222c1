"""The method registry: every method a run can compare, declared once.

A *method* is one way of producing a user's test predictions (paper Table 2):
``cloud`` (the cloud model as shipped), ``local`` (fine-tuning on raw
labels), LCFT's ``soft1`` / ``soft2`` / ``hard`` (fine-tuning on corrected
labels, docs/loss_and_correction.md) and CoDA's ``coda`` / ``coda_lcft`` /
``retrieval_only`` (fine-tuning on local plus retrieved samples,
docs/coda.md). The fleet, the report, the pipeline and the command line read
this table; adding a method means adding its row here and its
implementation where its ``kind`` is run.

``baseline`` methods are references that no device runs, scored from train
data alone (:mod:`lcft_tf.evaluation.baselines`); every run reports them
beside Cloud, so a reader sees whether the cloud model beats a count.
"""

from __future__ import annotations

import dataclasses

from lcft_tf.correction import CORRECTIONS

KINDS = ("cloud", "fine_tune", "coda", "baseline")
# Fine matching by the sample classifier (its keep rule: CodaConfig.keep), or every retrieved sample, weight 1.
CODA_MATCHING = ("classifier", "all")
NEEDS = ("hard_table", "embeddings", "coda_files")


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the registry.

    Attributes:
        name: the id used in configs, flags, ``results.json`` and fleet chunks.
        label: the display name in tables and figures.
        kind: ``cloud`` (no fine-tuning), ``fine_tune`` (the device trains on
            its own samples), ``coda`` (on local plus retrieved samples) or
            ``baseline`` (a reference scored without any device).
        correction: the label correction the device applies before training
            (one of :data:`lcft_tf.correction.CORRECTIONS`), None for
            ``cloud`` and baselines.
        coda_matching: for ``coda`` methods, ``classifier`` (the sample
            classifier keeps, or weights, the local-looking retrieved
            samples: ``coda`` with raw labels, ``coda_lcft`` with soft2 over
            local + kept) or ``all`` (``retrieval_only``: every retrieved
            sample, raw labels; the ablation that shows what fine matching
            adds).
        needs: what the method requires of the run: ``hard_table`` (the
            exported file ships a hard table), ``embeddings`` (the model has
            embedding tables to retrieve with), ``coda_files`` (the cloud's
            CoDA stage).
    """

    name: str
    label: str
    kind: str
    correction: str | None = None
    coda_matching: str | None = None
    needs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.correction is not None and self.correction not in CORRECTIONS:
            raise ValueError(f"method {self.name!r}: correction must be one of {CORRECTIONS}, got {self.correction!r}")
        if (self.kind == "coda") != (self.coda_matching is not None) or (
            self.coda_matching is not None and self.coda_matching not in CODA_MATCHING
        ):
            raise ValueError(f"method {self.name!r}: coda methods (only) name a matching from {CODA_MATCHING}")
        if set(self.needs) - set(NEEDS):
            raise ValueError(f"method {self.name!r}: unknown needs {sorted(set(self.needs) - set(NEEDS))}")

    @property
    def fine_tunes(self) -> bool:
        """True if a device trains for this method (it takes train steps)."""
        return self.kind in ("fine_tune", "coda")


_CODA_NEEDS = ("embeddings", "coda_files")
REGISTRY: dict[str, Method] = {
    m.name: m
    for m in (
        Method("cloud", "Cloud", "cloud"),
        Method("local", "Local", "fine_tune", correction="none"),
        Method("soft1", "LCFT Soft1", "fine_tune", correction="soft1"),
        Method("soft2", "LCFT Soft2", "fine_tune", correction="soft2"),
        Method("hard", "LCFT Hard", "fine_tune", correction="hard", needs=("hard_table",)),
        Method("coda", "CoDA", "coda", correction="none", coda_matching="classifier", needs=_CODA_NEEDS),
        Method("coda_lcft", "CoDA + LCFT", "coda", correction="soft2", coda_matching="classifier", needs=_CODA_NEEDS),
        Method("retrieval_only", "Retrieval only", "coda", correction="none", coda_matching="all", needs=_CODA_NEEDS),
        Method("popularity", "Popularity", "baseline"),
        Method("item_count", "Item count", "baseline"),
    )
}
METHODS = tuple(REGISTRY)
# What a run compares unless told otherwise: Cloud, Local and LCFT (Table 2).
DEFAULT_METHODS = tuple(n for n, m in REGISTRY.items() if m.kind in ("cloud", "fine_tune"))
# Scored in every run, beside the methods asked for (docs/evaluation.md "Baselines").
BASELINES = tuple(n for n, m in REGISTRY.items() if m.kind == "baseline")
# Methods a device runs (the fleet's), in registry order.
DEVICE_METHODS = tuple(n for n, m in REGISTRY.items() if m.kind != "baseline")
# Gains are reported against these when a run has them (docs/evaluation.md).
REFERENCES = ("cloud", "local")


def get(name: str) -> Method:
    """The registry row of ``name``; raises ``ValueError`` naming the choices."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {list(METHODS)}") from None


def label(name: str) -> str:
    """Display name of ``name``; a name the registry does not know is shown as is."""
    method = REGISTRY.get(name)
    return method.label if method else name


def of_kind(names, *kinds: str) -> tuple[str, ...]:
    """The names among ``names`` whose method has one of ``kinds`` (order kept)."""
    return tuple(n for n in names if get(n).kind in kinds)


def check_methods(names, choices: tuple[str, ...] = METHODS) -> tuple[str, ...]:
    """``names`` as a tuple after checking that it is non-empty, without
    repeats and among ``choices`` (default: every registry method); raises
    ``ValueError`` otherwise."""
    names = tuple(names)
    unknown = [n for n in names if n not in choices]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"unknown or repeated methods {list(names)}; choose from {list(choices)}")
    return names
