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
import time

import numpy as np

from lcft_tf.data.dataset import CTRDataset, per_user_split, previous_items, user_index
from lcft_tf.features import DenseFeature, FeatureSpec, SequenceFeature, SparseFeature

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    num_users: int = 500
    num_items: int = 300
    num_categories: int = 20
    mean_samples_per_user: float = 200.0
    min_samples_per_user: int = 20
    global_ctr: float = 0.5
    ctr_spread: float = 1.0
    taste_weight: float = 1.5
    popularity_spread: float = 0.5
    latent_dim: int = 8
    dense_dim: int = 16
    history_length: int = 10
    test_fraction: float = 0.2
    few_sample_share: float = 0.0
    few_sample_range: tuple[int, int] = (5, 20)
    taste_clusters: int = 0
    taste_noise: float = 0.3
    exposure_taste: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_users", "num_items", "num_categories", "latent_dim", "dense_dim", "history_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.global_ctr < 1.0:
            raise ValueError(f"global_ctr must be in (0, 1), got {self.global_ctr}")
        if self.min_samples_per_user < 2:
            raise ValueError("min_samples_per_user must be >= 2 (one train and one test sample)")
        if self.mean_samples_per_user < self.min_samples_per_user:
            raise ValueError("mean_samples_per_user must be >= min_samples_per_user")
        if self.ctr_spread < 0 or self.popularity_spread < 0:
            raise ValueError("spreads must be >= 0")
        if not 0.0 <= self.few_sample_share <= 1.0:
            raise ValueError(f"few_sample_share must be in [0, 1], got {self.few_sample_share}")
        lo, hi = self.few_sample_range
        if self.taste_clusters < 0:
            raise ValueError(f"taste_clusters must be >= 0, got {self.taste_clusters}")
        if not 0.0 <= self.exposure_taste < 50:
            raise ValueError(f"exposure_taste must be in [0, 50), got {self.exposure_taste}")
        if not 0.0 <= self.taste_noise <= 1.0:
            raise ValueError(f"taste_noise must be in [0, 1], got {self.taste_noise}")
        if not 2 <= lo <= hi:
            raise ValueError(f"few_sample_range must be (lo, hi) with 2 <= lo <= hi, got {self.few_sample_range}")


def synthetic_spec(config: SyntheticConfig) -> FeatureSpec:
    items = config.num_items + 1
    return FeatureSpec(
        (
            SparseFeature("user_id", config.num_users + 1),
            SparseFeature("item_id", items),
            SparseFeature("category", config.num_categories + 1),
            SequenceFeature("pos_hist", items, config.history_length, embedding="item_id", query="item_id"),
            SequenceFeature("neg_hist", items, config.history_length, embedding="item_id", query="item_id"),
            DenseFeature("genome", config.dense_dim),
        )
    )


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
    """Generate the dataset described in the module docstring."""
    c = config or SyntheticConfig()
    start = time.perf_counter()
    rng = np.random.default_rng(c.seed)
    d = c.latent_dim

    # Items (row 0 is padding and never sampled).
    shares = 1.0 / np.arange(1, c.num_categories + 1)
    categories = np.r_[0, rng.choice(c.num_categories, c.num_items, p=shares / shares.sum()) + 1].astype(np.int32)
    category_vectors = rng.normal(0, 1 / np.sqrt(d), (c.num_categories + 1, d))
    item_vectors = (rng.normal(0, 1 / np.sqrt(d), (c.num_items + 1, d)) + category_vectors[categories]) / np.sqrt(2)
    popularity = rng.normal(0, c.popularity_spread, c.num_items + 1)
    mixing = rng.normal(0, 1, (d, c.dense_dim))
    genome = 1 / (1 + np.exp(-(item_vectors @ mixing + rng.normal(0, 0.3, (c.num_items + 1, c.dense_dim)))))
    genome = genome.astype(np.float32)
    genome[0] = 0

    # Users.
    tastes = rng.normal(0, 1 / np.sqrt(d), (c.num_users, d))
    if c.taste_clusters:
        # Own stream: 0 clusters (the default) draws nothing. Same taste
        # variance as an independent draw, so taste_weight keeps its scale.
        cluster_rng = np.random.default_rng([c.seed, 2])
        prototypes = cluster_rng.normal(0, 1 / np.sqrt(d), (c.taste_clusters, d))
        member = cluster_rng.integers(0, c.taste_clusters, c.num_users)
        own = cluster_rng.normal(0, 1 / np.sqrt(d), (c.num_users, d))
        tastes = np.sqrt(1 - c.taste_noise**2) * prototypes[member] + c.taste_noise * own
        extra_info = {"taste_cluster": member + 1}  # 1-based like user ids; for diagnostics only
    else:
        extra_info = {}
    propensity = rng.normal(0, c.ctr_spread, c.num_users)
    sigma = 0.6
    sizes = rng.lognormal(np.log(c.mean_samples_per_user) - sigma**2 / 2, sigma, c.num_users)
    sizes = np.maximum(np.round(sizes), c.min_samples_per_user).astype(np.int64)
    if c.few_sample_share > 0:
        few_rng = np.random.default_rng([c.seed, 1])  # own stream: share 0 draws nothing
        few = few_rng.random(c.num_users) < c.few_sample_share
        sizes[few] = few_rng.integers(c.few_sample_range[0], c.few_sample_range[1] + 1, int(few.sum()))
    offsets = np.r_[0, np.cumsum(sizes)]
    users = user_index(offsets)
    n = int(offsets[-1])

    # Impressions, clicks, timestamps.
    exposure = np.exp(popularity[1:])
    items = (rng.choice(c.num_items, n, p=exposure / exposure.sum()) + 1).astype(np.int32)
    if c.exposure_taste:
        # Users also see what they like; own stream, and the draw above is
        # still made, so exposure_taste 0 (the default) changes nothing.
        exposure_rng = np.random.default_rng([c.seed, 3])
        for u in range(c.num_users):
            logit = popularity[1:] + c.exposure_taste * np.sqrt(d) * (item_vectors[1:] @ tastes[u])
            cdf = np.cumsum(np.exp(logit - logit.max()))
            draws = exposure_rng.random(sizes[u]) * cdf[-1]
            items[offsets[u] : offsets[u + 1]] = np.minimum(np.searchsorted(cdf, draws, "right"), c.num_items - 1) + 1
    affinity = np.einsum("nd,nd->n", tastes[users], item_vectors[items]) * np.sqrt(d)
    scores = propensity[users] + c.taste_weight * affinity + popularity[items]
    mu = _solve_offset(scores, c.global_ctr)
    labels = (rng.random(n) < 1 / (1 + np.exp(-(mu + scores)))).astype(np.int8)
    gaps = rng.integers(1, 3600 * 24, n)
    first = np.r_[0, np.cumsum(gaps)]
    timestamps = (first[1:] - first[offsets[:-1]][users]) + rng.integers(0, 10**7, c.num_users)[users]

    hist = c.history_length
    features = {
        "user_id": (users + 1).astype(np.int32),
        "item_id": items,
        "category": categories[items],
        "pos_hist": previous_items(offsets, timestamps, items, labels == 1, hist),
        "neg_hist": previous_items(offsets, timestamps, items, labels == 0, hist),
    }
    dataset = CTRDataset(
        name="synthetic",
        spec=synthetic_spec(c),
        features=features,
        labels=labels,
        timestamps=timestamps.astype(np.int64),
        offsets=offsets,
        split=per_user_split(offsets, c.test_fraction),
        info={"config": dataclasses.asdict(c), "click_offset": mu, **extra_info},
        lookups={"genome": ("item_id", genome)},
    )
    log.info("generated %d samples of %d users in %.1f s", n, c.num_users, time.perf_counter() - start)
    return dataset
