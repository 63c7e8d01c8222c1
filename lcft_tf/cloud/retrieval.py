"""CoDA coarse matching in the cloud: for each user, the K samples of *other*
users most similar to the user's local data (faiss; docs/coda.md).

* :func:`sample_embeddings` — a fixed-size vector per sample computed in
  numpy from the cloud model's frozen embedding tables: per field (candidate
  item, category, mean-pooled positive / negative history, ...) the
  table row, each field L2-normalised, concatenated, L2-normalised again, so
  an inner product is a cosine similarity with equal weight per field.
* :func:`retrieve` — the pool is every *train* sample of the dataset (test
  samples never enter), optionally a seeded subsample; each user queries
  once with the normalised mean of its local (device-side, possibly capped)
  train embeddings, over-fetches by the
  number of its own pool samples and drops them, so its K results are other
  users' train samples only. Results are re-sorted by (score desc, sample
  index asc), so ties never depend on faiss internals.
* the result is a :class:`lcft_tf.artifacts.coda_files.Retrieval`.
* :func:`retrieval_precision` — how similar the retrieved samples' users
  are, recorded per run: own taste cluster against chance (synthetic), and
  oracle-free proxies (shared clicked items, click rates) on any data.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from lcft_tf import checks
from lcft_tf.artifacts.coda_files import USER_FEATURE, Retrieval
from lcft_tf.data.dataset import CTRDataset, user_index
from lcft_tf.features import SequenceFeature, SparseFeature

if TYPE_CHECKING:  # fleet workers read retrievals without importing TensorFlow
    from lcft_tf.models.base import CTRModel

log = logging.getLogger(__name__)

INDEXES = ("flat", "ivf", "hnsw")


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    """CoDA's coarse matching in the cloud: how many samples each user gets
    and the faiss index that finds them (module docstring; docs/coda.md).

    Raises ``ValueError`` on construction for ``k`` not an integer >= 0, an
    unknown index, ``pool_size`` not unset or an integer >= 1, ``fields``
    not unset or distinct names, an IVF / HNSW parameter not an integer
    >= 1, ``threads`` not an integer >= 0, or a negative seed. (An
    experiment with a CoDA method also refuses ``k == 0``: nothing would be
    retrieved and every CoDA method would equal Local.)
    """

    k: int = dataclasses.field(default=100, metadata={"help": "CoDA: samples the cloud retrieves per user, an integer >= 0 (>= 1 when a CoDA method runs)"})
    index: str = dataclasses.field(
        default="flat", metadata={"help": "CoDA: faiss index, flat (exact inner product), ivf or hnsw (approximate, "
                                          "for large pools)"})
    pool_size: int | None = dataclasses.field(
        default=None, metadata={"help": "CoDA: a seeded subsample of this many train samples to retrieve from; "
                                        "unset: all"})
    fields: tuple[str, ...] | None = dataclasses.field(
        default=None, metadata={"help": "CoDA: features whose embeddings make a sample's vector (distinct, not "
                                        "empty); unset: every sparse and sequence feature but user_id"})
    seed: int = dataclasses.field(
        default=0, metadata={"help": "seed of the pool subsample and of IVF's k-means (set per run from --seeds)"})
    threads: int = dataclasses.field(default=0, metadata={"help": "faiss OpenMP threads; 0: faiss's default"})
    ivf_lists: int = dataclasses.field(
        default=1024, metadata={"help": "ivf: inverted lists (at most one per 39 pool samples)"})
    ivf_probe: int = dataclasses.field(default=16, metadata={"help": "ivf: lists searched per query (nprobe)"})
    hnsw_m: int = dataclasses.field(default=32, metadata={"help": "hnsw: neighbours per graph node (M)"})
    hnsw_ef_search: int = dataclasses.field(
        default=128, metadata={"help": "hnsw: search breadth (efSearch; raised to the fetch size when larger)"})

    def __post_init__(self) -> None:
        checks.integer(self.k, "k", 0)
        checks.choice(self.index, "index", INDEXES)
        if self.pool_size is not None:
            checks.integer(self.pool_size, "pool_size", 1)
        if self.fields is not None and (isinstance(self.fields, str) or not isinstance(self.fields, (tuple, list))
                                        or not self.fields or not all(isinstance(f, str) and f for f in self.fields)
                                        or len(set(self.fields)) != len(self.fields)):
            # An empty tuple is not "unset": it would fail at embedding time, after the cloud stage.
            raise ValueError(f"fields must be unset or distinct feature names, got {self.fields!r}")
        checks.seed(self.seed)
        checks.integer(self.threads, "threads", 0)
        for name in ("ivf_lists", "ivf_probe", "hnsw_m", "hnsw_ef_search"):
            checks.integer(getattr(self, name), name, 1)


# -- embeddings ------------------------------------------------------------------
def embedding_fields(model: CTRModel, fields: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The features that make up the sample embedding (see the module doc)."""
    spec = model.spec
    if not model.tables:
        raise ValueError(f"model {model.name!r} has no embedding tables to embed samples with")
    if fields is None:
        fields = tuple(f.name for f in spec.sparse + spec.sequences if f.name != USER_FEATURE)
    bad = [n for n in fields if n not in spec.names or not isinstance(spec[n], (SparseFeature, SequenceFeature))]
    if bad or not fields:
        raise ValueError(f"embedding fields must be sparse or sequence features of the spec, got {list(fields)}")
    return tuple(fields)


def embedding_tables(model: CTRModel, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The frozen tables the fields read, as numpy (what a device also holds)."""
    return {model.spec[n].table: np.asarray(model.tables[model.spec[n].table].embeddings.numpy()) for n in fields}


def sample_embeddings(
    model: CTRModel,
    features: dict[str, np.ndarray],
    fields: tuple[str, ...] | None = None,
    tables: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """[N, len(fields) * d] float32, unit-norm rows (zero fields stay zero).

    Out-of-range ids read the out-of-vocabulary row, as inside the model.
    """
    fields = embedding_fields(model, fields)
    tables = tables if tables is not None else embedding_tables(model, fields)
    parts = []
    for name in fields:
        f = model.spec[name]
        table = tables[f.table]
        ids = np.asarray(features[name])
        ids = np.where((ids < 0) | (ids >= f.vocab_size), f.vocab_size, ids)
        if isinstance(f, SequenceFeature):
            mask = (np.asarray(features[name]) != f.padding_id).astype(np.float32)
            summed = np.einsum("nl,nld->nd", mask, table[ids])
            vec = summed / np.maximum(mask.sum(1, keepdims=True), 1.0)
        else:
            vec = table[ids]
        parts.append(_unit_rows(vec.astype(np.float32)))
    return _unit_rows(np.concatenate(parts, axis=1))


def dataset_embeddings(
    model: CTRModel, dataset: CTRDataset, fields: tuple[str, ...] | None = None, chunk: int = 100_000
) -> np.ndarray:
    """:func:`sample_embeddings` of every sample of ``dataset`` (in chunks)."""
    fields = embedding_fields(model, fields)
    tables = embedding_tables(model, fields)
    n = dataset.num_samples
    out = np.empty((n, len(fields) * model.embedding_dim), np.float32)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        feats = {k: np.asarray(v[start:stop]) for k, v in dataset.features.items() if k in fields}
        out[start:stop] = sample_embeddings(model, feats, fields, tables)
    return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


class _PeakRSS:
    """Samples this process's resident memory (psutil) in a thread; ``peak``
    is the highest value seen while the block ran; ``cpu_seconds`` the
    process CPU time (user + system) it used."""

    def __init__(self, interval: float = 0.05):
        import psutil

        self._process, self._interval = psutil.Process(), interval
        self._stop = threading.Event()
        self.start = self.peak = self._process.memory_info().rss
        self.cpu_start = sum(self._process.cpu_times()[:2])

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> "_PeakRSS":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)
        self.cpu_seconds = sum(self._process.cpu_times()[:2]) - self.cpu_start


def retrieve(
    embeddings: np.ndarray,
    offsets: np.ndarray,
    split: np.ndarray,
    config: RetrievalConfig | None = None,
    local_start: np.ndarray | None = None,
) -> Retrieval:
    """Top-K other users' train samples for every user (module doc).

    ``embeddings`` [N, D] float32 are unit rows of every sample, ``offsets``
    [U + 1] / ``split`` [U] the dataset's user blocks and the index of each
    user's first test sample (see :class:`CTRDataset`). ``local_start`` [U]
    (default ``offsets[:-1]``): each user's first device-side train sample
    (:attr:`CTRDataset.local_start`); the query is the mean of
    ``[local_start, split)``, while every train sample of the user stays
    out of its results. Users without local samples get no results. Raises
    ``ValueError`` for embeddings of the wrong shape or with NaN / inf, or a
    split or local start outside the user blocks.
    """
    import faiss

    config = config or RetrievalConfig()
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    offsets, split = np.asarray(offsets, np.int64), np.asarray(split, np.int64)
    _check_inputs(embeddings, offsets, split)
    local_start = offsets[:-1] if local_start is None else np.asarray(local_start, np.int64)
    if local_start.shape != split.shape or np.any(local_start < offsets[:-1]) or np.any(local_start > split):
        raise ValueError("local_start must hold one index per user between its block start and its split")
    num_users, k = len(offsets) - 1, config.k
    ids = np.full((num_users, k), -1, np.int64)
    scores = np.zeros((num_users, k), np.float32)
    if config.threads:
        faiss.omp_set_num_threads(config.threads)
    with _PeakRSS() as memory:
        began = time.perf_counter()
        pool, own_lo, own_hi = _pool(offsets, split, config)
        queried = np.flatnonzero(split - local_start > 0)
        if k and len(queried) and len(pool):
            query = _user_queries(embeddings, local_start, split, queried)
            index = _build_index(faiss, pool, embeddings, config)
            _search(index, query, queried, pool, own_lo, own_hi, config, ids, scores)
        seconds = time.perf_counter() - began
    stats = {
        "seconds": seconds,
        "cpu_seconds": memory.cpu_seconds,  # user + system, all threads: a fairer cost on a shared machine
        "peak_rss_bytes": int(memory.peak),
        "peak_rss_added_bytes": int(memory.peak - memory.start),
        "pool_size": int(len(pool)),
        "users": int(num_users),
        "users_queried": int(len(queried)),
        "short_users": int(np.sum((ids[queried] < 0).any(1))) if k else 0,
        "config": dataclasses.asdict(config),
    }
    log.info("retrieval: %d users, pool %d, K=%d in %.1f s (peak RSS +%.0f MiB)", num_users, len(pool), k,
             seconds, stats["peak_rss_added_bytes"] / 2**20)
    return Retrieval(ids=ids, scores=scores, stats=stats)


def retrieval_precision(dataset: CTRDataset, ids: np.ndarray, max_users: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Precision diagnostics of a retrieval (docs/coda.md "Precision").

    ``ids``: int ``[U, K]`` retrieved global sample indices, -1 padded.
    Over at most ``max_users`` queried users (a seeded sample):

    * ``history_overlap``: share of retrieved samples whose user clicked
      (in its train samples) an item the querying user clicked in its local
      samples; ``history_overlap_chance``: the same share over the whole
      pool (every other user's train samples); needs a candidate-item
      feature (a sparse feature that a sequence feature queries with),
      else both None;
    * ``click_rate_correlation``: Pearson correlation over users of the
      retrieved set's click rate and the user's local click rate (None when
      either is constant);
    * ``own_cluster`` / ``own_cluster_chance``: on synthetic data with
      ``info["taste_cluster"]``, the share of retrieved samples from users
      of the querying user's cluster and the pool's share (else None).

    Shares are means over sampled users with a non-empty retrieval. Numpy
    only. Raises ``ValueError`` for ``ids`` not ``[num_users, K]``.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2 or len(ids) != dataset.num_users:
        raise ValueError(f"ids must be [num_users={dataset.num_users}, K], got {ids.shape}")
    offsets, split, labels = np.asarray(dataset.offsets), np.asarray(dataset.split), np.asarray(dataset.labels)
    user_of = user_index(offsets)
    train = dataset.train_mask
    local_start = dataset.local_start
    users = np.flatnonzero((ids >= 0).any(1) & (split > local_start))
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    pool_count = np.bincount(user_of[train], minlength=dataset.num_users).astype(np.float64)
    out: dict[str, Any] = {"users": int(len(users))}
    item = next((f.query for f in dataset.spec.sequences if f.query in dataset.features), None)
    overlap = chance = None
    if item is not None and len(users):
        items = np.asarray(dataset.features[item])
        clicked = train & (labels == 1)
        order = np.lexsort((user_of[clicked], items[clicked]))  # (item, user) pairs: an inverted index
        by_item, by_user = items[clicked][order], user_of[clicked][order]
        share, base = [], []
        for u in users:
            mine = np.unique(items[local_start[u] : split[u]][labels[local_start[u] : split[u]] == 1])
            lo, hi = np.searchsorted(by_item, mine, "left"), np.searchsorted(by_item, mine, "right")
            hit = np.zeros(dataset.num_users, bool)
            hit[np.concatenate([by_user[a:b] for a, b in zip(lo, hi)]) if len(mine) else []] = True
            hit[u] = False
            row = ids[u][ids[u] >= 0]
            share.append(hit[user_of[row]].mean())
            base.append((pool_count * hit).sum() / max(pool_count.sum() - pool_count[u], 1.0))
        overlap, chance = float(np.mean(share)), float(np.mean(base))
    out.update(history_overlap=overlap, history_overlap_chance=chance)
    rows = [ids[u][ids[u] >= 0] for u in users]
    retrieved_rate = np.array([labels[r].mean() for r in rows])
    local_rate = np.array([labels[local_start[u] : split[u]].mean() for u in users])
    both = len(users) > 1 and retrieved_rate.std() > 0 and local_rate.std() > 0
    out["click_rate_correlation"] = float(np.corrcoef(retrieved_rate, local_rate)[0, 1]) if both else None
    cluster = dataset.info.get("taste_cluster")
    if cluster is not None and len(users):
        cluster = np.asarray(cluster)
        sample_cluster = cluster[user_of]
        mass = np.bincount(cluster, weights=pool_count, minlength=int(cluster.max()) + 1)
        out["own_cluster"] = float(np.mean([np.mean(sample_cluster[r] == cluster[u]) for u, r in zip(users, rows)]))
        out["own_cluster_chance"] = float(np.mean([(mass[cluster[u]] - pool_count[u]) / (pool_count.sum() - pool_count[u])
                                                   for u in users]))
    else:
        out["own_cluster"] = out["own_cluster_chance"] = None
    return out


def _check_inputs(embeddings: np.ndarray, offsets: np.ndarray, split: np.ndarray) -> None:
    num_users = len(offsets) - 1
    if embeddings.ndim != 2 or len(embeddings) != offsets[-1]:
        raise ValueError(f"embeddings must be [num_samples={offsets[-1]}, D], got {embeddings.shape}")
    if not np.all(np.isfinite(embeddings)):
        raise ValueError("embeddings contain NaN or inf")
    if len(split) != num_users or np.any(split < offsets[:-1]) or np.any(split > offsets[1:]):
        raise ValueError("split must hold one index per user inside the user's block")


def _pool(offsets: np.ndarray, split: np.ndarray, config: RetrievalConfig) -> tuple[np.ndarray, ...]:
    """The pool (every train sample, or a seeded subsample), and per user the
    range ``[own_lo, own_hi)`` of pool positions holding its own samples."""
    num_users = len(offsets) - 1
    user_of = user_index(offsets)
    pool = np.flatnonzero(np.arange(offsets[-1]) < split[user_of])  # train samples only
    if config.pool_size is not None and config.pool_size < len(pool):
        rng = np.random.default_rng(config.seed)
        pool = np.sort(rng.choice(pool, config.pool_size, replace=False))
    # Pool rows are in (user, time) order, so a user's own rows are one range.
    pool_user = user_of[pool]
    users = np.arange(num_users)
    return pool, np.searchsorted(pool_user, users, "left"), np.searchsorted(pool_user, users, "right")


def _user_queries(embeddings: np.ndarray, start: np.ndarray, split: np.ndarray, queried: np.ndarray) -> np.ndarray:
    """The unit mean of each queried user's local embeddings: even segments of
    reduceat over [start, split, start, split, ...] (a last split == N is implied)."""
    bounds = np.stack([start[queried], split[queried]], 1).ravel()
    bounds = bounds[:-1] if bounds[-1] == len(embeddings) else bounds
    return _unit_rows(np.add.reduceat(embeddings, bounds, axis=0)[::2])


def _search(index, query, queried, pool, own_lo, own_hi, config: RetrievalConfig, ids, scores) -> None:
    """Fill ``ids`` / ``scores`` rows of the queried users: batched searches
    by fetch size, own samples dropped, ties ordered by sample index."""
    k = config.k
    fetch = k + (own_hi - own_lo)[queried]  # own rows may all rank first
    buckets = _bucket(fetch)
    for size in np.unique(buckets):
        rows = np.flatnonzero(buckets == size)
        if config.index == "hnsw":
            index.hnsw.efSearch = max(config.hnsw_ef_search, int(size))
        found_scores, found = index.search(query[rows], int(min(size, len(pool))))
        for r, s_row, f_row in zip(queried[rows], found_scores, found):
            keep = (f_row >= 0) & ((f_row < own_lo[r]) | (f_row >= own_hi[r]))
            f_row, s_row = f_row[keep], s_row[keep]
            order = np.lexsort((pool[f_row], -s_row))[:k]
            ids[r, : len(order)] = pool[f_row[order]]
            scores[r, : len(order)] = s_row[order]


def _bucket(fetch: np.ndarray) -> np.ndarray:
    """Round fetch sizes up to a power of two: few distinct batched searches."""
    return 1 << np.ceil(np.log2(np.maximum(fetch, 1))).astype(np.int64)


def _build_index(faiss, pool: np.ndarray, embeddings: np.ndarray, config: RetrievalConfig):
    """A faiss inner-product index over the pool rows (row i = pool[i])."""
    d = embeddings.shape[1]
    vectors = np.ascontiguousarray(embeddings[pool])
    if config.index == "flat":
        index = faiss.IndexFlatIP(d)
    elif config.index == "hnsw":
        index = faiss.IndexHNSWFlat(d, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = config.hnsw_ef_search
    else:
        lists = max(1, min(config.ivf_lists, len(pool) // 39))  # faiss wants >= 39 points per list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = config.seed
        index.train(vectors)
        index.nprobe = min(config.ivf_probe, lists)
    index.add(vectors)
    return index
