"""An unpickler that runs no code from the file, for checkpoints that torch's weights_only reader refuses.

Real checkpoints hold more than tensors: fair-esm's `cfg` comes from fairseq training (config classes of
fairseq, omegaconf, numpy values), and the published VirNucPro classifiers are whole pickled modules of a class
defined in somebody's training script (`__main__.MLPClassifier`, `train.MLPClassifier`, ...). Every global a
pickle names goes through `find_class`, which hands back only one of three things:

* an entry of a short allowlist: torch's tensor-rebuild functions (wrapped so that they take no backward hooks
  and no attribute state), `torch.Size`, torch dtypes, plain value and container types (dict, list, set,
  OrderedDict, int, str, ...), `argparse.Namespace`, `_codecs.encode` (how protocol 2 stores bytes);
* an inert stand-in class, when the caller's `PicklePolicy` says the name is data it expects: calling it, and
  the NEWOBJ / BUILD / SETITEMS / APPENDS opcodes, only record the pickled arguments and state in an attribute
  bag. The real class is never imported, called or consulted;
* a refusal (`RefusedGlobal`, naming the global): every function outside the allowlist (`os.system`,
  `builtins.eval`, ...) and every name from a module that can run code, whatever the policy says.

So nothing the pickle can reach executes anything but the allowlist, and the refusals of known code-running
modules are there for a clear message, not for safety. Tensors come from torch's own storage loading (zip or
legacy format, memory-mapped by the caller where possible): this module only decides what each global becomes.
"""

from __future__ import annotations

import argparse
import codecs
import collections
import functools
import pickle
import types
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from dataclasses import dataclass

import torch


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global the reader does not accept; str() is one line naming it."""

    def __init__(self, name: str, why: str):
        self.name = name
        super().__init__(f"references global '{name}', which {why}")


@dataclass(frozen=True)
class PicklePolicy:
    """What a caller expects in its files beyond tensors and plain values.

    `refusal` completes the message "references global 'os.system', which ...". `stand_ins`: exact globals
    ("torch.nn.modules.linear.Linear") read as inert stand-ins. `class_names`: class names read as stand-ins under
    any module ("MLPClassifier": people retrain with their own scripts). `unknown_classes`: any other class
    (a CamelCase name outside the code-running modules) is read as a stand-in too (configuration objects).
    """

    refusal: str
    stand_ins: frozenset[str] = frozenset()
    class_names: frozenset[str] = frozenset()
    unknown_classes: bool = False


TENSORS_ONLY = PicklePolicy("a plain state dict never holds")

# Top-level modules whose globals can run code (or load more pickles): refused even where a policy would accept
# an unknown class, so an attack is named as such. Safety does not depend on this list: stand-ins are inert.
_CODE_MODULES = frozenset("""
    __builtin__ builtins os posix nt posixpath ntpath sys subprocess shutil importlib runpy pickle _pickle copyreg
    copy marshal types code codeop ctypes _ctypes functools operator io _io socket pty webbrowser multiprocessing
    threading asyncio signal inspect pdb pydoc timeit tempfile glob zipimport torch numpy dill cloudpickle joblib
    """.split())


# ------------------------------------------------------------------------------------------ stand-ins


class InertObject:
    """What an expected class of the pickle becomes: its pickled arguments and state, nothing else.

    `fields` is the pickled `__dict__` (or state); attribute access falls back to it, so a configuration object
    reads as `cfg.encoder_layers`. Real attributes of this class always win over pickled field names.
    """

    pickled_global = "?"  # "module.name" as the pickle names the class; set on each subclass

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.__dict__["_pickled"] = {"args": args, "kwargs": kwargs, "state": None, "items": {}, "elements": []}
        return obj

    def __init__(self, *args, **kwargs):
        pass  # __new__ recorded the arguments

    def __setstate__(self, state) -> None:  # BUILD
        self._pickled["state"] = state

    def __setitem__(self, key, value) -> None:  # SETITEMS of a dict subclass
        self._pickled["items"][key] = value

    def append(self, value) -> None:  # APPENDS of a list subclass
        self._pickled["elements"].append(value)

    def extend(self, values) -> None:
        self._pickled["elements"].extend(values)

    @property
    def args(self) -> tuple:
        """The positional arguments the pickle called the class with (REDUCE / NEWOBJ)."""
        return self._pickled["args"]

    @property
    def fields(self) -> dict:
        """The pickled state as a dict: `__dict__` and slots merged (empty when the state is not a dict)."""
        state = self._pickled["state"]
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            merged = {}
            for part in state:
                merged.update(part if isinstance(part, dict) else {})
            return merged
        return state if isinstance(state, dict) else {}

    def __getattr__(self, name):
        if name.startswith("__") or "_pickled" not in self.__dict__:
            raise AttributeError(name)  # no dunder protocol through pickled data
        fields = self.fields
        if name in fields:
            return fields[name]
        raise AttributeError(f"pickled {self.pickled_global} has no field {name!r}")

    def __repr__(self) -> str:
        return f"<inert {self.pickled_global}>"


@functools.lru_cache(maxsize=None)
def stand_in_class(full_name: str) -> type:
    """The stand-in type for a pickled global "module.name" (one per name, so callers can compare types)."""
    name = full_name.rsplit(".", 1)[-1]
    return type(name, (InertObject,), {"pickled_global": full_name, "__qualname__": name})


def _reconstructor(cls, base, state):
    """copyreg._reconstructor (protocol 0/1 objects) for stand-ins only: never base.__new__/__init__."""
    if isinstance(cls, type) and issubclass(cls, InertObject):
        return cls(state)
    raise RefusedGlobal("copyreg._reconstructor", f"would construct {getattr(cls, '__name__', cls)!r}")


# ------------------------------------------------------------------------------- tensors, values


def _refuse_hooks(backward_hooks) -> None:
    if backward_hooks:  # torch.save never writes hooks (see torch's "Don't serialize hooks")
        raise pickle.UnpicklingError("a tensor carries backward hooks")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    _refuse_hooks(backward_hooks)
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
                                           collections.OrderedDict(), metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    """Both `_rebuild_parameter` and `_rebuild_parameter_with_state`; attribute state is dropped (unused)."""
    _refuse_hooks(backward_hooks)
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"a parameter rebuilt from {type(data).__name__}, not a tensor")
    return torch.nn.Parameter(data, requires_grad)


def _type_of(*args):
    """builtins.type, as protocol 2 pickles `type(None)`: the one-argument form only (no class creation)."""
    if len(args) != 1:
        raise RefusedGlobal("builtins.type", "would create a class")
    return type(args[0])


def _allowed_globals() -> dict[str, object]:
    allowed: dict[str, object] = {
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "torch.Size": torch.Size,
        "collections.OrderedDict": collections.OrderedDict,
        "argparse.Namespace": argparse.Namespace,
        "_codecs.encode": codecs.encode,
        "copyreg._reconstructor": _reconstructor,
        "builtins.type": _type_of,
    }
    for value_type in (dict, list, tuple, set, frozenset, int, float, complex, bool, str, bytes, bytearray, slice,
                       range, object):
        allowed[f"builtins.{value_type.__name__}"] = value_type
    allowed.update({f"torch.{name}": value for name, value in vars(torch).items() if isinstance(value, torch.dtype)})
    return allowed


_ALLOWED = _allowed_globals()


# ------------------------------------------------------------------------------------------ unpickler


def _is_class_name(name: str) -> bool:
    return name[:1].isupper() and name.isidentifier()


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Protocol 0-2 pickles spell some Python 3 names the Python 2 way (`__builtin__ set`, `commands Popen` for
    subprocess.Popen); pickle's own find_class maps them back, so this one must too."""
    if (module, name) in NAME_MAPPING:
        return NAME_MAPPING[(module, name)]
    return IMPORT_MAPPING.get(module, module), name


def resolve_global(module: str, name: str, policy: PicklePolicy) -> object:
    """What the global `module.name` becomes under `policy`: allowlisted object, stand-in class, or refusal."""
    module, name = _python3_name(module, name)
    full = f"{module}.{name}"
    if full in _ALLOWED:
        return _ALLOWED[full]
    if full in policy.stand_ins:
        return stand_in_class(full)
    expected = name in policy.class_names or (policy.unknown_classes and _is_class_name(name))
    if expected and module.split(".")[0] not in _CODE_MODULES:
        return stand_in_class(full)
    raise RefusedGlobal(full, policy.refusal)


class RestrictedUnpickler(pickle._Unpickler):
    """Python's own unpickler with every global through `resolve_global` (policy set per subclass), and BUILD
    (which would call `__setstate__` or fill `__dict__` of whatever object it is given) limited to stand-ins and
    argparse.Namespace. The pure-Python class is used so BUILD can be limited; checkpoint pickles are small
    (the tensors' bytes are not in them)."""

    policy: PicklePolicy = TENSORS_ONLY
    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module, name):
        return resolve_global(module, name, self.policy)

    def load_build(self):
        target = self.stack[-2]
        if not isinstance(target, (InertObject, argparse.Namespace)):
            raise pickle.UnpicklingError(f"sets the state of a {type(target).__name__}, which no checkpoint does")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build


def pickle_module(policy: PicklePolicy) -> types.ModuleType:
    """A stand-in for the `pickle` module, for `torch.load(pickle_module=...)`: every pickle torch reads from the
    file (the object, and the legacy format's headers) goes through the restricted unpickler."""
    unpickler = type("PolicyUnpickler", (RestrictedUnpickler,), {"policy": policy})
    module = types.ModuleType("virnucpro_restricted_pickle")
    module.Unpickler = unpickler
    module.load = lambda file, **kwargs: unpickler(file, **kwargs).load()
    module.UnpicklingError = pickle.UnpicklingError
    return module
