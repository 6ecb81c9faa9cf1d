"""StyleGAN2 generators (config e/f, skip architecture) in plain PyTorch, for rosinality's and
NVIDIA's checkpoints.

    from rewidget.models import from_checkpoint
    gen = from_checkpoint("stylegan2-church-config-f.pt")       # rosinality / the paper's layout
    gen = from_checkpoint("network-snapshot.pkl", truncation=0.7)  # NVIDIA, read without its code
    gen = stylegan2_adapter(random_stylegan2(32, channels=16))    # random weights, for tests
    gen.layer_names()          # ['synthesis.b4.conv1.conv', 'synthesis.b8.conv0.conv', ...]
    img = gen.forward(gen.latents([0, 1]))     # (2, 3, 32, 32); trained weights give [-1, 1]

The network is written here from the papers and checked against both reference codes (same
weights, same z and noise; numbers in benchmarks/results/stylegan2.md). Parameters are stored
*effective*: every equalized-learning-rate gain is folded into the weight once at load time.

Each modulated convolution is split as the rewriting paper splits it: the style s = affine(w)
scales the input channels, and the editable module is a plain conv (``ModulatedConv``, an
nn.Conv2d; ``ModulatedUpConv``, an nn.ConvTranspose2d with stride 2 for the upsampling layers)
whose key is x·s and whose value is its output. After it come the [1,3,3,1] blur (up layers),
demodulation, the layer's noise, bias and leaky ReLU ×√2 (clamped with NVIDIA's conv_clamp).

Demodulation scales each output channel by 1/‖W·s‖, so the image is not linear in W:
- ``demodulation="live"`` (default, exact StyleGAN2): the coefficients come from the weight the
  conv computes with in that very call (an installed edit, or a preview's stand-in weight);
- ``"frozen"``: they come from W₀, the weights when the mode was set, so the layer passes on
  exactly d₀·(the value the solver fitted) and the solvers' linear model of the layer holds.
The exact and iterative solvers see only the conv's value (before demodulation) in both modes;
the output solver renders through forward_from and so sees the mode in use.

Noise is deterministic: each layer adds its fixed noise buffer (the checkpoint's, or drawn from a
fixed seed) times its learned strength; ``noise="none"`` turns it off. NVIDIA's fp16 blocks run
in float32 here.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import RewriteError
from .base import GeneratorAdapter

BLUR = (1.0, 3.0, 3.0, 1.0)
SQRT2 = math.sqrt(2.0)
DEMODULATION = ("live", "frozen")
NOISE = ("const", "none")

# the weight each editable conv computed with inside its layer's current forward, per thread: a
# preview replaces it through torch.func.functional_call, and demodulation must follow what the
# conv actually used. Only calls from the layer are recorded (the solvers call the conv alone).
_IN_USE = threading.local()


def _table() -> dict[int, torch.Tensor]:
    table = getattr(_IN_USE, "weights", None)
    if table is None:
        table = _IN_USE.weights = {}
    return table


def _remember(module: nn.Module, weight: torch.Tensor) -> None:
    table = _table()
    if id(module) in table:
        table[id(module)] = weight


def _expect(module: nn.Module) -> None:
    _table()[id(module)] = module.weight


def _recall(module: nn.Module) -> torch.Tensor:
    return _table().pop(id(module), module.weight)


def upfirdn2d(x: torch.Tensor, taps: torch.Tensor, up: int = 1, pad: tuple[int, int] = (0, 0),
              gain: float = 1.0) -> torch.Tensor:
    """Zero-insertion upsampling by ``up``, padding, then the separable FIR filter
    outer(taps, taps)/sum² · gain on each channel (N, C, H, W) → (N, C, H·up + p0 + p1 - 3, …)."""
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    k = torch.outer(taps, taps).to(x)
    k = (k / k.sum() * gain).flip([0, 1])  # a true convolution (the taps are symmetric anyway)
    return F.conv2d(x, k.expand(c, 1, *k.shape), groups=c)


def _lrelu(x: torch.Tensor, bias: torch.Tensor, clamp: float | None) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    x = F.leaky_relu(x + bias.view(shape), 0.2) * SQRT2
    return x.clamp(-clamp, clamp) if clamp is not None else x


class ModulatedConv(nn.Conv2d):
    """The editable part of a 3×3 modulated conv: keys x·s (N, C_in, H, W) → values (no bias)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _remember(self, self.weight)
        return super().forward(x)

    def weight_norms(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.pow(2).sum((2, 3))  # (C_out, C_in)


class ModulatedUpConv(nn.ConvTranspose2d):
    """The editable part of an upsampling modulated conv: a stride-2 transposed 3×3 conv, keys
    (N, C_in, H, W) → values (N, C_out, 2H+1, 2W+1) (the blur after it makes them 2H × 2W)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, 2, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _remember(self, self.weight)
        return super().forward(x)

    def weight_norms(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.pow(2).sum((2, 3)).T  # weight (C_in, C_out, 3, 3) → (C_out, C_in)


class StyledLayer(nn.Module):
    """One modulated 3×3 conv: s = affine(w); values = conv(x·s); (blur); × 1/‖W·s‖ per output
    channel; + strength · noise; + bias; leaky ReLU ×√2 (clamped)."""

    def __init__(self, w_dim: int, cin: int, cout: int, resolution: int, up: bool,
                 clamp: float | None = None) -> None:
        super().__init__()
        self.affine = nn.Linear(w_dim, cin)
        self.conv = ModulatedUpConv(cin, cout) if up else ModulatedConv(cin, cout)
        self.bias = nn.Parameter(torch.zeros(cout))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise", torch.zeros(1, 1, resolution, resolution))
        self.register_buffer("demod_ref", None, persistent=False)  # (C_out, C_in) when frozen
        self.up, self.clamp, self.use_noise = up, clamp, True

    def freeze_demodulation(self, frozen: bool) -> None:
        ref = self.conv.weight_norms(self.conv.weight.detach()).clone() if frozen else None
        self.demod_ref = ref

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w)  # (N, C_in)
        _expect(self.conv)
        y = self.conv(x * s[:, :, None, None])  # keys x·s → values
        norms = self.demod_ref if self.demod_ref is not None else \
            self.conv.weight_norms(_recall(self.conv))
        d = torch.rsqrt(s.pow(2) @ norms.to(s).T + 1e-8)  # (N, C_out) = 1/‖W·s‖ per channel
        if self.up:
            y = upfirdn2d(y, torch.tensor(BLUR), pad=(1, 1), gain=4.0)
        y = y * d[:, :, None, None].to(y)
        if self.use_noise:
            y = y + self.noise_strength.to(y) * self.noise.to(y)
        return _lrelu(y, self.bias.to(y), self.clamp)


class ToRGB(nn.Module):
    """1×1 modulated conv without demodulation, bias (and clamp): features → RGB."""

    def __init__(self, w_dim: int, cin: int, clamp: float | None = None) -> None:
        super().__init__()
        self.affine = nn.Linear(w_dim, cin)
        self.weight = nn.Parameter(torch.zeros(3, cin, 1, 1))
        self.bias = nn.Parameter(torch.zeros(3))
        self.clamp = clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x * self.affine(w)[:, :, None, None], self.weight.to(x), self.bias.to(x))
        return y.clamp(-self.clamp, self.clamp) if self.clamp is not None else y


class SynthesisBlock(nn.Module):
    def __init__(self, w_dim: int, cin: int, cout: int, resolution: int,
                 clamp: float | None = None) -> None:
        super().__init__()
        if resolution == 4:
            self.const = nn.Parameter(torch.zeros(cout, 4, 4))
        else:
            self.conv0 = StyledLayer(w_dim, cin, cout, resolution, up=True, clamp=clamp)
        self.conv1 = StyledLayer(w_dim, cout, cout, resolution, up=False, clamp=clamp)
        self.torgb = ToRGB(w_dim, cout, clamp=clamp)
        self.resolution = resolution

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, w: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if x is None:
            x = self.const.to(w)[None].expand(w.shape[0], -1, -1, -1)
        else:
            x = self.conv0(x, w)
        x = self.conv1(x, w)
        y = self.torgb(x, w)
        if img is not None:  # skip architecture: upsampled RGB of the coarser blocks
            img = upfirdn2d(img, torch.tensor(BLUR), up=2, pad=(2, 1), gain=4.0)
        return x, (y if img is None else img + y)


class MappingNetwork(nn.Module):
    """z → w: normalise z's second moment, then fully connected layers with leaky ReLU ×√2."""

    def __init__(self, z_dim: int, w_dim: int, layers: int) -> None:
        super().__init__()
        self.layers = layers
        for i in range(layers):
            setattr(self, f"fc{i}", nn.Linear(z_dim if i == 0 else w_dim, w_dim))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
        for i in range(self.layers):
            fc = getattr(self, f"fc{i}")
            x = _lrelu(F.linear(x, fc.weight), fc.bias, None)
        return x


def nvidia_channels(resolution: int, channel_base: int = 32768, channel_max: int = 512
                    ) -> dict[int, int]:
    """Channels per resolution as stylegan2-ada-pytorch sets them (config f: 512 up to 64 px)."""
    return {r: min(channel_base // r, channel_max) for r in _resolutions(resolution)}


def rosinality_channels(resolution: int, multiplier: int = 2) -> dict[int, int]:
    """Channels per resolution as rosinality's Generator sets them (512 up to 32 px)."""
    base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    return {r: base[r] * (multiplier if r >= 64 else 1) for r in _resolutions(resolution)}


def _resolutions(resolution: int) -> list[int]:
    log = int(round(math.log2(resolution))) if resolution > 0 else 0
    if resolution < 8 or 2 ** log != resolution:
        raise RewriteError(f"A StyleGAN2 resolution must be a power of two from 8 up; got "
                           f"{resolution}.", "pass 16, 32, 64, ..., 1024.")
    return [2 ** i for i in range(2, log + 1)]


class StyleGAN2Generator(nn.Module):
    """z (N, z_dim) → image (N, 3, R, R), about [-1, 1]. ``channels``: {resolution: channels}
    from 4 to R (or one number for every resolution)."""

    def __init__(self, resolution: int, channels: Mapping[int, int] | int, z_dim: int = 512,
                 w_dim: int = 512, mapping_layers: int = 8, conv_clamp: float | None = None
                 ) -> None:
        super().__init__()
        res = _resolutions(resolution)
        if isinstance(channels, int):
            channels = {r: channels for r in res}
        missing = [r for r in res if r not in channels]
        if missing:
            raise RewriteError(f"No channel count for resolutions {missing}.",
                               "pass channels for every resolution from 4 up.")
        self.resolution, self.z_dim, self.w_dim = resolution, z_dim, w_dim
        self.channels = {r: int(channels[r]) for r in res}
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers)
        self.synthesis = nn.Module()
        for r in res:
            block = SynthesisBlock(w_dim, self.channels.get(r // 2, 0), self.channels[r], r,
                                   conv_clamp)
            self.synthesis.add_module(f"b{r}", block)
        self.truncation_psi = 1.0
        self.demodulation = "live"

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self.synthesis, f"b{r}") for r in self.channels]

    def styled_layers(self) -> dict[str, StyledLayer]:
        """The modulated 3×3 convs in forward order, by module path."""
        return {n: m for n, m in self.named_modules() if isinstance(m, StyledLayer)}

    def editable_layers(self) -> list[str]:
        return [f"{n}.conv" for n in self.styled_layers()]

    def set_demodulation(self, mode: str) -> None:
        """"live" (exact StyleGAN2) or "frozen" (coefficients from the weights as they are now)."""
        if mode not in DEMODULATION:
            raise RewriteError(f"Unknown demodulation {mode!r}.", f"use one of {DEMODULATION}.")
        for layer in self.styled_layers().values():
            layer.freeze_demodulation(mode == "frozen")
        self.demodulation = mode

    def set_noise(self, mode: str) -> None:
        if mode not in NOISE:
            raise RewriteError(f"Unknown noise mode {mode!r}.", f"use one of {NOISE}.")
        for layer in self.styled_layers().values():
            layer.use_noise = mode == "const"

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.mapping(z)  # (N, w_dim); the same w drives every layer (no style mixing)
        if self.truncation_psi != 1:
            w = self.mapping.w_avg.to(w).lerp(w, self.truncation_psi)
        x = img = None
        for block in self.blocks():
            x, img = block(x, img, w)
        return img

    @torch.no_grad()
    def randomize(self, seed: int = 0, noise_strength: float = 0.0) -> StyleGAN2Generator:
        """Reference-style random init from ``seed`` (a local generator; global RNG untouched):
        unit-normal raw weights times their gains, affine biases 1, other biases 0."""
        g = torch.Generator().manual_seed(int(seed))

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(shape, generator=g)

        for i in range(self.mapping.layers):
            fc = getattr(self.mapping, f"fc{i}")
            fc.weight.copy_(randn(*fc.weight.shape) / math.sqrt(fc.weight.shape[1]))
            fc.bias.zero_()
        for block in self.blocks():
            if hasattr(block, "const"):
                block.const.copy_(randn(*block.const.shape))
            for layer in [getattr(block, "conv0", None), block.conv1]:
                if layer is None:
                    continue
                cin = layer.affine.in_features
                layer.affine.weight.copy_(randn(*layer.affine.weight.shape) / math.sqrt(cin))
                layer.affine.bias.fill_(1.0)
                fan_in = layer.conv.weight.shape[0 if layer.up else 1] * 9
                layer.conv.weight.copy_(randn(*layer.conv.weight.shape) / math.sqrt(fan_in))
                layer.bias.zero_()
                layer.noise.copy_(randn(*layer.noise.shape))
                layer.noise_strength.fill_(noise_strength)
            rgb = block.torgb
            rgb.affine.weight.copy_(randn(*rgb.affine.weight.shape) / math.sqrt(self.w_dim))
            rgb.affine.bias.fill_(1.0)
            rgb.weight.copy_(randn(*rgb.weight.shape) / math.sqrt(rgb.weight.shape[1]))
            rgb.bias.zero_()
        self.set_demodulation(self.demodulation)
        return self


def random_stylegan2(resolution: int = 256, channels: Mapping[int, int] | int | None = None,
                     z_dim: int = 512, w_dim: int = 512, mapping_layers: int = 8,
                     seed: int = 0, noise_strength: float = 0.0) -> StyleGAN2Generator:
    """A randomly initialised StyleGAN2 (config-f channels unless ``channels`` is given)."""
    if channels is None:
        channels = nvidia_channels(resolution)
    net = StyleGAN2Generator(resolution, channels, z_dim, w_dim, mapping_layers)
    return net.randomize(seed, noise_strength)


def seeded_noise(net: StyleGAN2Generator, seed: int = 0) -> None:
    """Fill every layer's noise buffer from a fixed seed (for checkpoints that carry none)."""
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for layer in net.styled_layers().values():
            layer.noise.copy_(torch.randn(layer.noise.shape, generator=g))


def stylegan2_adapter(net: StyleGAN2Generator, name: str = "stylegan2", device=None,
                      demodulation: str = "live", truncation: float = 1.0,
                      noise: str = "const") -> GeneratorAdapter:
    """The generator behind rewidget's protocol: seeded z (z_dim,), layers = the modulated convs.

    ``truncation``: ψ, pulling w toward w_avg (1 = none). ``demodulation``: "live" or
    "frozen" (from the weights as they are now, i.e. W₀ before any edit). ``noise``: "const"
    (each layer's fixed buffer) or "none"."""
    psi = float(truncation)
    if not math.isfinite(psi) or not 0.0 <= psi <= 2.0:
        raise RewriteError(f"Truncation ψ={truncation!r} is outside [0, 2].",
                           "pass truncation between 0 and 1 (1 = no truncation).")
    net.truncation_psi = psi
    net.set_noise(noise)
    net.set_demodulation(demodulation)
    return GeneratorAdapter(net, (net.z_dim,), name=name, layers=net.editable_layers(),
                            device=device, image_size=net.resolution)


# -- checkpoints ------------------------------------------------------------------------------
# Both layouts store raw weights with their equalized-learning-rate gains applied at run time;
# here each gain is multiplied in once. rosinality: every conv weight × 1/√fan_in, mapping
# weights × lr_mul/√in and biases × lr_mul, affines × 1/√w_dim. NVIDIA: the same, except that
# its 3×3 synthesis weights carry no gain (demodulation makes it irrelevant there).

def _count(state: Mapping[str, torch.Tensor], fmt: str) -> int:
    n = 0
    while fmt.format(n) in state:
        n += 1
    return n


def _refuse_layout(what: str, problem: str) -> RewriteError:
    return RewriteError(f"The {what} does not fit rewidget's StyleGAN2: {problem}.",
                        "pass an unmodified generator checkpoint (rosinality's g_ema, or an "
                        "NVIDIA stylegan2-ada-pytorch G_ema).")


def _load_into(net: StyleGAN2Generator, ours: dict[str, torch.Tensor], what: str) -> None:
    expected = net.state_dict()
    missing = sorted(set(expected) - set(ours))
    unexpected = sorted(set(ours) - set(expected))
    wrong = [k for k in set(expected) & set(ours) if expected[k].shape != ours[k].shape]
    if missing or unexpected or wrong:
        raise _refuse_layout(what, f"missing {missing[:4]}, unexpected {unexpected[:4]}, "
                                   f"wrong shapes {sorted(wrong)[:4]}")
    net.load_state_dict({k: v.float() for k, v in ours.items()})


def _affine(ours: dict, src: Mapping, dst: str, weight: str, bias: str, gain: float) -> None:
    ours[f"{dst}.affine.weight"] = src[weight] * gain
    ours[f"{dst}.affine.bias"] = src[bias]


def rosinality_settings(state: Mapping[str, torch.Tensor]) -> dict:
    """resolution, z/w dim, mapping layers and channels read off a g_ema state dict's shapes."""
    if "style.1.weight" not in state or "conv1.conv.weight" not in state:
        raise _refuse_layout("g_ema state dict", "no style.1.weight / conv1.conv.weight")
    n_mlp = sum(1 for i in range(1, 64) if f"style.{i}.weight" in state)  # style.0: PixelNorm
    blocks = _count(state, "to_rgbs.{}.conv.weight")
    convs = _count(state, "convs.{}.conv.weight")
    if convs != 2 * blocks:
        raise _refuse_layout("g_ema state dict", f"{convs} convs.N for {blocks} to_rgbs.N "
                                                 "(two convs per resolution expected)")
    resolution = 4 * 2 ** blocks
    channels = {4: int(state["conv1.conv.weight"].shape[1])}
    for j in range(blocks):
        channels[8 * 2 ** j] = int(state[f"convs.{2 * j}.conv.weight"].shape[1])
    return {"resolution": resolution, "z_dim": int(state["style.1.weight"].shape[1]),
            "w_dim": int(state["style.1.weight"].shape[0]), "mapping_layers": n_mlp,
            "channels": channels}


def from_rosinality(state: Mapping[str, torch.Tensor], latent_avg: torch.Tensor | None = None,
                    args: Mapping | None = None, lr_mlp: float = 0.01) -> StyleGAN2Generator:
    """Our network from rosinality's ``g_ema`` state dict (``style.1.weight``, ``input.input``,
    ``conv1.*``, ``convs.N.*``, ``to_rgbs.N.*``, ``noises.noise_N``). Sizes and channels are
    read off the tensors and checked against ``args`` (the training Namespace's size, latent,
    n_mlp, channel_multiplier) where given."""
    cfg = rosinality_settings(state)
    if args:
        said = {"size": cfg["resolution"], "latent": cfg["w_dim"],
                "n_mlp": cfg["mapping_layers"]}
        off = {k: (args[k], v) for k, v in said.items() if k in args and int(args[k]) != v}
        mult = args.get("channel_multiplier")
        if mult is not None:  # it sets the channels from 64 px up (512 below, in rosinality's)
            said = rosinality_channels(cfg["resolution"], int(mult))
            got = {r: c for r, c in cfg["channels"].items() if r >= 64}
            if got != {r: c for r, c in said.items() if r >= 64}:
                off["channel_multiplier"] = (mult, got)
        if off:
            raise _refuse_layout("rosinality checkpoint", f"its args and its tensors disagree "
                                 f"on {off} (args, tensors)")
    net = StyleGAN2Generator(**cfg)
    ours: dict[str, torch.Tensor] = {}
    for i in range(cfg["mapping_layers"]):
        w = state[f"style.{i + 1}.weight"]
        ours[f"mapping.fc{i}.weight"] = w * (lr_mlp / math.sqrt(w.shape[1]))
        ours[f"mapping.fc{i}.bias"] = state[f"style.{i + 1}.bias"] * lr_mlp
    ours["mapping.w_avg"] = (latent_avg.reshape(-1) if latent_avg is not None
                             else torch.zeros(cfg["w_dim"]))
    ours["synthesis.b4.const"] = state["input.input"][0]
    wgain = 1 / math.sqrt(cfg["w_dim"])
    sources = [("conv1", "synthesis.b4.conv1", False)]
    for j in range(len(cfg["channels"]) - 1):
        r = 8 * 2 ** j
        sources += [(f"convs.{2 * j}", f"synthesis.b{r}.conv0", True),
                    (f"convs.{2 * j + 1}", f"synthesis.b{r}.conv1", False)]
    for i, (src, dst, up) in enumerate(sources):
        w = state[f"{src}.conv.weight"][0]  # (C_out, C_in, 3, 3)
        w = w / math.sqrt(w.shape[1] * 9)
        ours[f"{dst}.conv.weight"] = w.transpose(0, 1) if up else w
        _affine(ours, state, dst, f"{src}.conv.modulation.weight",
                f"{src}.conv.modulation.bias", wgain)
        ours[f"{dst}.bias"] = state[f"{src}.activate.bias"]
        ours[f"{dst}.noise_strength"] = state[f"{src}.noise.weight"].reshape(())
        ours[f"{dst}.noise"] = state.get(f"noises.noise_{i}")
    rgbs = [("to_rgb1", "synthesis.b4.torgb")] + [
        (f"to_rgbs.{j}", f"synthesis.b{8 * 2 ** j}.torgb") for j in range(len(cfg["channels"]) - 1)]
    for src, dst in rgbs:
        w = state[f"{src}.conv.weight"][0]  # (3, C_in, 1, 1)
        ours[f"{dst}.weight"] = w / math.sqrt(w.shape[1])
        _affine(ours, state, dst, f"{src}.conv.modulation.weight",
                f"{src}.conv.modulation.bias", wgain)
        ours[f"{dst}.bias"] = state[f"{src}.bias"].reshape(3)
    absent = [k for k, v in ours.items() if v is None]
    for k in absent:  # noise buffers are registered by rosinality's Generator; fill if dropped
        del ours[k]
    if absent:
        seeded_noise(net)
        ours.update({k: v for k, v in net.state_dict().items() if k in absent})
    _load_into(net, ours, "rosinality checkpoint")
    return net


def from_nvidia(class_name: str, init_kwargs: Mapping, state: Mapping[str, torch.Tensor]
                ) -> StyleGAN2Generator:
    """Our network from an NVIDIA G_ema record (class name, constructor kwargs, tensors).

    The record names its class only by its bare name ("Generator" in both stylegan2-ada-pytorch
    and stylegan3), so the layout tells them apart: StyleGAN3's synthesis has ``input.*`` and
    ``L0_…`` layers where StyleGAN2's has ``b4.const``."""
    if "synthesis.b4.const" not in state:
        sg3 = "synthesis.input.freqs" in state or any(k.startswith("synthesis.L0_") for k in state)
        kind = "StyleGAN3 (alias-free) synthesis network" if sg3 else \
            f"{class_name} without synthesis.b4.const"
        raise RewriteError(f"This NVIDIA snapshot holds a {kind}, which is not supported "
                           "(rewidget has the StyleGAN2 generator only).",
                           "pass a StyleGAN2(-ADA) snapshot (stylegan2-ada-pytorch, or "
                           "stylegan3's --cfg=stylegan2).")
    kw = dict(init_kwargs)
    syn, mkw = dict(kw.get("synthesis_kwargs") or {}), dict(kw.get("mapping_kwargs") or {})
    arch = syn.get("architecture", "skip")
    if arch != "skip":
        raise RewriteError(f"This StyleGAN2 uses the {arch!r} synthesis architecture; rewidget "
                           "supports 'skip' only (configs e and f).",
                           "pass a snapshot trained with architecture='skip'.")
    if int(kw.get("c_dim") or 0) or int(kw.get("img_channels", 3)) != 3:
        raise RewriteError("Class-conditional or non-RGB StyleGAN2 generators are not supported "
                           f"(c_dim={kw.get('c_dim')}, img_channels={kw.get('img_channels')}).",
                           "pass an unconditional RGB generator.")
    res, z_dim, w_dim = int(kw["img_resolution"]), int(kw["z_dim"]), int(kw["w_dim"])
    channels = nvidia_channels(res, int(syn.get("channel_base", 32768)),
                               int(syn.get("channel_max", 512)))
    layers, lr = int(mkw.get("num_layers", 8)), float(mkw.get("lr_multiplier", 0.01))
    clamp = syn.get("conv_clamp")
    net = StyleGAN2Generator(res, channels, z_dim, w_dim, layers,
                             None if clamp is None else float(clamp))
    ours: dict[str, torch.Tensor] = {}
    for i in range(layers):
        w = state[f"mapping.fc{i}.weight"]
        ours[f"mapping.fc{i}.weight"] = w * (lr / math.sqrt(w.shape[1]))
        ours[f"mapping.fc{i}.bias"] = state[f"mapping.fc{i}.bias"] * lr
    ours["mapping.w_avg"] = state.get("mapping.w_avg", torch.zeros(w_dim))
    ours["synthesis.b4.const"] = state["synthesis.b4.const"]
    wgain = 1 / math.sqrt(w_dim)
    for r in channels:
        names = ["conv1"] if r == 4 else ["conv0", "conv1"]
        for name in names:
            src = dst = f"synthesis.b{r}.{name}"
            w = state[f"{src}.weight"]  # (C_out, C_in, 3, 3), no gain
            ours[f"{dst}.conv.weight"] = w.transpose(0, 1) if name == "conv0" else w
            _affine(ours, state, dst, f"{src}.affine.weight", f"{src}.affine.bias", wgain)
            ours[f"{dst}.bias"] = state[f"{src}.bias"]
            noise = state.get(f"{src}.noise_const")
            ours[f"{dst}.noise_strength"] = state.get(f"{src}.noise_strength", torch.zeros(()))
            ours[f"{dst}.noise"] = (torch.zeros(1, 1, r, r) if noise is None
                                    else noise.reshape(1, 1, r, r))
        src = dst = f"synthesis.b{r}.torgb"
        w = state[f"{src}.weight"]
        ours[f"{dst}.weight"] = w / math.sqrt(w.shape[1] * w.shape[2] * w.shape[3])
        _affine(ours, state, dst, f"{src}.affine.weight", f"{src}.affine.bias", wgain)
        ours[f"{dst}.bias"] = state[f"{src}.bias"]
    _load_into(net, ours, f"NVIDIA {class_name}")
    return net
