"""The published VirNucPro MLP classifier and a loader that never runs code from the model file.

The published `300_model.pth` / `500_model.pth` are whole pickled modules (`torch.save(model)`) of a class
defined in the training script (`__main__.MLPClassifier`; retrained ones under whatever module their script had).
Unpickling such a file normally imports and runs arbitrary code, so it is read with the restricted unpickler of
models.restricted_pickle: a class named MLPClassifier (any module) and its torch.nn Linear / BatchNorm1d /
Dropout children become inert stand-ins that only receive their pickled state, every other global is refused,
and the structure must be the published one. The tensors are then copied into our own `MLPClassifier`. The same
loader reads plain state dicts (.pth/.pt) and .safetensors files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from virnucpro.errors import ModelError
from virnucpro.models.restricted_pickle import InertObject, PicklePolicy
from virnucpro.models.torch_files import load_torch_file, plain_reason

PUBLISHED_INPUT_DIM = 768 + 2560  # DNABERT-S mean + ESM-2 3B mean, DNABERT first
NUM_CLASSES = 2  # index 0 = others, index 1 = virus
DEFAULT_BN_EPS = 1e-5


class MLPClassifier(nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Dropout -> Linear, with the published submodule names."""

    def __init__(self, input_dim: int, hidden_dim: int, num_class: int = NUM_CLASSES, bn_eps: float = DEFAULT_BN_EPS):
        super().__init__()
        self.hidden_layer = nn.Linear(input_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim, eps=bn_eps)
        self.output_layer = nn.Linear(hidden_dim, num_class)
        self.dropout = nn.Dropout(0.5)

    @property
    def input_dim(self) -> int:
        return self.hidden_layer.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.hidden_layer(x)))
        return self.output_layer(self.dropout(x))


@torch.inference_mode()
def score(model: MLPClassifier, features: torch.Tensor) -> torch.Tensor:
    """softmax(model(features)) in fp32: column 0 = others (score1), column 1 = virus (score2)."""
    weight = model.hidden_layer.weight
    logits = model(features.to(device=weight.device, dtype=torch.float32))
    return torch.softmax(logits.float(), dim=1)


# ---------------------------------------------------------------------------------------------- loading


def load_classifier(
    path: str | Path, device: str | torch.device = "cpu", expected_input_dim: int | None = PUBLISHED_INPUT_DIM
) -> MLPClassifier:
    """Load the classifier from a published whole-module pickle, a state dict (.pth/.pt) or a .safetensors file.

    `expected_input_dim` None accepts any input width (tiny test models); the class count must be 2.
    Returns the model on `device`, in eval mode, fp32.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(path, "classifier file not found")
    if path.suffix == ".safetensors":
        state, bn_eps = _read_safetensors(path), DEFAULT_BN_EPS
    else:
        state, bn_eps = _read_torch_file(path)
    model = _build_model(path, state, bn_eps, expected_input_dim)
    return model.to(device).eval()


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise ModelError(path, f"unreadable safetensors file ({plain_reason(error)})") from None


def _read_torch_file(path: Path) -> tuple[dict[str, torch.Tensor], float]:
    """A torch.save file: either the published pickled module or a plain state dict."""
    loaded = load_torch_file(path, policy=CLASSIFIER_PICKLES)
    if isinstance(loaded, InertObject) and type(loaded).__name__ == "MLPClassifier":
        return _state_from_pickled_module(path, loaded)
    if isinstance(loaded, dict):
        return dict(loaded), DEFAULT_BN_EPS
    got = loaded.pickled_global if isinstance(loaded, InertObject) else type(loaded).__name__
    raise ModelError(path, f"expected a pickled MLPClassifier or a state dict, got {got}")


# ------------------------------------------------------------------------------------ the pickled module

# The published class's submodules and their torch.nn classes: the structure a pickled MLPClassifier must have,
# whatever module the training script that saved it was (`__main__`, `train`, `fidelity_e2e`, ...).
_CHILDREN = {
    "hidden_layer": "torch.nn.modules.linear.Linear",
    "bn1": "torch.nn.modules.batchnorm.BatchNorm1d",
    "output_layer": "torch.nn.modules.linear.Linear",
    "dropout": "torch.nn.modules.dropout.Dropout",
}
# Read with the restricted unpickler (models.restricted_pickle): these classes become inert attribute bags that
# only receive their pickled state; no class of the file is imported or called, every other global is refused.
CLASSIFIER_PICKLES = PicklePolicy("a classifier never needs", stand_ins=frozenset(_CHILDREN.values()),
                                  class_names=frozenset({"MLPClassifier"}))


def _children(path: Path, root: InertObject) -> dict[str, InertObject]:
    """The four submodules, each of its torch.nn class; anything else is not the published classifier."""
    children = root.fields.get("_modules")
    found = {name: getattr(child, "pickled_global", type(child).__name__)
             for name, child in (children.items() if isinstance(children, dict) else ())}
    if found != _CHILDREN:
        listed = ", ".join(f"{name} ({cls.rsplit('.', 1)[-1]})" for name, cls in found.items()) or "none"
        raise ModelError(path, f"{root.pickled_global} is not the VirNucPro classifier: its submodules are {listed}; "
                               f"expected hidden_layer (Linear), bn1 (BatchNorm1d), output_layer (Linear), "
                               f"dropout (Dropout)")
    return children


def _state_from_pickled_module(path: Path, root: InertObject) -> tuple[dict[str, torch.Tensor], float]:
    state: dict[str, torch.Tensor] = {}
    children = _children(path, root)
    for child_name, child in children.items():
        for group in ("_parameters", "_buffers"):
            tensors = child.fields.get(group) or {}
            for key, tensor in (tensors.items() if isinstance(tensors, dict) else ()):
                if tensor is not None:
                    state[f"{child_name}.{key}"] = tensor.detach() if isinstance(tensor, torch.Tensor) else tensor
    bn_eps = children["bn1"].fields.get("eps", DEFAULT_BN_EPS)
    if not isinstance(bn_eps, float):
        raise ModelError(path, f"bn1.eps is {bn_eps!r}, not a float", key="bn1.eps")
    return state, bn_eps


# --------------------------------------------------------------------------------------- shape checks

_OPTIONAL_KEYS = {"bn1.num_batches_tracked"}


def _expected_shapes(input_dim: int, hidden_dim: int) -> dict[str, tuple[int, ...]]:
    return {
        "hidden_layer.weight": (hidden_dim, input_dim),
        "hidden_layer.bias": (hidden_dim,),
        "bn1.weight": (hidden_dim,),
        "bn1.bias": (hidden_dim,),
        "bn1.running_mean": (hidden_dim,),
        "bn1.running_var": (hidden_dim,),
        "output_layer.weight": (NUM_CLASSES, hidden_dim),
        "output_layer.bias": (NUM_CLASSES,),
    }


def _build_model(
    path: Path, state: dict[str, torch.Tensor], bn_eps: float, expected_input_dim: int | None
) -> MLPClassifier:
    hidden = state.get("hidden_layer.weight")
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 2:
        raise ModelError(path, "missing or not a 2-d tensor", key="hidden_layer.weight")
    hidden_dim, input_dim = hidden.shape
    if expected_input_dim is not None and input_dim != expected_input_dim:
        raise ModelError(
            path, f"classifier input width is {input_dim}, expected {expected_input_dim} (DNABERT-S + ESM-2 widths): "
            f"a classifier scores only the embeddings it was trained on. The published ones take DNABERT-S 768 + "
            f"ESM-2 3B 2560 = {PUBLISHED_INPUT_DIM}; --esm-model 650M or 15B needs a classifier trained on that "
            f"model (--classifier FILE)", key="hidden_layer.weight"
        )
    expected = _expected_shapes(input_dim, hidden_dim)
    _check_keys(path, state, expected)
    model = MLPClassifier(input_dim, hidden_dim, NUM_CLASSES, bn_eps=bn_eps)
    weights = {key: state[key].to(torch.float32) for key in expected}
    if "bn1.num_batches_tracked" in state:
        weights["bn1.num_batches_tracked"] = state["bn1.num_batches_tracked"].to(torch.long).reshape(())
    model.load_state_dict(weights, strict=False)
    return model


def _check_keys(path: Path, state: dict, expected: dict[str, tuple[int, ...]]) -> None:
    for key, shape in expected.items():
        tensor = state.get(key)
        if not isinstance(tensor, torch.Tensor):
            raise ModelError(path, "missing tensor", key=key)
        if tuple(tensor.shape) != shape:
            raise ModelError(path, f"shape {tuple(tensor.shape)}, expected {shape}", key=key)
        if not tensor.is_floating_point():
            raise ModelError(path, f"dtype {tensor.dtype} is not floating point", key=key)
    for key, value in state.items():
        if key not in expected and key not in _OPTIONAL_KEYS:
            raise ModelError(path, "unexpected tensor: not part of the VirNucPro classifier", key=str(key))
        if not isinstance(value, torch.Tensor):
            raise ModelError(path, f"a {type(value).__name__} where a tensor belongs", key=str(key))
