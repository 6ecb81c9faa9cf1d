"""Read NVIDIA's StyleGAN2-ADA / StyleGAN3 ``.pkl`` snapshots without running the code in them.

    snap = read_nvidia_pickle("network-snapshot.pkl")
    snap.networks["G_ema"].state_dict()      # {"mapping.fc0.weight": tensor, ...}
    snap.networks["G_ema"].init_kwargs       # {"z_dim": 512, "img_resolution": 256, ...}

NVIDIA pickles store each network as its class's Python source (``module_src``) plus its state;
the normal unpickler imports ``torch_utils.persistence`` and runs that source, and plain pickle
can be made to run anything at all. This unpickler resolves only an allow-list of globals:
tensor and storage reconstruction (storages are read back with ``torch.load(weights_only=True)``),
numpy array and plain-number reconstruction, ``collections.OrderedDict``, and NVIDIA's ``EasyDict`` (as a dict).
The persistence wrapper ``_reconstruct_persistent_obj`` becomes an inert stub that keeps the
class name and the state and never looks at ``module_src``. Any other global — ``os.system``,
``builtins.eval``, a class of the file's own — is refused with an UnpicklingError naming it.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import RewriteError


@dataclass
class PersistentStub:
    """What a persistent NVIDIA module was: its class name and attributes; no code."""

    class_name: str
    state: dict = field(default_factory=dict)

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())

    def children(self) -> dict[str, PersistentStub]:
        mods = self.state.get("_modules") or {}
        return {k: v for k, v in mods.items() if isinstance(v, PersistentStub)}

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters and buffers of this module and its children, by dotted name."""
        out: dict[str, torch.Tensor] = {}
        for group in ("_parameters", "_buffers"):
            for k, v in (self.state.get(group) or {}).items():
                if isinstance(v, torch.Tensor):
                    out[prefix + k] = v.detach()
        for name, child in self.children().items():
            out.update(child.state_dict(f"{prefix}{name}."))
        return out


def _persistent(meta: Any) -> PersistentStub:
    """Stands in for torch_utils.persistence._reconstruct_persistent_obj: never runs module_src."""
    if not isinstance(meta, dict):
        raise pickle.UnpicklingError("a persistent object without its metadata dict")
    state = meta.get("state")
    return PersistentStub(str(meta.get("class_name", "?")), state if isinstance(state, dict) else {})


def _storage_from_bytes(b: bytes) -> Any:
    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


try:  # numpy ≥ 2 moved it (numpy.core warns now)
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
    from numpy.core.multiarray import scalar as _np_scalar


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """A numpy number (NVIDIA stores gains as np.float64): plain dtypes from raw bytes only."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError("a numpy scalar that is not a plain number")
    return _np_scalar(dtype, data)


ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    # torch's own rebuild functions (torch.load's weights_only reader allows the same): they
    # assemble a tensor from a storage that _storage_from_bytes read as plain tensors
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent,
    ("dnnlib.util", "EasyDict"): dict,
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"the file asks for {module}.{name}, which is not a "
                                         "tensor, array or NVIDIA network record") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not read (not an NVIDIA snapshot)")


@dataclass
class NvidiaSnapshot:
    networks: dict[str, PersistentStub]  # "G", "D", "G_ema", ... that were network records
    other: dict[str, Any]  # the rest of the top-level dict (kwargs, numbers)


def read_nvidia_pickle(path: str | Path) -> NvidiaSnapshot:
    """The networks and settings in an NVIDIA ``.pkl``, read without running any of its code."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            top = RestrictedUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            RuntimeError) as e:
        raise RewriteError(f"{path.name} was refused: {e}. Nothing in it ran.",
                           "pass an NVIDIA StyleGAN2-ADA / StyleGAN3 snapshot, or a state dict "
                           "saved with torch.save(model.state_dict(), path).") from None
    if not isinstance(top, dict):
        raise RewriteError(f"{path.name} holds a {type(top).__name__}, not an NVIDIA snapshot "
                           "dict.", "pass a network-snapshot-*.pkl file.")
    nets = {k: v for k, v in top.items() if isinstance(v, PersistentStub)}
    return NvidiaSnapshot(nets, {k: v for k, v in top.items() if k not in nets})
