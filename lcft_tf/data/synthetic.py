"""Synthetic CTR data with real CTR drift: the default dataset, no download.

Generative process (every step seeded, all numpy-vectorised):

1. **Items** ``j = 1..num_items``: a category ``c_j`` (Zipf-like shares over
   ``num_categories``), a latent vector ``v_j = (z_j + k_{c_j}) / sqrt(2)``
   with ``z, k ~ N(0, I / latent_dim)``, a popularity ``b_j ~
   N(0, popularity_spread)``, and a ``dense_dim``-d "genome"
   ``g_j = sigmoid(v_j A + noise)`` (like MovieLens' tag genome).
2. **Users** ``i = 1..num_users``: a taste ``u_i ~ N(0, I / latent_dim)``, a
   click propensity ``theta_i ~ N(0, ctr_spread)`` (the source of CTR drift),
   and a number of impressions ``n_i ~ LogNormal`` with mean
   ``mean_samples_per_user`` (at least ``min_samples_per_user``). A seeded
   ``few_sample_share`` of users instead gets a number uniform in
   ``few_sample_range`` (inclusive; total impressions, train is the first
   ``1 - test_fraction`` of them): the few-sample users CoDA targets
   (docs/coda.md). It is drawn from its own generator, so share 0
   (the default) leaves every other draw unchanged. With ``taste_clusters
   = C > 0`` tastes are instead ``sqrt(1 - s^2) p_c + s e_i`` with ``C``
   prototypes ``p_c`` and own parts ``e_i`` (both ``N(0, I / latent_dim)``,
   so the taste variance is unchanged), ``s = taste_noise``, users assigned
   to clusters uniformly: similar users exist in the pool, CoDA's other
   premise (docs/coda.md); two users of one cluster have taste correlation
   ``1 - s^2``. Own generator again: 0 clusters (the default) draws nothing.
   ``info["taste_cluster"]`` holds each user's cluster (1-based).
3. **Impressions**: each user sees ``n_i`` items drawn with probability
   ``∝ exp(b_j)``, at increasing timestamps. With ``exposure_taste = e >
   0`` instead ``∝ exp(b_j + e * sqrt(d) * u_i·v_j)``: users are shown (or
   pick) items they like, as in real logs, so a user's *samples* (items,
   histories), not only its labels, reflect its taste, which is what CoDA's
   coarse matching compares (docs/coda.md). Own generator; 0 (the default)
   changes nothing.
4. **Clicks**: ``P(click) = sigmoid(mu + theta_i + taste_weight * sqrt(d) *
   u_i·v_j + b_j)``; ``mu`` is solved (bisection) so the expected overall
   click rate is ``global_ctr``. Local CTRs ``w_i`` then spread around
   ``w_g`` roughly like the paper's Fig. 1 (``ctr_spread`` sets the width).
5. **Features** (the MovieLens fields): ``user_id``, ``item_id``,
   ``category``, ``pos_hist`` / ``neg_hist`` = the user's last
   ``history_length`` clicked / skipped items before the sample (most recent
   first, 0-padded), ``genome`` = ``g_j`` of the candidate.
6. **Split**: each user's last ``test_fraction`` of impressions is test.

Ids start at 1 (0 is padding). ``num_users=5700, mean_samples_per_user=570``
gives MovieLens-20M size (~3.2M samples).
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import time

import numpy as np

from lcft_tf import checks
from lcft_tf.data.dataset import (
    CTRDataset,
    click_history_features,
    click_history_spec,
    per_user_split,
    user_index,
)
from lcft_tf.features import DenseFeature, FeatureSpec

log = logging.getLogger(__name__)

# Largest spread or weight of a logit term: exp() of larger popularity draws
# overflows in the exposure weights (NaN probabilities), and global_ctr can
# no longer be met by the click offset (solved in [-20, 20]).
MAX_LOGIT_SCALE = 50.0
# Most samples a synthetic dataset may have in expectation (num_users x
# mean_samples_per_user): a huge mean overflows the int64 sample counts.
MAX_SAMPLES = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the generative process in the module docstring.

    Raises ``ValueError`` on construction, naming the field and the value,
    for a field outside the rule its help states: counts are integers >= 1
    (ids fit int32), every float is finite and in its range (NaN and inf are
    refused), ``few_sample_range`` is two integers ``2 <= lo <= hi``.
    """

    num_users: int = dataclasses.field(default=500, metadata={"help": "Number of users (ids 1..num_users), an integer >= 1."})
    num_items: int = dataclasses.field(
        default=300, metadata={"help": "Number of items (ids 1..num_items; 0 is padding), an integer >= 1."}
    )
    num_categories: int = dataclasses.field(
        default=20, metadata={"help": "Number of item categories, with Zipf-like shares."}
    )
    mean_samples_per_user: float = dataclasses.field(
        default=200.0, metadata={"help": "Mean impressions per user (log-normal), finite, >= min_samples_per_user and at most 2**31 - 1 samples "
                                 "over all users."}
    )
    min_samples_per_user: int = dataclasses.field(
        default=20, metadata={"help": "Fewest impressions a user gets, an integer >= 2 (one train, one test)."}
    )
    global_ctr: float = dataclasses.field(
        default=0.5, metadata={"help": "Expected overall click rate w_g, in (0, 1)."}
    )
    ctr_spread: float = dataclasses.field(
        default=1.0, metadata={"help": "Std of the per-user click propensity: how far local CTRs w_i drift from w_g; in [0, 50]."}
    )
    taste_weight: float = dataclasses.field(
        default=1.5, metadata={"help": "Weight of user-item taste affinity in the click logit; in [-50, 50]."}
    )
    popularity_spread: float = dataclasses.field(
        default=0.5, metadata={"help": "Std of item popularity (logit bias, also exposure weight); in [0, 50] (exp() of larger draws overflows)."}
    )
    latent_dim: int = dataclasses.field(default=8, metadata={"help": "Dimension of user tastes and item vectors."})
    dense_dim: int = dataclasses.field(default=16, metadata={"help": "Dimension of each item's genome vector."})
    history_length: int = dataclasses.field(default=10, metadata={"help": "Length of pos_hist / neg_hist."})
    test_fraction: float = dataclasses.field(
        default=0.2, metadata={"help": "Each user's last fraction of impressions that is test, in (0, 1)."}
    )
    few_sample_share: float = dataclasses.field(
        default=0.0, metadata={"help": "Share of users with few impressions, the users CoDA targets (docs/coda.md); in [0, 1]."}
    )
    few_sample_range: tuple[int, int] = dataclasses.field(
        default=(5, 20), metadata={"help": "Inclusive range (lo, hi) of a few-sample user's impressions, integers with 2 <= lo <= hi."}
    )
    taste_clusters: int = dataclasses.field(
        default=0, metadata={"help": "Number of taste clusters of similar users (an integer >= 0); 0 draws independent tastes."}
    )
    taste_noise: float = dataclasses.field(
        default=0.3, metadata={"help": "Share s of a clustered taste that is the user's own, in [0, 1]."}
    )
    exposure_taste: float = dataclasses.field(
        default=0.0, metadata={"help": "How strongly users are shown items they like, in [0, 50); 0 is popularity only."}
    )
    seed: int = dataclasses.field(default=0, metadata={"help": "Seed of every draw (and of the max_users subsample), an integer in [0, 2**32 - 1]."})

    def __post_init__(self) -> None:
        for name in ("num_users", "num_items"):  # ids 1..n are int32 (0 is padding)
            checks.integer(getattr(self, name), name, 1, checks.MAX_ID)
        for name in ("num_categories", "latent_dim", "dense_dim", "history_length"):
            checks.integer(getattr(self, name), name, 1)
        checks.integer(self.min_samples_per_user, "min_samples_per_user", 2)
        checks.number(self.mean_samples_per_user, "mean_samples_per_user", self.min_samples_per_user,
                      MAX_SAMPLES / self.num_users)
        checks.number(self.global_ctr, "global_ctr", 0.0, 1.0, low_open=True, high_open=True)
        for name in ("ctr_spread", "popularity_spread"):
            checks.number(getattr(self, name), name, 0.0, MAX_LOGIT_SCALE)
        checks.number(self.taste_weight, "taste_weight", -MAX_LOGIT_SCALE, MAX_LOGIT_SCALE)
        checks.number(self.test_fraction, "test_fraction", 0.0, 1.0, low_open=True, high_open=True)
        checks.number(self.few_sample_share, "few_sample_share", 0.0, 1.0)
        r = self.few_sample_range
        if not (isinstance(r, (tuple, list)) and len(r) == 2 and all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in r) and 2 <= r[0] <= r[1]):
            raise ValueError(f"few_sample_range must be two integers (lo, hi) with 2 <= lo <= hi, got {r!r}")
        checks.integer(self.taste_clusters, "taste_clusters", 0)
        checks.number(self.taste_noise, "taste_noise", 0.0, 1.0)
        checks.number(self.exposure_taste, "exposure_taste", 0.0, 50.0, high_open=True)
        checks.seed(self.seed, "seed")


def synthetic_spec(config: SyntheticConfig) -> FeatureSpec:
    """The MovieLens fields (:func:`~lcft_tf.data.dataset.click_history_spec`)
    sized by ``config``, plus ``genome``: float32 ``[dense_dim]`` per item."""
    fields = click_history_spec(config.num_users, config.num_items, config.num_categories, config.history_length)
    return FeatureSpec(fields + (DenseFeature("genome", config.dense_dim),))


def _solve_offset(scores: np.ndarray, target: float) -> float:
    """``mu`` such that ``mean(sigmoid(mu + scores)) == target`` (bisection)."""
    lo, hi = -20.0, 20.0
    sample = scores if len(scores) <= 200_000 else scores[:: len(scores) // 200_000 + 1]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.mean(1.0 / (1.0 + np.exp(-(mid + sample)))) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def generate(config: SyntheticConfig | None = None) -> CTRDataset:
    """Generate the dataset described in the module docstring (default config
    when None): ids int32, labels int8 0/1, timestamps int64 seconds, the
    genome a per-item lookup. Deterministic in ``config.seed``."""
    c = config or SyntheticConfig()
    start = time.perf_counter()
    rng = np.random.default_rng(c.seed)
    # Draw order is part of the output: items, users, impressions, clicks, times.
    categories, item_vectors, popularity, genome = _draw_items(c, rng)
    tastes, propensity, sizes, extra_info = _draw_users(c, rng)
    offsets = np.r_[0, np.cumsum(sizes)]
    users = user_index(offsets)
    items = _draw_impressions(c, rng, offsets, popularity, item_vectors, tastes)
    affinity = np.einsum("nd,nd->n", tastes[users], item_vectors[items]) * np.sqrt(c.latent_dim)
    scores = propensity[users] + c.taste_weight * affinity + popularity[items]
    mu = _solve_offset(scores, c.global_ctr)
    labels = (rng.random(len(items)) < 1 / (1 + np.exp(-(mu + scores)))).astype(np.int8)
    timestamps = _draw_timestamps(c, rng, offsets, users)
    dataset = CTRDataset(
        name="synthetic",
        spec=synthetic_spec(c),
        features=click_history_features(offsets, timestamps, items, categories[items], labels, c.history_length),
        labels=labels,
        timestamps=timestamps.astype(np.int64),
        offsets=offsets,
        split=per_user_split(offsets, c.test_fraction),
        info={"config": dataclasses.asdict(c), "click_offset": mu, **extra_info},
        lookups={"genome": ("item_id", genome)},
    )
    log.info("generated %d samples of %d users in %.1f s", len(items), c.num_users, time.perf_counter() - start)
    return dataset


def _draw_items(c: SyntheticConfig, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Step 1: per item (row 0 is padding, never sampled) its category, latent
    vector, popularity and float32 genome."""
    d = c.latent_dim
    shares = 1.0 / np.arange(1, c.num_categories + 1)
    categories = np.r_[0, rng.choice(c.num_categories, c.num_items, p=shares / shares.sum()) + 1].astype(np.int32)
    category_vectors = rng.normal(0, 1 / np.sqrt(d), (c.num_categories + 1, d))
    item_vectors = (rng.normal(0, 1 / np.sqrt(d), (c.num_items + 1, d)) + category_vectors[categories]) / np.sqrt(2)
    popularity = rng.normal(0, c.popularity_spread, c.num_items + 1)
    mixing = rng.normal(0, 1, (d, c.dense_dim))
    genome = 1 / (1 + np.exp(-(item_vectors @ mixing + rng.normal(0, 0.3, (c.num_items + 1, c.dense_dim)))))
    genome = genome.astype(np.float32)
    genome[0] = 0
    return categories, item_vectors, popularity, genome


def _draw_users(c: SyntheticConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Step 2: per user taste, click propensity and number of impressions,
    and the info entries of taste clusters (if any)."""
    tastes = rng.normal(0, 1 / np.sqrt(c.latent_dim), (c.num_users, c.latent_dim))
    extra_info = {}
    if c.taste_clusters:
        tastes, member = _clustered_tastes(c)
        extra_info = {"taste_cluster": member + 1}  # 1-based like user ids; for diagnostics only
    propensity = rng.normal(0, c.ctr_spread, c.num_users)
    sigma = 0.6
    sizes = rng.lognormal(np.log(c.mean_samples_per_user) - sigma**2 / 2, sigma, c.num_users)
    sizes = np.maximum(np.round(sizes), c.min_samples_per_user).astype(np.int64)
    if c.few_sample_share > 0:
        few_rng = np.random.default_rng([c.seed, 1])  # own stream: share 0 draws nothing
        few = few_rng.random(c.num_users) < c.few_sample_share
        sizes[few] = few_rng.integers(c.few_sample_range[0], c.few_sample_range[1] + 1, int(few.sum()))
    return tastes, propensity, sizes, extra_info


def _clustered_tastes(c: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """Tastes around ``taste_clusters`` prototypes, and each user's cluster (0-based)."""
    # Own stream: 0 clusters (the default) draws nothing. Same taste
    # variance as an independent draw, so taste_weight keeps its scale.
    d = c.latent_dim
    cluster_rng = np.random.default_rng([c.seed, 2])
    prototypes = cluster_rng.normal(0, 1 / np.sqrt(d), (c.taste_clusters, d))
    member = cluster_rng.integers(0, c.taste_clusters, c.num_users)
    own = cluster_rng.normal(0, 1 / np.sqrt(d), (c.num_users, d))
    return np.sqrt(1 - c.taste_noise**2) * prototypes[member] + c.taste_noise * own, member


def _draw_impressions(
    c: SyntheticConfig,
    rng: np.random.Generator,
    offsets: np.ndarray,
    popularity: np.ndarray,
    item_vectors: np.ndarray,
    tastes: np.ndarray,
) -> np.ndarray:
    """Step 3: the item (int32, 1-based) of every impression."""
    exposure = np.exp(popularity[1:])
    items = (rng.choice(c.num_items, int(offsets[-1]), p=exposure / exposure.sum()) + 1).astype(np.int32)
    if not c.exposure_taste:
        return items
    # Users also see what they like; own stream, and the draw above is
    # still made, so exposure_taste 0 (the default) changes nothing.
    exposure_rng = np.random.default_rng([c.seed, 3])
    for u in range(c.num_users):
        logit = popularity[1:] + c.exposure_taste * np.sqrt(c.latent_dim) * (item_vectors[1:] @ tastes[u])
        cdf = np.cumsum(np.exp(logit - logit.max()))
        draws = exposure_rng.random(offsets[u + 1] - offsets[u]) * cdf[-1]
        items[offsets[u] : offsets[u + 1]] = np.minimum(np.searchsorted(cdf, draws, "right"), c.num_items - 1) + 1
    return items


def _draw_timestamps(
    c: SyntheticConfig, rng: np.random.Generator, offsets: np.ndarray, users: np.ndarray
) -> np.ndarray:
    """Increasing seconds within each user: gaps under a day from a random start."""
    gaps = rng.integers(1, 3600 * 24, len(users))
    first = np.r_[0, np.cumsum(gaps)]
    return (first[1:] - first[offsets[:-1]][users]) + rng.integers(0, 10**7, c.num_users)[users]
