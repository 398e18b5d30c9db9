"""A scoring process's start-up (issue 16): the CLI imports only the command it runs, checkpoints are read
without running torch's init code, and `Scorer.open` places the weights on the device only after the first
range's DataLoader workers started, scoring exactly what an eagerly loaded Scorer scores."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import numpy as np
import pytest
import torch

from doubles import demo_models_and_frames
from virnucpro.cli import build_parser
from virnucpro.config import EngineConfig, EnvConfig
from virnucpro.engine import loading, scorer as scorer_module
from virnucpro.engine.loading import HostModels, LoadedModels, load_models, read_models
from virnucpro.engine.scorer import Scorer
from virnucpro.models.skeleton import skeleton

CPU = EngineConfig(device="cpu", workers=2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return demo_models_and_frames(tmp_path_factory.mktemp("startup"))


def _score(scorer: Scorer, source):
    return list(scorer.score_range(source, 0, len(source), keep_embeddings=True, block_frames=16, grid_start=0))


def test_open_scores_the_same_blocks_bit_for_bit_as_an_eager_load(setup):
    files, source = setup
    env = EnvConfig.from_environ({})
    eager = Scorer.load(files, CPU, env)
    deferred = Scorer.open(files, CPU, env)
    assert isinstance(deferred.models, HostModels)
    assert deferred.identity == eager.identity
    want, got = _score(eager, source), _score(deferred, source)
    assert isinstance(deferred.models, LoadedModels) and deferred.placed_seconds is not None
    assert [(b.start, b.ids) for b in got] == [(b.start, b.ids) for b in want]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.protein, b.protein)
        np.testing.assert_array_equal(a.dna, b.dna)


def test_the_weights_are_placed_after_the_dataloader_workers_started(setup, monkeypatch):
    files, source = setup
    scorer = Scorer.open(files, CPU, EnvConfig.from_environ({}))
    seen = []

    def place(host):
        seen.append(len(multiprocessing.active_children()))
        return loading.place_models(host)

    monkeypatch.setattr(scorer_module, "place_models", place)
    blocks = scorer.score_range(source, 0, len(source), block_frames=16)
    assert seen == []  # nothing placed before the first block is asked for
    next(blocks)
    assert seen and seen[0] >= CPU.workers
    list(blocks)
    assert len(seen) == 1


def test_placed_models_equal_the_checkpoints_read_in_fp32_on_the_cpu(setup):
    files, _ = setup
    host = read_models(files, EngineConfig(device="cpu"))
    assert host.esm.embed_tokens.weight.device.type == "cpu"
    placed = loading.place_models(host)
    reference = load_models(files, EngineConfig(device="cpu"))
    for ours, theirs in ((placed.esm, reference.esm), (placed.dnabert, reference.dnabert)):
        ours_state, their_state = ours.state_dict(), theirs.state_dict()
        assert ours_state.keys() == their_state.keys()
        for key, value in ours_state.items():
            assert value.dtype == torch.float32, key
            torch.testing.assert_close(value, their_state[key], rtol=0, atol=0)


def test_reading_checkpoints_imports_no_compiler_and_runs_no_init(setup):
    files, _ = setup
    code = ("import sys; from virnucpro.models.esm2 import load_esm2; from virnucpro.models.dnabert import load_dnabert;"
            f"load_esm2({str(files.esm)!r}); load_dnabert({str(files.dnabert)!r});"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    normal = torch.nn.init.normal_
    model = skeleton(lambda: torch.nn.Embedding(5, 3))
    assert model.weight.is_meta and torch.nn.init.normal_ is normal  # restored afterwards


def test_the_cli_imports_only_the_command_it_runs():
    code = ("import sys; from virnucpro.cli import build_parser; build_parser(['-v', 'shard', 'run', '--index', '0']);"
            "print(sorted(m for m in sys.modules if m.startswith('virnucpro.commands.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(out) == ["virnucpro.commands.options", "virnucpro.commands.shard"]
    everything = build_parser(None)
    choices = next(a for a in everything._actions if a.dest == "command").choices
    assert {"shard", "predict", "submit", "status"} <= set(choices)
    assert set(next(a for a in build_parser(["nonsense"])._actions if a.dest == "command").choices) == set(choices)


def test_the_threaded_weight_copy_moves_every_parameter_and_buffer(setup):
    """`copy_to_device` replaces module.to(device): the same parameters (still Parameters) and buffers (ESM-2's
    fp32 rotary inv_freq included), all on the new device, through its thread pool."""
    files, _ = setup
    host = read_models(files, EngineConfig(device="cpu"))
    modules = (host.esm, host.dnabert, host.classifier)
    before = {(i, name): (tuple(t.shape), t.dtype) for i, m in enumerate(modules)
              for name, t in (*m.named_parameters(), *m.named_buffers())}
    loading.copy_to_device(modules, torch.device("meta"), threads=4)
    after = {(i, name): (tuple(t.shape), t.dtype) for i, m in enumerate(modules)
             for name, t in (*m.named_parameters(), *m.named_buffers())}
    assert after == before
    for module in modules:
        assert all(isinstance(p, torch.nn.Parameter) and p.device.type == "meta" for p in module.parameters())
        assert all(b.device.type == "meta" for b in module.buffers())
    assert host.esm.layers[0].self_attn.rot_emb.inv_freq.dtype == torch.float32


def test_deterministic_mode_is_set_after_the_weight_copy_and_before_the_first_kernel(setup, monkeypatch):
    """make_deterministic imports Inductor's configuration, so it waits for the copy (and the compiler's background
    import beside it) but must come before the casts on the device, the first kernels."""
    files, _ = setup
    order = []
    copy, cast = loading.copy_to_device, loading._place_encoders
    monkeypatch.setattr(loading, "copy_to_device", lambda *args: (order.append("copy"), copy(*args))[1])
    monkeypatch.setattr(loading, "make_deterministic", lambda device: order.append("deterministic"))
    monkeypatch.setattr(loading, "_place_encoders", lambda host: (order.append("casts"), cast(host))[1])
    host = read_models(files, CPU)
    assert order == []  # reading the checkpoints neither copies nor sets up kernels
    loading.place_models(host)
    assert order == ["copy", "deterministic", "casts"]
