"""The published VirNucPro MLP classifier and a loader that never runs code from the model file.

The published `300_model.pth` / `500_model.pth` are whole pickled modules (`torch.save(model)`) of a class
defined in the training script's `__main__`. Unpickling such a file normally imports and runs arbitrary code,
so we read it with torch's weights-only unpickler, registering inert stand-in classes under exactly the global
names such a file references. The stand-ins only receive their pickled state; we then copy the tensors into
our own `MLPClassifier`. The same loader reads plain state dicts (.pth/.pt) and .safetensors files.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from virnucpro.errors import ModelError
from virnucpro.models.torch_files import load_torch_file

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
        raise ModelError(path, f"unreadable safetensors file ({error})") from None


def _read_torch_file(path: Path) -> tuple[dict[str, torch.Tensor], float]:
    """A torch.save file: either the published pickled module or a plain state dict."""
    _refuse_foreign_globals(path)
    try:
        loaded = load_torch_file(path, _SAFE_GLOBALS)
    except pickle.UnpicklingError as error:
        # Reached only for files our scan could not read (legacy, non-zip format): torch names the global.
        raise ModelError(path, f"refused to unpickle: {_unpickler_refusal(error)}") from None
    except (RuntimeError, OSError, EOFError, ValueError, TypeError) as error:
        raise ModelError(path, f"unreadable torch file ({error})") from None
    if isinstance(loaded, _PickledMLPClassifier):
        return _state_from_pickled_module(path, loaded)
    if isinstance(loaded, dict):
        return dict(loaded), DEFAULT_BN_EPS
    raise ModelError(path, f"expected a pickled MLPClassifier or a state dict, got {type(loaded).__name__}")


# ------------------------------------------------------------------------------------ pickle stand-ins


class _PickledState:
    """Receives an object's pickled `__dict__` and nothing else: no module code, no hooks, no __init__."""

    def __init__(self):
        raise TypeError("stand-ins are only created by the unpickler")

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"unexpected pickled state for {type(self).__qualname__}")
        self.pickled = state


def _stand_in(module: str, name: str) -> type:
    # The weights-only unpickler resolves a registered class by `__module__` + name, so the stand-in carries
    # the published names (torch >= 2.5 uses __qualname__, torch 2.4 __name__).
    return type(name, (_PickledState,), {"__module__": module, "__qualname__": name})


_PickledMLPClassifier = _stand_in("__main__", "MLPClassifier")
_STAND_INS = (
    _PickledMLPClassifier,
    _stand_in("torch.nn.modules.linear", "Linear"),
    _stand_in("torch.nn.modules.batchnorm", "BatchNorm1d"),
    _stand_in("torch.nn.modules.dropout", "Dropout"),
)
_SAFE_GLOBALS = [*_STAND_INS, set, OrderedDict]

# Every global a `torch.save(model)` of the published class (or of a state dict) references, as the
# pickle names them. Anything else (os.system, builtins.eval, ...) means the file is not what it claims.
_ALLOWED_GLOBALS = frozenset(
    [f"{cls.__module__}.{cls.__qualname__}" for cls in _STAND_INS]
    + ["builtins.set", "collections.OrderedDict"]
    + ["torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"]
    + [f"torch.{kind}Storage" for kind in ("Float", "Double", "Half", "BFloat16", "Long", "Int")]
)


def _refuse_foreign_globals(path: Path) -> None:
    """Name the first global outside the allowlist before torch's unpickler sees the file."""
    pickled = _data_pickle(path)
    if pickled is None:
        return
    for name in _pickle_globals(path, pickled):
        if name not in _ALLOWED_GLOBALS:
            raise ModelError(path, f"refused to unpickle: references global '{name}', which a classifier never needs")


def _data_pickle(path: Path) -> bytes | None:
    """The main pickle of a torch zip checkpoint; None for other layouts (torch's unpickler still guards them)."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            return archive.read(names[0]) if names else None
    except (zipfile.BadZipFile, OSError) as error:
        raise ModelError(path, f"corrupt torch zip file ({error})") from None


def _pickle_globals(path: Path, pickled: bytes) -> list[str]:
    found = []
    try:
        for opcode, arg, _ in pickletools.genops(pickled):
            if opcode.name == "GLOBAL":
                found.append(_canonical_global(*arg.split(" ", 1)))
            elif opcode.name in ("STACK_GLOBAL", "INST", "OBJ", "EXT1", "EXT2", "EXT4"):
                found.append(f"<{opcode.name} opcode>")  # torch.save never emits these
    except (ValueError, IndexError) as error:
        raise ModelError(path, f"corrupt pickle ({error})") from None
    return found


def _unpickler_refusal(error: Exception) -> str:
    """The one informative line of torch's multi-paragraph weights-only error."""
    message = str(error)
    named = re.search(r"GLOBAL (\S+)", message)
    if named:
        return f"references global '{named.group(1)}', which a classifier never needs"
    detail = [line.strip() for line in message.splitlines() if "WeightsUnpickler error" in line]
    return detail[0] if detail else message.splitlines()[0]


def _canonical_global(module: str, name: str) -> str:
    # Protocol-2 pickles spell Python 3 names the Python 2 way (`__builtin__ set`); map them back.
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    module = IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


def _state_from_pickled_module(path: Path, root: _PickledState) -> tuple[dict[str, torch.Tensor], float]:
    state: dict[str, torch.Tensor] = {}
    children = root.pickled.get("_modules", {})
    for child_name, child in children.items():
        if not isinstance(child, _PickledState):
            continue  # e.g. None placeholders
        for group in ("_parameters", "_buffers"):
            for key, tensor in child.pickled.get(group, {}).items():
                if tensor is not None:
                    state[f"{child_name}.{key}"] = tensor.detach()
    bn1 = children.get("bn1")
    bn_eps = bn1.pickled.get("eps", DEFAULT_BN_EPS) if isinstance(bn1, _PickledState) else DEFAULT_BN_EPS
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
    for key in state:
        if key not in expected and key not in _OPTIONAL_KEYS:
            raise ModelError(path, "unexpected tensor: not part of the VirNucPro classifier", key=str(key))
