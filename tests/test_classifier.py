import os
import pickletools
import sys
import zipfile

import pytest
import torch

from virnucpro.errors import ModelError
from virnucpro.models.classifier import PUBLISHED_INPUT_DIM, MLPClassifier, load_classifier, score
from virnucpro.testing.classifier_checkpoint import random_published_classifier, write_tiny_classifier

SUFFIX = {"pickle": ".pth", "state_dict": ".pt", "safetensors": ".safetensors"}
INPUT_DIM = 40


def _reference_scores(module: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The published scoring: the original nn.Module in eval mode, softmax over classes."""
    module.eval()
    with torch.no_grad():
        return torch.softmax(module(features), dim=1)


def _pickle_globals(path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    return {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


@pytest.mark.parametrize("form", ["pickle", "state_dict", "safetensors"])
def test_every_form_scores_like_the_original_module(tmp_path, form):
    path = tmp_path / f"model{SUFFIX[form]}"
    assert write_tiny_classifier(path, INPUT_DIM, hidden_dim=24, seed=3, form=form) == path
    original = random_published_classifier(INPUT_DIM, 24, seed=3)
    loaded = load_classifier(path, "cpu", expected_input_dim=INPUT_DIM)

    assert isinstance(loaded, MLPClassifier) and not loaded.training
    features = torch.randn(33, INPUT_DIM, generator=torch.Generator().manual_seed(1))
    expected = _reference_scores(original, features)
    got = score(loaded, features)
    assert got.dtype == torch.float32 and got.shape == (33, 2)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-7)
    # The running statistics matter: train-mode BatchNorm (batch statistics) would give other scores.
    with torch.no_grad():
        train_mode = torch.softmax(original.train()(features), dim=1)
    assert not torch.allclose(train_mode, expected, atol=1e-4)


def test_pickle_has_the_published_layout(tmp_path):
    path = tmp_path / "300_model.pth"
    write_tiny_classifier(path, INPUT_DIM)
    assert "__main__ MLPClassifier" in _pickle_globals(path)
    assert {"torch.nn.modules.linear Linear", "torch.nn.modules.batchnorm BatchNorm1d"} <= _pickle_globals(path)
    assert not hasattr(sys.modules["__main__"], "MLPClassifier"), "write_tiny_classifier must restore __main__"


def test_pickled_batchnorm_eps_is_used(tmp_path):
    path = tmp_path / "model.pth"
    write_tiny_classifier(path, INPUT_DIM, form="pickle", bn_eps=0.5)
    original = random_published_classifier(INPUT_DIM, 16, seed=0)
    original.bn1.eps = 0.5
    loaded = load_classifier(path, "cpu", expected_input_dim=INPUT_DIM)
    assert loaded.bn1.eps == 0.5
    features = torch.randn(5, INPUT_DIM)
    torch.testing.assert_close(score(loaded, features), _reference_scores(original, features), rtol=0, atol=1e-7)


def test_published_width_is_the_default(tmp_path):
    path = tmp_path / "500_model.pth"
    write_tiny_classifier(path, PUBLISHED_INPUT_DIM, hidden_dim=8)
    assert load_classifier(path, "cpu").input_dim == PUBLISHED_INPUT_DIM
    write_tiny_classifier(path, INPUT_DIM)
    with pytest.raises(ModelError, match="hidden_layer.weight.*expected 3328"):
        load_classifier(path, "cpu")


class _RunsCommand:
    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def _malicious_checkpoint(path, marker, function, argument, **save_kwargs):
    state = random_published_classifier(INPUT_DIM, 8, seed=0).state_dict()
    state["bn1.payload"] = _RunsCommand(function, argument)
    torch.save(state, path, **save_kwargs)


@pytest.mark.parametrize(
    "function, argument, global_name",
    [
        (os.system, "touch {marker}", f"{os.system.__module__}.system"),
        (eval, "open({marker!r}, 'w').close()", "builtins.eval"),
    ],
)
def test_malicious_pickle_is_refused_without_running(tmp_path, function, argument, global_name):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    _malicious_checkpoint(path, marker, function, argument.format(marker=str(marker)))
    with pytest.raises(ModelError) as raised:
        load_classifier(path, "cpu", expected_input_dim=INPUT_DIM)
    assert str(path) in str(raised.value) and global_name in str(raised.value)
    assert not marker.exists()


def test_legacy_format_is_guarded_too(tmp_path):
    # Non-zip (pre-1.6) files go through the same two readers (weights_only, then the restricted unpickler).
    marker = tmp_path / "pwned"
    path = tmp_path / "legacy.pth"
    _malicious_checkpoint(path, marker, os.system, f"touch {marker}", _use_new_zipfile_serialization=False)
    with pytest.raises(ModelError, match="legacy.pth: refused to unpickle: references global '.*system'"):
        load_classifier(path, "cpu", expected_input_dim=INPUT_DIM)
    assert not marker.exists()


def _state_dict_file(tmp_path, edit) -> str:
    state = random_published_classifier(INPUT_DIM, 8, seed=0).state_dict()
    edit(state)
    path = tmp_path / "edited.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda s: s.pop("bn1.running_var"), "bn1.running_var"),
        (lambda s: s.__setitem__("output_layer.weight", torch.zeros(3, 8)), "output_layer.weight"),
        (lambda s: s.__setitem__("output_layer.bias", torch.zeros(3)), "output_layer.bias"),
        (lambda s: s.__setitem__("bn1.weight", torch.zeros(9)), "bn1.weight"),
        (lambda s: s.pop("hidden_layer.weight"), "hidden_layer.weight"),
        (lambda s: s.__setitem__("extra.weight", torch.zeros(1)), "extra.weight"),
        (lambda s: s.__setitem__("bn1.num_batches_tracked", 1000), "bn1.num_batches_tracked"),
    ],
)
def test_wrong_shapes_and_keys_are_refused(tmp_path, edit, key):
    path = _state_dict_file(tmp_path, edit)
    with pytest.raises(ModelError, match=f"edited.pt: key '{key}'"):
        load_classifier(path, "cpu", expected_input_dim=INPUT_DIM)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_classifier(tmp_path / "absent.pth", "cpu")
    for name in ("corrupt.safetensors", "corrupt.pth"):
        corrupt = tmp_path / name
        corrupt.write_bytes(b"not a model")
        with pytest.raises(ModelError, match=name):
            load_classifier(corrupt, "cpu")
    truncated = tmp_path / "truncated.pth"
    write_tiny_classifier(truncated, INPUT_DIM)
    truncated.write_bytes(truncated.read_bytes()[:-200])
    with pytest.raises(ModelError, match="truncated.pth"):
        load_classifier(truncated, "cpu")


def test_predict_says_another_esm_model_needs_its_own_classifier(tmp_path, capsys):
    """The published classifier with an ESM-2 of another width (as 650M or 15B): one line, before any scoring."""
    from virnucpro.cli import main
    from virnucpro.testing.demo import demo_input, make_demo_models

    models = make_demo_models(tmp_path / "models")
    published = write_tiny_classifier(tmp_path / "500_model.pth", PUBLISHED_INPUT_DIM, hidden_dim=8)
    status = main(["predict", str(demo_input()), "-o", str(tmp_path / "run"), "--device", "cpu",
                   "--esm-model", models.esm, "--dnabert-model", models.dnabert, "--classifier", str(published)])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == ModelError.exit_code
    assert error.startswith(f"virnucpro: error: {published}: key 'hidden_layer.weight': classifier input width is "
                            f"{PUBLISHED_INPUT_DIM}, expected ")
    assert "650M or 15B needs a classifier trained on that model" in error
