"""Run every pending shard on every selected device: in this process on CPU or one GPU, else one spawned
process per GPU. Each process loads the models once and pulls shard indices from a shared queue, so a fast
GPU simply takes more shards, and a resume with another GPU count just works.
"""

from __future__ import annotations

import logging
import os
import queue as queue_module
from dataclasses import dataclass, replace

from virnucpro.config import EngineConfig, EnvConfig, ModelPaths, PredictConfig
from virnucpro.errors import ModelError, RunStateError, VirNucProError
from virnucpro.run.manifest import Manifest
from virnucpro.run.models import resolve_models
from virnucpro.run.options import RunOptions
from virnucpro.run.rundir import RunDir, attach_log_file
from virnucpro.run.shard import run_shard
from virnucpro.run.status import pending_shards
from virnucpro.run.telemetry import ProgressDisplay, Telemetry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScorerFactory:
    """Picklable recipe for a Scorer of these model files on a given device (spawned GPU processes call it once).

    Anything with the same call signature and a `score_range` like engine.scorer.Scorer can stand in for it
    (`scorer_factory=` of run_shards / predict_run, ShardTask)."""

    files: ModelPaths  # resolved: see run.models.resolve_models
    env: EnvConfig

    def __call__(self, engine: EngineConfig):
        """The checkpoints read now, the weights placed on the device by the first scored range (Scorer.open)."""
        from virnucpro.engine.scorer import Scorer

        return Scorer.open(self.files, engine, self.env)


def select_devices(engine: EngineConfig, gpus: int = 0) -> list[str]:
    """'cpu', one explicit 'cuda:N', or the first `gpus` visible GPUs (0 = all of them)."""
    if engine.device == "cpu" or engine.device.startswith("cuda:"):
        return [engine.device]
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        if engine.device == "cuda":
            raise ModelError("cuda", "CUDA device requested but no GPU is visible (CUDA_VISIBLE_DEVICES?)")
        return ["cpu"]
    if gpus > count:
        raise ModelError(f"--gpus {gpus}", f"only {count} GPUs are visible")
    return [f"cuda:{i}" for i in range(gpus or count)]


def _physical_gpu(env: EnvConfig, device: str) -> str:
    ordinal = int(device.split(":")[1])
    visible = [d for d in (env.cuda_visible_devices or "").split(",") if d.strip()]
    return visible[ordinal] if visible else str(ordinal)


def run_shards(rundir, cfg: PredictConfig, env: EnvConfig, gpus: int | None = None, *, devices: list[str] | None = None,
               scorer_factory=None, options: RunOptions | None = None) -> list[int]:
    """Score all pending shards on `devices` (default: select_devices(cfg.engine, gpus or cfg.gpus)).

    Returns the shards scored; RunStateError when some did not finish (rerun to resume)."""
    options = options or RunOptions()
    run = RunDir(rundir)
    pending = pending_shards(run.root)
    if not pending:
        return []
    devices = devices or select_devices(cfg.engine, cfg.gpus if gpus is None else gpus)
    factory = scorer_factory or ScorerFactory(resolve_models(cfg, env), env)
    manifest = Manifest.load(run.manifest)
    display = ProgressDisplay(manifest.scored_frames, manifest.tokens, enabled=not env.no_progress,
                              done_frames=manifest.scored_frames - sum(manifest.shards[i][1] - manifest.shards[i][0] for i in pending))
    try:
        if len(devices) == 1:
            _run_here(run, pending, devices[0], cfg.engine, factory, options, display)
        else:
            _run_spawned(run, pending, devices, cfg.engine, env, factory, options, display)
    finally:
        display.close()
    return pending


def load_scorer(run: RunDir, factory, engine: EngineConfig, device: str):
    telemetry = Telemetry(run.telemetry)
    with telemetry.stage("load_models", device=device):
        scorer = factory(replace(engine, device=device, compile_cache=engine.compile_cache or str(run.compile_cache)))
    telemetry.event("scorer", device=device, identity=getattr(scorer, "identity", None))
    return scorer


def _run_here(run, pending, device, engine, factory, options, display) -> None:
    scorer = load_scorer(run, factory, engine, device)
    for index in pending:
        run_shard(run.root, index, scorer, options=options, device=device, progress=display.advance)


def _run_spawned(run, pending, devices, engine, env, factory, options, display) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked; children start clean
    tasks, events = context.Queue(), context.Queue()
    for index in pending:
        tasks.put(index)
    for _ in devices:
        tasks.put(None)
    workers = [context.Process(target=_gpu_worker, name=f"virnucpro-{device}",
                               args=(str(run.root), _physical_gpu(env, device), engine, factory, options, tasks, events))
               for device in devices]
    for worker in workers:
        worker.start()
    try:
        errors = _follow(workers, events, display)
    except BaseException:  # Ctrl-C, SIGTERM: stop the children too (their parts so far are kept)
        for worker in workers:
            worker.terminate()
        raise
    for worker in workers:
        worker.join()
        if worker.exitcode and not errors:
            errors.append(f"{worker.name} exited with code {worker.exitcode}")
    unfinished = [i for i in pending_shards(run.root) if i in set(pending)]
    if unfinished:
        raise RunStateError(f"{run.root}: {len(unfinished)} shards did not finish ({'; '.join(errors) or 'worker died'});"
                            " rerun the same command to resume")


def _follow(workers, events, display) -> list[str]:
    """Forward children's progress to the display until every child has exited; returns their error lines."""
    errors = []
    while True:
        try:
            kind, *payload = events.get(timeout=0.5)
        except queue_module.Empty:
            if not any(worker.is_alive() for worker in workers):
                return errors
            continue
        if kind == "progress":
            display.advance(*payload)
        else:
            errors.append(payload[0])


def _gpu_worker(rundir: str, physical_gpu: str, engine: EngineConfig, factory, options, tasks, events) -> None:
    # Must happen before anything initialises CUDA in this fresh (spawned) process.
    os.environ["CUDA_VISIBLE_DEVICES"] = physical_gpu
    run = RunDir(rundir)
    attach_log_file(run, f"gpu{physical_gpu}")
    device = f"cuda:0 (GPU {physical_gpu})"
    try:
        scorer = load_scorer(run, factory, engine, "cuda:0")
        while (index := tasks.get()) is not None:
            run_shard(run.root, index, scorer, options=options, device=device,
                      progress=lambda frames, tokens: events.put(("progress", frames, tokens)))
    except VirNucProError as error:
        events.put(("error", f"GPU {physical_gpu}: {error}"))
        raise SystemExit(error.exit_code)
    except Exception as error:  # noqa: BLE001 - reported to the parent as one line, full trace in logs/
        log.exception("GPU %s failed", physical_gpu)
        events.put(("error", f"GPU {physical_gpu}: {type(error).__name__}: {error}"))
        raise SystemExit(1)
