"""Edit requests as data: what the user selected, saved as JSON and replayed exactly.

    req = EditRequest(kind="paste", layer="main.6", rank=1, solver="exact", model="dcgan-faces",
                      context=(Selection(Sample(3), ctx_mask),),
                      copy=Selection(Sample(5), obj_mask), paste=Paste(Sample(3), (4, -2)),
                      more_pastes=((Selection(Sample(5), obj_mask), Paste(Sample(7), (0, 3))),))
    req.pastes                                 # [(copy, paste), ...]: every goal of the edit
    text = req.to_json()                       # masks as PNG data URLs, latents by seed or value
    assert EditRequest.from_json(text) == req  # same masks bit for bit, same weights on replay

    req = from_paper_json(saved, latents=z, layer="main.6", model="dcgan-faces")
        # the paper tool's {"key": [[imgnum, dataURL], ...], "object": [...], "paste": [...]}

Masks are uint8 arrays; any float or bool mask is quantised once, when the request is built.
Everything is validated when built or loaded: a seed is an int in [0, 2**64), a latent one
finite real tensor (copied, so later changes to the caller's tensor do not reach it), an offset
two finite numbers (not a string), solver options within solve.check_solver_options' bounds,
and a request text at most MAX_REQUEST_CHARS long.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .directions import DEFAULT_RULE, check_rule
from .errors import RewriteError, as_real_tensor, check_int, check_real
from .masks import as_mask, bounding_box, mask_at, mask_from_data_url, mask_to_data_url
from .solve import check_solver_options

FORMAT = "rewidget.edit-request/1"
SOLVERS = ("exact", "iterative", "output")
KINDS = ("paste", "erase")
LEGACY_RULE = "cinv"  # the direction rule of requests saved without a "direction_rule" field
SEED_LIMIT = 2**64  # torch seeds its generators with 64 bits: seeds are in [0, 2**64)
MAX_LATENT_ELEMENTS = 1 << 20  # one sample's latent (StyleGAN's W+ is 18×512)
MAX_REQUEST_CHARS = 64 << 20  # a request's JSON text
MAX_OFFSET = 1e6  # |dx|, |dy| in image pixels
MAX_STATS_SAMPLES = 1_000_000


@dataclass(frozen=True, eq=False)
class Sample:
    """One generated image: by integer seed, or by an explicit latent (e.g. from an inversion)."""

    seed: int | None = None
    latent: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.seed is None) == (self.latent is None):
            raise RewriteError("A sample needs exactly one of a seed or a latent.",
                               "pass Sample(seed) or Sample(latent=z).")
        if self.seed is not None:
            seed = self.seed
            if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
                raise RewriteError(f"Seed {seed!r} is not an integer.", "pass an int seed.")
            if not 0 <= int(seed) < SEED_LIMIT:
                raise RewriteError(f"Seed {int(seed)} is outside [0, 2**64).",
                                   "pass a non-negative seed below 2**64.")
            object.__setattr__(self, "seed", int(seed))
        if self.latent is not None:
            lat = as_real_tensor(self.latent, "the latent", "pass a float tensor, e.g. "
                                 "gen.latents([seed])[0].", MAX_LATENT_ELEMENTS)
            if lat.numel() == 0:
                raise RewriteError("The latent is empty.", "pass one sample's latent.")
            # a copy: the caller may reuse its tensor for another sample afterwards
            lat = lat.detach().to("cpu", torch.float32, copy=True)
            if not bool(torch.isfinite(lat).all()):
                raise RewriteError("The latent contains NaN or Inf.", "pass a finite latent.")
            object.__setattr__(self, "latent", lat)

    @classmethod
    def of(cls, ref: Any) -> Sample:
        if isinstance(ref, Sample):
            return ref
        if isinstance(ref, torch.Tensor) or (isinstance(ref, np.ndarray) and ref.ndim > 0):
            return cls(latent=ref)
        if isinstance(ref, np.ndarray):  # a 0-d array: a seed if it holds an integer
            ref = ref.item()
        return cls(seed=ref)  # __post_init__ refuses bools, floats, strings, None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sample):
            return NotImplemented
        if self.seed is not None or other.seed is not None:
            return self.seed == other.seed
        return torch.equal(self.latent, other.latent)

    def __hash__(self) -> int:
        return hash(self.seed) if self.seed is not None else hash(self.latent.numpy().tobytes())

    def label(self) -> str:
        return f"seed {self.seed}" if self.seed is not None else "latent"

    def to_json(self) -> dict:
        if self.seed is not None:
            return {"seed": int(self.seed)}
        return {"latent": {"shape": list(self.latent.shape),
                           "float32_base64": base64.b64encode(self.latent.numpy().tobytes()).decode()}}

    @classmethod
    def from_json(cls, obj: Any) -> Sample:
        if isinstance(obj, dict) and "seed" in obj:
            return cls(seed=_typed(obj["seed"], int, "sample seed"))
        if isinstance(obj, dict) and isinstance(obj.get("latent"), dict):
            lat = obj["latent"]
            try:
                raw = base64.b64decode(lat["float32_base64"], validate=True)
                shape = [check_int(d, "a latent dimension", 1, MAX_LATENT_ELEMENTS)
                         for d in lat["shape"]]
                arr = np.frombuffer(raw, dtype=np.float32).reshape(shape)
            except Exception as e:  # noqa: BLE001 - any malformed entry
                raise RewriteError(f"A latent in the request could not be decoded ({e}).",
                                   "save the request again with rewidget.") from e
            return cls(latent=torch.from_numpy(arr.copy()))
        raise RewriteError(f"A sample in the request is {obj!r}; expected {{'seed': int}} or "
                           "{'latent': {...}}.", "fix or re-save the request file.")


@dataclass(frozen=True, eq=False)
class Selection:
    """A painted region on one sample."""

    sample: Sample
    mask: np.ndarray  # (H, W) uint8

    def __post_init__(self) -> None:
        object.__setattr__(self, "sample", Sample.of(self.sample))
        object.__setattr__(self, "mask", as_mask(self.mask))

    def with_mask(self, mask: np.ndarray) -> Selection:
        return Selection(self.sample, mask)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Selection) and self.sample == other.sample
                and np.array_equal(self.mask, other.mask))

    def to_json(self) -> dict:
        return {"sample": self.sample.to_json(), "mask": mask_to_data_url(self.mask)}

    @classmethod
    def from_json(cls, obj: Any, what: str) -> Selection:
        if not isinstance(obj, dict) or "sample" not in obj or "mask" not in obj:
            raise RewriteError(f"The {what} entry must be {{'sample': ..., 'mask': dataURL}}.",
                               "fix or re-save the request file.")
        return cls(Sample.from_json(obj["sample"]), mask_from_data_url(obj["mask"], what))


@dataclass(frozen=True, eq=False)
class Paste:
    """Where the copied region goes: a target sample and an offset (dx, dy) in image pixels."""

    sample: Sample
    offset: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sample", Sample.of(self.sample))
        off, fix = self.offset, "pass offset=(dx, dy) in image pixels."
        try:
            if isinstance(off, (str, bytes, dict)) or len(off) != 2:
                raise TypeError("not a pair")
            vals = list(off)
        except TypeError as e:
            raise RewriteError(f"The paste offset {off!r} is not two numbers (dx, dy).",
                               fix) from e
        for v in vals:
            if isinstance(v, (float, np.floating)) and not np.isfinite(v):
                raise RewriteError("The paste offset is NaN or Inf.", "pass finite (dx, dy).")
        dx, dy = (check_real(v, "the paste offset", -MAX_OFFSET, MAX_OFFSET, fix=fix)
                  for v in vals)
        object.__setattr__(self, "offset", (dx, dy))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Paste) and self.sample == other.sample and self.offset == other.offset


@dataclass(frozen=True, eq=False)
class EditRequest:
    """Everything that determines an edit (given the model and its key statistics)."""

    layer: str
    model: str = ""
    kind: str = "paste"
    rank: int = 1
    solver: str = "exact"
    context: tuple[Selection, ...] = ()
    copy: Selection | None = None
    paste: Paste | None = None
    stats_samples: int = 10_000
    solver_options: dict = field(default_factory=dict)
    #: further (copy, paste) goals solved together with the first: the same rule taught on
    #: several examples (e.g. a crown pasted on roofs in three images) generalises better
    more_pastes: tuple[tuple[Selection, Paste], ...] = ()
    #: how D is chosen from the context keys (directions.RULES); a file saved before this field
    #: existed loads as "cinv", the rule it was solved with, so it replays identically
    direction_rule: str = DEFAULT_RULE
    #: painted regions whose output must not change: D is kept orthogonal to their keys
    keep: tuple[Selection, ...] = ()
    #: share (0 ≤ p < 1) of the energy of automatically sampled keys where the context does not
    #: fire that D is kept orthogonal to (0: off); see edits.protected_keys
    protect: float = 0.0
    #: a replacing paste: on each paste target, the context object the copy lands on is filled
    #: from its surroundings first, so the part the copy does not cover goes too (roof → crown
    #: leaves sky beside the crown, not roof); see targets.paste_target
    replace: bool = False

    def __post_init__(self) -> None:
        for name in ("layer", "model", "kind", "solver", "direction_rule"):
            if not isinstance(getattr(self, name), str):
                raise RewriteError(f"The request's {name} is {getattr(self, name)!r}; expected "
                                   "a string.", f"pass {name} as a str.")
        for name in ("context", "keep", "more_pastes"):
            if isinstance(getattr(self, name), (str, bytes, dict, Selection)):
                raise RewriteError(f"The request's {name} must be a sequence, not "
                                   f"{type(getattr(self, name)).__name__}.",
                                   f"pass {name}=(...,) (a tuple or list).")
        object.__setattr__(self, "context", tuple(self.context))
        object.__setattr__(self, "keep", tuple(self.keep))
        for c in self.context:
            if not isinstance(c, Selection):
                raise RewriteError(f"A context entry must be a Selection, not {c!r}.",
                                   "pass context=(Selection(sample, mask), ...).")
        if self.copy is not None and not isinstance(self.copy, Selection):
            raise RewriteError(f"The copy must be a Selection, not {self.copy!r}.",
                               "pass copy=Selection(sample, mask).")
        if self.paste is not None and not isinstance(self.paste, Paste):
            raise RewriteError(f"The paste must be a Paste, not {self.paste!r}.",
                               "pass paste=Paste(sample, (dx, dy)).")
        for k in self.keep:
            if not isinstance(k, Selection):
                raise RewriteError(f"A keep region must be a Selection, not {k!r}.",
                                   "pass keep=(Selection(sample, mask), ...).")
        n = self.stats_samples
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) \
                or not 1 <= n <= MAX_STATS_SAMPLES:
            raise RewriteError(f"The request's stats_samples {n!r} is not a sample count "
                               f"(1 to {MAX_STATS_SAMPLES:,}).",
                               "record a positive int (session.samples_for(layer)).")
        if not isinstance(self.solver_options, dict):
            raise RewriteError(f"The request's solver_options is {self.solver_options!r}; "
                               "expected a dict.", "pass e.g. solver_options={'ridge': 0.1}.")
        check_rule(self.direction_rule)
        if isinstance(self.protect, bool) or not isinstance(self.protect, (int, float)) \
                or not 0 <= self.protect < 1:
            raise RewriteError(f"protect={self.protect!r} is not a share in [0, 1).",
                               "pass protect=0 (off) or e.g. 0.9.")
        if not isinstance(self.replace, (bool, np.bool_)):
            raise RewriteError(f"replace={self.replace!r} is not True or False.",
                               "pass replace=True (the paste replaces the context it lands on) "
                               "or False.")
        object.__setattr__(self, "replace", bool(self.replace))
        if self.replace and self.kind != "paste":
            raise RewriteError(f"A {self.kind} edit has no paste to replace the context with.",
                               "drop replace=True, or make it a paste edit.")
        pairs = tuple(tuple(p) if isinstance(p, (tuple, list)) else p for p in self.more_pastes)
        for p in pairs:
            if not (isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], Selection)
                    and isinstance(p[1], Paste)):
                raise RewriteError(f"A further paste must be a (Selection, Paste) pair, not {p!r}.",
                                   "pass more_pastes=((Selection(sample, mask), Paste(sample, "
                                   "(dx, dy))), ...).")
        object.__setattr__(self, "more_pastes", pairs)
        if pairs and self.kind != "paste":
            raise RewriteError(f"A {self.kind} edit has no pastes, but more_pastes has {len(pairs)}.",
                               "drop more_pastes, or make it a paste edit.")
        if self.kind not in KINDS:
            raise RewriteError(f"Unknown edit kind {self.kind!r}.", f"use one of {KINDS}.")
        if self.solver not in SOLVERS:
            raise RewriteError(f"Unknown solver {self.solver!r}.", f"use one of {SOLVERS}.")
        if not isinstance(self.rank, (int, np.integer)) or isinstance(self.rank, bool) or self.rank < 1:
            raise RewriteError(f"Rank {self.rank!r} is not a positive integer.",
                               "use rank=1 (or a small integer such as 2-3).")
        check_solver_options(self.solver, self.solver_options)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EditRequest) and self.to_dict() == other.to_dict()

    def validate_complete(self) -> None:
        """Raise a RewriteError naming the first missing selection."""
        if not self.context:
            raise RewriteError("No context is selected.",
                               "paint the context (where the rule applies) on one or more samples.")
        if self.kind == "paste":
            if self.copy is None:
                raise RewriteError("Nothing is copied.", "paint the object to copy with the copy tool.")
            if self.paste is None and not self.more_pastes:
                raise RewriteError("The copy has not been pasted.",
                                   "choose a target sample and place the pasted patch on it.")

    def context_on(self, sample: Sample) -> np.ndarray | None:
        """The union (max) of the context masks painted on ``sample``, or None."""
        masks = [c.mask for c in self.context if c.sample == sample]
        return np.maximum.reduce(masks) if masks else None

    @property
    def pastes(self) -> list[tuple[Selection, Paste]]:
        """Every (copy, paste) goal: the first pair, then ``more_pastes``."""
        first = [(self.copy, self.paste)] if self.copy is not None and self.paste is not None else []
        return first + list(self.more_pastes)

    def to_dict(self) -> dict:
        out = {
            "format": FORMAT, "model": self.model, "kind": self.kind, "layer": self.layer,
            "rank": int(self.rank), "solver": self.solver, "direction_rule": self.direction_rule,
            "stats_samples": int(self.stats_samples),
            "solver_options": dict(self.solver_options),
            "context": [s.to_json() for s in self.context],
            "copy": self.copy.to_json() if self.copy else None,
            "paste": _paste_json(self.paste) if self.paste else None,
        }
        if self.keep:  # keep and protect likewise only when used
            out["keep"] = [k.to_json() for k in self.keep]
        if self.protect:
            out["protect"] = float(self.protect)
        if self.replace:
            out["replace"] = True
        if self.more_pastes:  # only when used: requests without it keep their exact old form
            out["more_pastes"] = [{"copy": c.to_json(), "paste": _paste_json(p)}
                                  for c, p in self.more_pastes]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str | dict) -> EditRequest:
        if isinstance(text, (str, bytes)) and len(text) > MAX_REQUEST_CHARS:
            raise RewriteError(f"The edit request is {len(text):,} characters; at most "
                               f"{MAX_REQUEST_CHARS:,} are read.",
                               "load a file saved by session.save_request().")
        try:
            obj = json.loads(text) if isinstance(text, (str, bytes)) else text
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
            raise RewriteError(f"The edit request is not valid JSON text ({e}).",
                               "load a file saved by session.save_request().") from e
        if not isinstance(obj, dict):
            raise RewriteError("The edit request must be a JSON object.",
                               "load a file saved by session.save_request().")
        if obj.get("format") != FORMAT:
            if {"key", "object", "paste"} & set(obj):
                raise RewriteError("This looks like a request saved by the paper's tool.",
                                   "import it with rewidget.core.requests.from_paper_json(obj, latents=...).")
            raise RewriteError(f"Unknown request format {obj.get('format')!r}; expected {FORMAT!r}.",
                               "load a file saved by session.save_request().")
        paste = obj.get("paste")
        more = []
        for i, entry in enumerate(_typed(obj.get("more_pastes", []), list, "more_pastes")):
            if not (isinstance(entry, dict) and entry.get("copy") and entry.get("paste")):
                raise RewriteError(f"more_pastes[{i}] must be {{'copy': ..., 'paste': ...}}.",
                                   "fix or re-save the request file.")
            more.append((Selection.from_json(entry["copy"], f"more_pastes[{i}] copy"),
                         _paste_from_json(entry["paste"])))
        return cls(
            layer=_typed(obj.get("layer"), str, "layer"),
            model=_typed(obj.get("model", ""), str, "model"),
            kind=_typed(obj.get("kind", "paste"), str, "kind"),
            rank=_typed(obj.get("rank", 1), int, "rank"),
            solver=_typed(obj.get("solver", "exact"), str, "solver"),
            direction_rule=_typed(obj.get("direction_rule", LEGACY_RULE), str, "direction_rule"),
            stats_samples=_typed(obj.get("stats_samples", 10_000), int, "stats_samples"),
            solver_options=_typed(obj.get("solver_options", {}), dict, "solver_options"),
            context=tuple(Selection.from_json(c, "context")
                          for c in _typed(obj.get("context", []), list, "context")),
            copy=Selection.from_json(obj["copy"], "copy") if obj.get("copy") else None,
            paste=_paste_from_json(paste) if paste is not None else None,
            more_pastes=tuple(more),
            keep=tuple(Selection.from_json(k, "keep")
                       for k in _typed(obj.get("keep", []), list, "keep")),
            protect=_typed(obj.get("protect", 0.0), (int, float), "protect"),
            replace=_typed(obj.get("replace", False), bool, "replace"),
        )


def _paste_json(p: Paste) -> dict:
    return {"sample": p.sample.to_json(), "offset": list(p.offset)}


def _paste_from_json(obj: Any) -> Paste:
    if not (isinstance(obj, dict) and "sample" in obj):
        raise RewriteError("A paste in the request must be {'sample': ..., 'offset': [dx, dy]}.",
                           "fix or re-save the request file.")
    offset = _typed(obj.get("offset", [0, 0]), list, "paste offset")
    return Paste(Sample.from_json(obj["sample"]), tuple(offset))


def _typed(value: Any, typ: type | tuple[type, ...], what: str) -> Any:
    types = typ if isinstance(typ, tuple) else (typ,)
    if not isinstance(value, types) or (int in types and isinstance(value, bool)):
        names = " or ".join(t.__name__ for t in types)
        raise RewriteError(f"The request's {what} is {value!r}; expected {names}.",
                           "fix or re-save the request file.")
    return value


def from_paper_json(obj: dict | str, latents: torch.Tensor, layer: str, model: str = "",
                    image_size: int = 64, rank: int = 1, solver: str = "exact",
                    stats_samples: int = 10_000, direction_rule: str = DEFAULT_RULE) -> EditRequest:
    """Import a request saved by the paper's rewriting tool.

    ``latents[imgnum]`` must be the latent its image numbers refer to. Masks may be any size;
    they are resized to ``image_size``. The paste offset is the shift between the bounding-box
    centres of the object mask and the paste mask.
    """
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as e:
            raise RewriteError(f"The paper-tool request is not valid JSON ({e}).",
                               "pass the file's JSON text or the parsed dict.") from e
    if not isinstance(obj, dict) or not all(k in obj for k in ("key", "object", "paste")):
        raise RewriteError("A paper-tool request needs 'key', 'object' and 'paste' entries.",
                           "pass the JSON the paper's tool saved.")
    lat = as_real_tensor(latents, "the paper-tool request's latents",
                         "pass the latents its image numbers refer to, e.g. gen.latents(range(n)).")
    if lat.dim() < 2:
        raise RewriteError(f"The paper-tool latents have shape {tuple(lat.shape)}; expected "
                           "(N, *latent_shape), one per image number.",
                           "pass the latents as a batch, e.g. gen.latents(range(n)).")
    image_size = check_int(image_size, "the image size", 1, 4096)
    for k in ("key", "object", "paste"):
        want = list if k == "key" else (list, tuple)
        if not isinstance(obj[k], want):
            raise RewriteError(f"The paper-tool request's {k!r} entry is "
                               f"{type(obj[k]).__name__}.", "pass the JSON the paper's tool saved.")

    def entry(pair, what):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], int)
                and not isinstance(pair[0], bool)):
            raise RewriteError(f"The paper-tool {what} entry must be [imgnum, dataURL].",
                               "fix the file.")
        num, url = pair
        if not 0 <= num < lat.shape[0]:
            raise RewriteError(f"The paper-tool {what} refers to image {num}, but only "
                               f"{lat.shape[0]} latents were given.",
                               "pass the latents of every image the request refers to.")
        m = mask_from_data_url(url, f"paper-tool {what} mask")
        m = np.rint(mask_at(m, (image_size, image_size)).numpy() * 255).astype(np.uint8)
        return Sample(latent=lat[num]), m

    context = tuple(Selection(*entry(p, "key")) for p in obj["key"])
    src, obj_mask = entry(obj["object"], "object")
    dst, paste_mask = entry(obj["paste"], "paste")
    ox0, oy0, ox1, oy1 = bounding_box(as_mask(obj_mask, "paper-tool object mask"))
    px0, py0, px1, py1 = bounding_box(as_mask(paste_mask, "paper-tool paste mask"))
    offset = ((px0 + px1 - ox0 - ox1) / 2, (py0 + py1 - oy0 - oy1) / 2)
    return EditRequest(layer=layer, model=model, kind="paste", rank=rank, solver=solver,
                       direction_rule=direction_rule, stats_samples=stats_samples, context=context, copy=Selection(src, obj_mask), paste=Paste(dst, offset))
