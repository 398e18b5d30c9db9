"""The loaders take the real checkpoint files and run no code from them (issue 13.4, issue 15.8).

Files are written the way other people's code writes them: a fairseq-style `cfg` holding config classes of
modules we do not have, a classifier pickled from a training script imported as `train`, tensors saved on a GPU.
Oracles: the same tensors in the plain format (Namespace config, state dict) load to the same model; a class
from the file that would leave a marker file when called or given its state never does.
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import pickletools
import re
import subprocess
import sys
import textwrap
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from virnucpro.errors import ModelError
from virnucpro.models.classifier import load_classifier, score
from virnucpro.models.dnabert import load_dnabert
from virnucpro.models.esm2 import load_esm2, read_esm2_checkpoint
from virnucpro.models.restricted_pickle import RestrictedUnpickler, _rebuild_tensor_v2
from virnucpro.models.torch_files import load_torch_file
from virnucpro.testing.classifier_checkpoint import random_published_classifier, save_published_pickle
from virnucpro.testing.dnabert_checkpoint import write_tiny_dnabert
from virnucpro.testing.esm2_checkpoint import write_tiny_esm2
from virnucpro.testing.pickles import pickled_as

INPUT_DIM = 40


@pytest.fixture(scope="module")
def tiny_esm(tmp_path_factory):
    """2 layers x 64, 4 heads: a shape no released ESM-2 has, so a loaded shape of (2, 64, 4) came from the config."""
    return write_tiny_esm2(tmp_path_factory.mktemp("esm") / "esm2_t2_tiny.pt", layers=2, dim=64, heads=4, seed=0)


def _esm_data(path: Path) -> dict:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_b = b.state_dict()
    assert a.state_dict().keys() == state_b.keys()
    for key, tensor in a.state_dict().items():
        assert torch.equal(tensor, state_b[key]), key


def _assert_one_plain_line(error: ModelError, path: Path) -> str:
    message = str(error)
    assert message.startswith(f"{path}: ") and "\n" not in message and "\x1b" not in message, message
    assert "weights_only" not in message and not re.search(r"\(\s*\)$", message), message
    return message


def _globals_of(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    return {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


# ------------------------------------------------------------------- config classes we do not have


class FairseqModelConfig:
    """A training framework's config class; when the loader runs any of its code the marker file appears."""

    marker: Path | None = None

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __setstate__(self, state):
        type(self).marker.touch()
        self.__dict__.update(state)


class DictConfig:
    """Pickles like omegaconf's DictConfig: its values are nodes in `_content`, each holding `_val`."""

    def __init__(self, values: dict):
        self._metadata = {"ref_type": type(None), "object_type": dict}
        self._content = {name: value if isinstance(value, DictConfig) else AnyNode(value)
                         for name, value in values.items()}


class AnyNode:
    def __init__(self, value):
        self._val = value


def _esm_with_cfg(tiny_esm: Path, tmp_path: Path, cfg) -> Path:
    data = _esm_data(tiny_esm)
    data["cfg"] = cfg
    path = tmp_path / "esm2_t2_cfg.pt"
    torch.save(data, path)
    return path


def test_esm_cfg_holding_an_unknown_class_loads_without_running_it(tiny_esm, tmp_path):
    marker = tmp_path / "config-code-ran"
    FairseqModelConfig.marker = marker
    fields = vars(_esm_data(tiny_esm)["cfg"]["model"])
    with pickled_as(FairseqModelConfig, "fairseq_fake.dataclass.configs"):
        path = _esm_with_cfg(tiny_esm, tmp_path, {"model": FairseqModelConfig(**fields), "task": {"seed": 1}})
        assert "fairseq_fake.dataclass.configs FairseqModelConfig" in _globals_of(path)
        # The class stays importable while loading: the loader must still never call it or give it its state.
        loaded = load_esm2(path)
    assert not marker.exists()
    assert (loaded.num_layers, loaded.embed_dim, loaded.heads) == (2, 64, 4)
    _same_weights(loaded, load_esm2(tiny_esm))


def test_esm_cfg_as_omegaconf_dictconfig_is_read(tiny_esm, tmp_path):
    values = {"encoder_layers": 2, "encoder_embed_dim": 64, "encoder_attention_heads": 4, "token_dropout": True}
    with pickled_as(DictConfig, "omegaconf.dictconfig"), pickled_as(AnyNode, "omegaconf.nodes"):
        path = _esm_with_cfg(tiny_esm, tmp_path, DictConfig({"model": DictConfig(values), "seed": 1}))
    assert {"omegaconf.dictconfig DictConfig", "omegaconf.nodes AnyNode"} <= _globals_of(path)
    state, shape = read_esm2_checkpoint(path)
    assert (shape.num_layers, shape.embed_dim, shape.attention_heads) == (2, 64, 4)


@pytest.fixture(scope="module")
def released_width_esm(tmp_path_factory):
    """One layer at the 8M model's width (320): heads (20) can come from the released sizes."""
    return write_tiny_esm2(tmp_path_factory.mktemp("esm320") / "esm2_t1_320.pt", layers=1, dim=320, heads=20, seed=1)


@pytest.mark.parametrize("cfg", ["no cfg", "config without fields", "args of another kind"])
def test_esm_without_usable_config_takes_the_shape_from_the_tensors(released_width_esm, tmp_path, cfg):
    data = _esm_data(released_width_esm)
    del data["cfg"]
    with pickled_as(FairseqModelConfig, "fairseq_fake.configs"):
        if cfg == "config without fields":
            data["cfg"] = {"model": FairseqModelConfig(arch="esm2")}
        elif cfg == "args of another kind":
            data["args"] = FairseqModelConfig(encoder_layers="many")
        path = tmp_path / "esm2_inferred.pt"
        torch.save(data, path)
    loaded = load_esm2(path)
    assert (loaded.num_layers, loaded.embed_dim, loaded.heads) == (1, 320, 20)
    _same_weights(loaded, load_esm2(released_width_esm))


def test_esm_without_config_and_unknown_width_names_the_file(tiny_esm, tmp_path):
    data = _esm_data(tiny_esm)
    del data["cfg"]
    path = tmp_path / "esm2_noconfig.pt"
    torch.save(data, path)
    with pytest.raises(ModelError) as raised:
        load_esm2(path)
    message = _assert_one_plain_line(raised.value, path)
    assert "width 64 is not a released ESM-2 size (320, 480, 640, 1280, 2560, 5120)" in message


def test_esm_state_dict_must_hold_tensors(tiny_esm, tmp_path):
    with pickled_as(FairseqModelConfig, "fairseq_fake.configs"):
        data = _esm_data(tiny_esm)
        data["model"]["encoder.sentence_encoder.embed_tokens.weight"] = FairseqModelConfig(a=1)
        path = tmp_path / "esm2_object.pt"
        torch.save(data, path)
    with pytest.raises(ModelError, match="key 'embed_tokens.weight': a FairseqModelConfig where a tensor belongs"):
        load_esm2(path)


# ------------------------------------------------------------------------- the classifier's module


@pytest.mark.parametrize("module", ["train", "fidelity_e2e", "__main__", "my_lab.scripts.retrain"])
def test_classifier_pickled_from_any_module(tmp_path, module):
    original = random_published_classifier(INPUT_DIM, 12, seed=4)
    path = save_published_pickle(original, tmp_path / "retrained.pth", module=module)
    assert f"{module} MLPClassifier" in _globals_of(path)
    loaded = load_classifier(path, "cpu", expected_input_dim=INPUT_DIM)
    features = torch.randn(9, INPUT_DIM, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = torch.softmax(original.eval()(features), dim=1)
    torch.testing.assert_close(score(loaded, features), expected, rtol=0, atol=1e-7)


class MLPClassifier(torch.nn.Module):
    """The published name with another structure: not the VirNucPro classifier."""

    def __init__(self, children: dict):
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)


@pytest.mark.parametrize("children, problem", [
    ({"hidden_layer": torch.nn.Linear(INPUT_DIM, 8), "bn1": torch.nn.BatchNorm1d(8),
      "output_layer": torch.nn.Linear(8, 2)}, "its submodules are hidden_layer (Linear), bn1 (BatchNorm1d), "
                                              "output_layer (Linear); expected"),
    ({"hidden_layer": torch.nn.Linear(INPUT_DIM, 8), "bn1": torch.nn.Linear(8, 8), "output_layer":
      torch.nn.Linear(8, 2), "dropout": torch.nn.Dropout()}, "bn1 (Linear)"),
    ({"hidden_layer": torch.nn.Linear(INPUT_DIM, 8), "bn1": torch.nn.BatchNorm1d(8), "output_layer":
      torch.nn.Linear(8, 2), "dropout": torch.nn.Dropout(), "relu": torch.nn.ReLU()},
     "references global 'torch.nn.modules.activation.ReLU', which a classifier never needs"),
])
def test_classifier_structure_is_the_published_one(tmp_path, children, problem):
    path = tmp_path / "other.pth"
    with pickled_as(MLPClassifier, "train"):
        torch.save(MLPClassifier(children), path)
    with pytest.raises(ModelError) as raised:
        load_classifier(path, "cpu", expected_input_dim=INPUT_DIM)
    assert problem in _assert_one_plain_line(raised.value, path)


# --------------------------------------------------------------------------- tensors saved on a GPU


@pytest.fixture
def saved_on_cuda(monkeypatch):
    """torch.save as on a GPU machine: every storage's location reads 'cuda:0' (no GPU needed to write it)."""
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")


def _cuda_marked(path: Path) -> Path:
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"cuda:0" in data and b"cpu" not in data
    return path


def test_tensors_saved_on_cuda_load_on_the_cpu(tiny_esm, tmp_path, saved_on_cuda):
    data = _esm_data(tiny_esm)
    plain = tmp_path / "esm2_cuda.pt"
    torch.save(data, plain)
    with pickled_as(FairseqModelConfig, "fairseq_fake.configs"):
        data["cfg"]["model"] = FairseqModelConfig(**vars(data["cfg"]["model"]))
        restricted = tmp_path / "esm2_cuda_cfg.pt"
        torch.save(data, restricted)
    classifier = save_published_pickle(random_published_classifier(INPUT_DIM, 8, seed=0), tmp_path / "cuda.pth",
                                       module="train")
    dnabert = write_tiny_dnabert(tmp_path / "dnabert", weights_format="bin")
    for path in (plain, restricted, classifier, dnabert / "pytorch_model.bin"):
        _cuda_marked(path)
    if not torch.cuda.is_available():  # the file really needs a map_location on this machine
        with pytest.raises(RuntimeError, match="CUDA"), torch.serialization.safe_globals([argparse.Namespace]):
            torch.load(plain, weights_only=True)
    reference = load_esm2(tiny_esm)
    for path in (plain, restricted):
        loaded = load_esm2(path)
        assert loaded.embed_tokens.weight.device.type == "cpu"
        _same_weights(loaded, reference)
    assert load_classifier(classifier, "cpu", expected_input_dim=INPUT_DIM).hidden_layer.weight.device.type == "cpu"
    assert next(load_dnabert(dnabert, "cpu", torch.float32).parameters()).device.type == "cpu"


# ------------------------------------------------------------------------------- malicious pickles


class RunsCommand:
    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def _attacks(marker: Path) -> dict[str, RunsCommand]:
    return {
        f"{os.system.__module__}.system": RunsCommand(os.system, f"touch {marker}"),
        "builtins.eval": RunsCommand(eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.Popen": RunsCommand(subprocess.Popen, ["touch", str(marker)]),
    }


def _write_esm(tiny_esm, path, payload):
    data = _esm_data(tiny_esm)
    data["cfg"]["model"] = payload
    torch.save(data, path)


def _write_dnabert(tmp_path, path, payload):
    folder = write_tiny_dnabert(tmp_path / "dnabert", weights_format="bin")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["bert.pooler.payload"] = payload
    torch.save(state, path)


def _write_classifier(path, payload):
    state = random_published_classifier(INPUT_DIM, 8, seed=0).state_dict()
    state["bn1.payload"] = payload
    torch.save(state, path)


@pytest.mark.parametrize("form", ["esm", "dnabert", "classifier"])
def test_malicious_pickle_is_refused_in_every_format(tiny_esm, tmp_path, form):
    marker = tmp_path / "pwned"
    for global_name, payload in _attacks(marker).items():
        if form == "esm":
            path = tmp_path / "esm2_evil.pt"
            _write_esm(tiny_esm, path, payload)
            load = lambda: load_esm2(path)  # noqa: E731
        elif form == "dnabert":
            path = tmp_path / "dnabert" / "pytorch_model.bin"
            _write_dnabert(tmp_path, path, payload)
            load = lambda: load_dnabert(path.parent, "cpu", torch.float32)  # noqa: E731
        else:
            path = tmp_path / "evil.pth"
            _write_classifier(path, payload)
            load = lambda: load_classifier(path, "cpu", expected_input_dim=INPUT_DIM)  # noqa: E731
        with pytest.raises(ModelError) as raised:
            load()
        message = _assert_one_plain_line(raised.value, path)
        assert f"refused to unpickle: references global '{global_name}'" in message
        assert not marker.exists()


def test_legacy_format_goes_through_the_same_refusal(tiny_esm, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "esm2_legacy.pt"
    data = _esm_data(tiny_esm)
    data["cfg"]["model"] = RunsCommand(os.system, f"touch {marker}")
    torch.save(data, path, _use_new_zipfile_serialization=False)
    with pytest.raises(ModelError, match=r"refused to unpickle: references global '\w+\.system'"):
        load_esm2(path)
    assert not marker.exists()
    data["cfg"]["model"] = argparse.Namespace(encoder_layers=2, encoder_embed_dim=64, encoder_attention_heads=4)
    torch.save(data, path, _use_new_zipfile_serialization=False)
    _same_weights(load_esm2(path), load_esm2(tiny_esm))


def test_torchscript_archive_is_refused(tmp_path):
    # torch.load hands an archive with constants.pkl (TorchScript: it holds code) to torch.jit.load; we never do.
    path = tmp_path / "scripted.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(f"{archive.namelist()[0].split('/')[0]}/constants.pkl", pickle.dumps(()))
    with pytest.raises(ModelError, match="a TorchScript archive"):
        load_torch_file(path)


@pytest.mark.parametrize("content, problem", [
    (b"", "empty file"),
    (b"hello\n", "not a torch checkpoint"),
    (os.urandom(4096), "not a torch checkpoint"),
    ("truncated", "truncated or corrupt torch zip archive"),
    ("bad pickle", "corrupt torch file"),
])
def test_damaged_files_get_one_plain_line(tmp_path, content, problem):
    path = tmp_path / "esm2_damaged.pt"
    torch.save({"model": {"w": torch.zeros(4)}}, path)
    if content == "truncated":
        content = path.read_bytes()[:-300]
    elif content == "bad pickle":  # a valid zip archive whose data.pkl is garbage
        with zipfile.ZipFile(path) as archive:
            records = {name: archive.read(name) for name in archive.namelist()}
        data_pkl = next(name for name in records if name.endswith("data.pkl"))
        records[data_pkl] = b"\x80\x02garbage"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            for name, body in records.items():
                archive.writestr(name, body)
        content = path.read_bytes()
    path.write_bytes(content)
    for load in (lambda: load_esm2(path), lambda: load_classifier(path, "cpu"), lambda: load_torch_file(path)):
        with pytest.raises(ModelError) as raised:
            load()
        message = _assert_one_plain_line(raised.value, path)
        assert problem in message and "mmap" not in message


# ------------------------------------------------------------------------------ the unpickler itself


def _restricted_load(payload: bytes):
    return RestrictedUnpickler(io.BytesIO(payload)).load()


def test_unpickler_limits_what_real_objects_can_be_made_to_do():
    # BUILD on a real object (here torch.Size; on a tensor it would reach Tensor.__setstate__): refused.
    with pytest.raises(pickle.UnpicklingError, match="sets the state of a Size"):
        _restricted_load(pickle.dumps(torch.Size([1]), protocol=2)[:-1] + b"}b.")
    # type("A", (), {}) would create a class: only the one-argument type(x) is there (protocol 2's type(None)).
    with pytest.raises(pickle.UnpicklingError, match="builtins.type"):
        _restricted_load(b"\x80\x02c__builtin__\ntype\nX\x01\x00\x00\x00A)}\x87R.")
    assert _restricted_load(pickle.dumps(type(None), protocol=2)) is type(None)
    # torch's rebuild functions come wrapped: no backward hooks (torch.save never writes any).
    assert _restricted_load(b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n.") is _rebuild_tensor_v2
    storage = torch.zeros(2).untyped_storage()
    typed = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32, _internal=True)
    assert _rebuild_tensor_v2(typed, 0, (2,), (1,), False, OrderedDict()).shape == (2,)
    with pytest.raises(pickle.UnpicklingError, match="backward hooks"):
        _rebuild_tensor_v2(typed, 0, (2,), (1,), False, OrderedDict({0: print}))


def test_restricted_read_is_memory_mapped(tmp_path):
    """A checkpoint the fast path refuses is read once more, memory-mapped: its bytes are not in memory until
    used (so a 5.7 GB file is never read twice). The check itself is shown to see a whole read."""
    size_mb = 64
    path = tmp_path / "esm2_big.pt"
    with pickled_as(FairseqModelConfig, "fairseq_fake.configs"):
        torch.save({"model": {"w": torch.ones(size_mb * 2**18)}, "cfg": {"model": FairseqModelConfig(a=1)}}, path)
    script = textwrap.dedent(f"""
        import re, torch
        from virnucpro.models.esm2 import FAIR_ESM_PICKLES
        from virnucpro.models.torch_files import load_torch_file
        def rss_mb():
            return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
        before = rss_mb()
        data = load_torch_file({str(path)!r}, policy=FAIR_ESM_PICKLES)
        loaded = rss_mb() - before
        assert type(data["cfg"]["model"]).__name__ == "FairseqModelConfig"
        total = float(data["model"]["w"].sum())
        print(loaded, rss_mb() - before, total)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    after_load, after_use, total = map(float, result.stdout.split())
    assert total == size_mb * 2**18
    assert after_load < size_mb / 4, result.stdout
    assert after_use > size_mb * 0.9, result.stdout  # the measurement does see the bytes once they are read
