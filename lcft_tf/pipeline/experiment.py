"""The main job: cloud training -> .tflite -> device fleet -> metrics, report, figures.

``run_experiment`` writes ``<output_dir>/<name>/`` (docs/pipeline.md):

* ``run.json``                 the plan: every stage's config key and hash
* ``dataset/``                 the dataset, memory-mappable by the workers
* ``<model>_seed<k>/cloud/``   ``<model>.keras``
* ``<model>_seed<k>/hard/``    the hard-table grid search (its own export + ``hard.json``)
* ``<model>_seed<k>/export/``  ``<model>.tflite`` + ``.json`` (with the hard table)
* ``<model>_seed<k>/coda/``    CoDA's embeddings, retrieval and sample classifier
* ``<model>_seed<k>/fleet/``   per-chunk results + manifest (resumable)
* ``results.json``             every number, the config and the stage hashes
* ``report.md`` and figures

The stages are declared once, in :data:`lcft_tf.pipeline.stage_table.STAGES`: each with the stages it
reads, its key (its own config; the hashes of those stages are added) and
its build. One loop (:func:`lcft_tf.pipeline.stage_table.run_stage`) derives every key, input digest,
reuse and commit (:mod:`lcft_tf.pipeline.stages`). A folder that already
holds a run is only reused with ``resume=True`` (finished stages whose
hashes match; a changed config is refused naming the field, before anything
is written) or replaced with ``overwrite=True``. The folder is locked for
the whole run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any


from lcft_tf import __version__, methods
from lcft_tf._io import atomic_write, to_json
from lcft_tf.cloud.train import CloudConfig
from lcft_tf.data.dataset import VALIDATION_FRACTION, CTRDataset
from lcft_tf.evaluation.report import Grouping, auc_table, summarize, write_report
from lcft_tf.fleet.executors import make_executor
from lcft_tf.keys import ConfigChangedError, canonical, changed_fields
from lcft_tf.pipeline.stages import RunLock, Stage

from lcft_tf.pipeline.config import ExperimentConfig, check_inputs
from lcft_tf.pipeline.stage_table import STAGES, RunContext, run_stage, plan_stages, run_id

log = logging.getLogger(__name__)

RUN_FORMAT = "lcft-run-v2"


class RunExistsError(ValueError):
    """The run folder already holds a run and neither resume nor overwrite was asked."""


class RolledBackError(ValueError):
    """Most device steps of a method were rolled back, so its numbers mean
    little; raised after results.json and report.md are written (they say so)."""


# A method whose device steps were rolled back more often than this (share of
# its steps, any model x seed) is flagged: its "fine-tuned" numbers are mostly
# the cloud model's (docs/loss_and_correction.md).
ROLLED_BACK_LIMIT = 0.5


def _check_run_folder(config: ExperimentConfig, out: Path, stages: dict[str, Stage]) -> None:
    """Decide, before anything is written, whether this run may use ``out``."""
    plan_path = out / "run.json"
    present = [p for p in out.iterdir() if p.name != ".lock"] if out.is_dir() else []
    if not present:
        return
    if config.overwrite:
        log.warning("overwriting %s", out)
        for p in present:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        return
    if not config.resume:
        raise RunExistsError(
            f"{out} already holds a run; pass --resume to continue it, --overwrite to replace it, or another --name"
        )
    if not plan_path.is_file():
        raise RunExistsError(f"cannot resume {out}: it has no run.json (not a run of this version); use --overwrite")
    old = _read_plan(plan_path)
    for name, stage in stages.items():  # upstream first: the first change is the cause
        if name in old and old[name]["hash"] != stage.hash:
            changes = changed_fields(old[name]["key"], stage.key) or ["(unknown)"]
            raise ConfigChangedError(
                f"cannot resume {out}: stage {name} changed ({'; '.join(changes[:4])}); "
                "use another --name, or --overwrite to start the run again"
            )
    added, dropped = sorted(set(stages) - set(old)), sorted(set(old) - set(stages))
    if added or dropped:
        raise ConfigChangedError(
            f"cannot resume {out}: the run's stages differ (new {added[:3]}, gone {dropped[:3]}); "
            "use another --name, or --overwrite to start the run again"
        )


def _read_plan(path: Path) -> dict[str, dict[str, Any]]:
    """The stages a ``run.json`` lists; a file that is not valid JSON or not a
    plan of this format is refused in one line naming it."""
    try:
        plan = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise RunExistsError(f"cannot resume: {path} is damaged ({err}); use --overwrite") from None
    if not isinstance(plan, dict) or plan.get("format") != RUN_FORMAT:
        found = plan.get("format") if isinstance(plan, dict) else type(plan).__name__
        raise RunExistsError(f"cannot resume: {path} has run format {found!r}, this package writes {RUN_FORMAT!r}; "
                             "use --overwrite")
    stages = plan.get("stages")
    if not isinstance(stages, dict) or not all(isinstance(s, dict) and isinstance(s.get("hash"), str)
                                               and isinstance(s.get("key"), dict) for s in stages.values()):
        raise RunExistsError(f"cannot resume: {path} is damaged (stages without hash or key); use --overwrite")
    return stages


def _add_baselines(dataset: CTRDataset, fleets: dict[str, dict[int, Any]]) -> dict[str, Any]:
    """Score the reference baselines (:mod:`lcft_tf.evaluation.baselines`) for
    every fleet's users, into its predictions; returns how they were chosen."""
    from lcft_tf.evaluation.baselines import SMOOTHING_GRID, baseline_scores, choose_smoothing

    smoothing, validation = choose_smoothing(dataset)
    for seeds in fleets.values():
        for fleet in seeds.values():
            fleet.predictions.update(baseline_scores(dataset, fleet.users, smoothing))
    return {"popularity": {"smoothing": smoothing, "grid": list(SMOOTHING_GRID), "validation_auc": validation,
                           "validation_fraction": VALIDATION_FRACTION, "chosen_on": "validation (train period)"}}


def _baseline_headline(report: dict[str, Any]) -> list[str]:
    """One line per model: does its cloud model beat popularity (paired CI)?"""
    lines = []
    for model, numbers in report["models"].items():
        gain = numbers["gains"].get("vs_cloud", {}).get("popularity")
        if gain is None:
            continue
        low, high = gain["ci"]
        verdict = "beats" if high < 0 else ("loses to" if low > 0 else "does not clearly beat")
        lines.append(f"**{model}**: Cloud {numbers['methods']['cloud']['mean']:.4f} {verdict} popularity "
                     f"{numbers['methods']['popularity']['mean']:.4f} (popularity − Cloud {gain['estimate']:+.4f}, "
                     f"95 % CI [{low:+.4f}, {high:+.4f}]).")
    return lines


def split_lines(info: dict[str, Any]) -> list[str]:
    """The report's account of a real dataset's split: the realised test
    share and the users each rule dropped (``info["split_accounting"]``,
    :func:`lcft_tf.data.dataset.split_accounting`); none for synthetic data."""
    a = info.get("split_accounting")
    if not a:
        return []
    return [f"Split ({info.get('split', '?')}): test is {a['test_share']:.1%} of the kept users' samples; "
            f"{a['users_kept']} of {a['users_before']} users kept, {a['dropped_too_few_train']} dropped for too few "
            f"train and {a['dropped_too_few_test']} for too few test samples ({a['dropped_all_in_one_second']} of "
            "the dropped had every sample in one second, which the same-second rule keeps on the train side)."]


def cloud_training_lines(cloud: CloudConfig, runs: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    """The report's account of cloud training: the settings, then per model
    x seed the chosen learning rate and epochs and each candidate's
    validation AUC per epoch (from the cloud stages' ``training`` info)."""
    search = (f"learning rate from {list(cloud.candidate_rates)} and epochs (at most {cloud.epochs}, patience "
              f"{cloud.patience}) chosen on user-weighted AUC of the last {cloud.validation_fraction:.0%} of the "
              f"train period, then {'refit on all of it' if cloud.refit else 'the best epoch kept'}"
              if cloud.validation_fraction else f"lr {cloud.candidate_rates[0]}, {cloud.epochs} epoch(s), no validation")
    lines = [f"Cloud training: {cloud.optimizer}, batch {cloud.batch_size}, lr x{cloud.decay_per_epoch} per epoch; "
             f"{search}."]
    for model, seeds in runs.items():
        for seed, run in seeds.items():
            info = run["cloud"].get("cloud", {}).get("training")
            if not info or not info["candidates"]:
                continue
            curves = "; ".join(f"lr {c['learning_rate']:g}: " + " ".join(f"{a:.4f}" for a in c["validation_auc"])
                               for c in info["candidates"])
            lines.append(f"{model} seed {seed}: lr {info['learning_rate']:g}, {info['epochs']} epoch(s); "
                         f"validation AUC per epoch: {curves}.")
    return lines


def rolled_back_warnings(runs: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    """One line per model x seed x method whose device steps were rolled back
    more often than :data:`ROLLED_BACK_LIMIT` (from each fleet's statistics)."""
    out = []
    for model, seeds in runs.items():
        for seed, run in seeds.items():
            steps = run["fleet"].get("device_train_steps_by_method", {})
            rolled = run["fleet"].get("device_steps_rolled_back_by_method", {})
            for method, n in steps.items():
                if n and rolled.get(method, 0) > ROLLED_BACK_LIMIT * n:
                    out.append(f"{model} seed {seed}: {rolled[method]} of {n} device steps of method {method!r} were "
                               "rolled back (non-finite loss or weights); its numbers are mostly the cloud model's")
    return out


def run_experiment(config: ExperimentConfig, executor=None) -> dict[str, Any]:
    """Run every model x seed; ``executor`` overrides the fleet's (see
    :mod:`lcft_tf.fleet.executors`). The hard search runs on the executor
    ``config.fleet`` names (docs/scaling.md). Returns ``results.json``'s
    content plus the printed ``table``. Raises :class:`RunExistsError`,
    :class:`ConfigChangedError` or :class:`lcft_tf.pipeline.stages.RunInUseError`
    before anything is written when the folder cannot be used."""
    out = Path(config.output_dir) / config.run_name
    check_inputs(config)
    own = make_executor(config.fleet.executor, config.fleet.workers, config.fleet.ray_address)  # Ray starts once
    try:
        own.start()  # a bad Ray address fails here, before anything is written
        with RunLock(out):
            stages = plan_stages(config, out)
            _check_run_folder(config, out, stages)
            plan = {"format": RUN_FORMAT, "package_version": __version__,
                    "stages": {n: {"hash": s.hash, "key": canonical(s.key)} for n, s in stages.items()}}
            atomic_write(out / "run.json", to_json(plan))
            return _run(RunContext(config, stages, executor or own, own), out)
    finally:
        own.close()


def _run(ctx: RunContext, out: Path) -> dict[str, Any]:
    config, stages = ctx.config, ctx.stages
    rebuilt: set[str] = set()
    run_stage(ctx, STAGES[0], None, None, rebuilt)
    ctx.dataset = dataset = CTRDataset.load(stages["dataset"].directory)
    summary = dataset.summary()
    global_ctr = dataset.global_ctr
    log.info("dataset %s (%s)", summary, "built" if rebuilt else "reused")
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    fleets: dict[str, dict[int, Any]] = {}
    for model_name in config.models:
        for seed in config.seeds:
            info: dict[str, Any] = {"model": model_name, "seed": seed}
            for kind in STAGES[1:]:
                if kind.wanted(config):
                    info[kind.name] = run_stage(ctx, kind, model_name, seed, rebuilt)
            ctx.keras_models.clear()
            fleets.setdefault(model_name, {})[seed] = fleet = info.pop("fleet")["results"]
            info.pop("export")
            if "hard" in info:
                info["hard_search"] = json.loads((stages[f"{run_id(model_name, seed)}/hard"].directory
                                                  / "hard.json").read_text())["search"]
                info.pop("hard")
            runs.setdefault(model_name, {})[seed] = {"fleet": fleet.stats, "cloud": info}

    baselines = _add_baselines(dataset, fleets)
    scored = (*config.methods, *(b for b in methods.BASELINES if b not in config.methods))
    report = summarize(fleets, global_ctr, scored, Grouping.from_info(dataset.info))
    results = {
        "package_version": __version__,
        "config": dataclasses.asdict(config),
        "stages": {n: s.hash for n, s in stages.items()},
        "dataset": {**summary, "split_accounting": dataset.info.get("split_accounting")},
        "global_ctr": global_ctr,
        "summary": report,
        "baselines": baselines,
        "runs": {m: {str(s): ev for s, ev in r.items()} for m, r in runs.items()},
    }
    results["warnings"] = warnings = rolled_back_warnings(runs)
    results = json.loads(to_json(results))  # what the file holds: NaN -> null
    atomic_write(out / "results.json", to_json(results))
    notes = [f"**Warning**: {w}" for w in warnings] + _baseline_headline(report) + [
        f"Dataset **{config.dataset}**: {summary['users']} users, {summary['samples']} samples. "
        f"Device fine-tuning: lr {config.fleet.learning_rate}, {config.fleet.epochs} epoch(s), "
        f"batch {config.export.batch_size}, {config.export.optimizer}, all in the LiteRT interpreter."
    ] + split_lines(dataset.info) + cloud_training_lines(config.cloud, runs)
    write_report(out, {"title": f"LCFT experiment: {config.run_name}", "dataset": config.dataset, "notes": notes}, report)
    if warnings and not config.allow_rolled_back:
        raise RolledBackError(f"{warnings[0]} (results.json and report.md are written; "
                              "pass --allow_rolled_back to accept such a run)")
    results["table"] = auc_table(report, config.dataset)
    return results

