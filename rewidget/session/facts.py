"""A text edit as data: the facts to rewrite and every setting that changes the result.

    fact = Fact("The Eiffel Tower is located in the city of", "The Eiffel Tower", " Rome",
                old=" Paris")
    req = FactRequest(layer="layers.4.mlp.down_proj", facts=(fact,), model="smollm2")
    text = req.to_json()                       # what save_request writes
    assert FactRequest.from_json(text) == req  # replays identically

A fact is (prompt, subject, target): the subject must occur in the prompt, and the target is
the text that should follow the prompt after the edit. The keys of the edit are read at the
subject's last token (what the layer knows about the subject), and the values are found so the
model continues the prompt with the target (see text.py). Every option is recorded with its
value, so a request saved today replays bit for bit even if defaults change later.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..core.directions import DEFAULT_RULE, check_rule
from ..core.errors import RewriteError

FORMAT = "rewidget.fact-request/1"

#: text put before the prompt when reading the subject's key and when finding the new value, so
#: the edit holds wherever the subject appears, not only at the start of a text (ROME averages
#: over prefixes in the same way). Recorded in every request. Four: on 36 facts at layer 6 the
#: six used before ("From the encyclopedia: ", "Let me tell you something. " too) scored the same
#: (efficacy / paraphrase / neighbourhood 100 / 94 / 97% both, essence KL 0.92 / 0.91) and each
#: step of the v* search cost a third more (benchmarks/results/text_edits.md, the options grid)
PREFIXES = ("", "Here is a fact. ", "I read this in the newspaper. ", "Question: what is true? ")
#: the six prefixes of the defaults before (requests saved then record them and replay with them)
SIX_PREFIXES = PREFIXES + ("From the encyclopedia: ", "Let me tell you something. ")
#: prompts about the subject's other properties; the change of the model's next-token
#: distribution there is penalised while the new value is found (the essence-drift guard)
ESSENCE = ("{} is a",)

#: how each fact's keys enter the solve. "mean": ROME's k*, the mean over all prefixes (one
#: row, rank 1). "split": two rows, the subject's key in the prompt as typed (the first prefix,
#: "") and the mean over the other prefixes, each with v = Wk + δ, rank 2 per fact. When the
#: subject opens the prompt its key there is the text's first token, unlike the same subject
#: after any prefix, and the mean key missed it: on 8 facts at layer 6, efficacy 4/8 with
#: "mean", 8/8 with "split" (paraphrases 27 → 30 of 32, neighbours 30/31 both). "wide"
#: (default): those rows and the subject's key opening a text ("France's capital city is"),
#: unless the prompt already opens with it, rank 3 per fact. With the document start
#: (document_start), 36 facts at layer 6: paraphrase 94% (benchmarks/results/text_edits.md; 72%
#: with "split" and no document start, on the 36 facts known then). On the 20 facts whose
#: prompts end with the subject: "split" 50%, with the document start 60%, "wide" too 79%;
#: without the document start the opening key is the attention sink's ("wide" alone: 60%)
KEY_MODES = ("split", "mean", "wide")

#: how v* is found (text.py: TextRewriteSession.value_shift), with ROME's defaults where they
#: exist: 20 Adam steps on δ, KL weight 0.0625, weight decay 0.5 on ‖δ‖²/‖v‖², ‖δ‖ ≤ 4‖v‖;
#: lr 0.75, not ROME's 0.5: the search stops when p(target) ≥ 0.95 (stop_loss), and stops
#: sooner (36 facts with the four prefixes: 100 / 96 / 95%, KL 0.97, against 100 / 94 / 97%,
#: 0.91 at 0.5; an edit 1.2× faster);
#: the KL covers each essence prompt's next token and the model's own next essence_tokens
#: opening 1 (key_mode "wide" only): the search also rewrites the prompt after the subject
#: opening a text (text.WIDE_OPENING), so δ at a first token carries the new object too
VALUE_OPTIONS = {"steps": 20, "lr": 0.75, "kl": 0.0625, "decay": 0.5, "clamp": 4.0,
                 "stop_loss": 0.05, "essence_tokens": 6, "opening": 0}


@dataclass(frozen=True)
class Fact:
    prompt: str  # "The Eiffel Tower is located in the city of"
    subject: str  # "The Eiffel Tower": occurs in the prompt
    target: str  # " Rome": what should follow the prompt after the edit
    old: str = ""  # " Paris": what followed before (for reports; found by the session if empty)

    def __post_init__(self) -> None:
        for name in ("prompt", "subject", "target", "old"):
            if not isinstance(getattr(self, name), str):
                raise RewriteError(f"The fact's {name} is {type(getattr(self, name)).__name__}, "
                                   "not text.", f"pass the {name} as a str.")
        if not self.prompt.strip():
            raise RewriteError("The prompt is empty.",
                               "type a prompt that mentions the subject, e.g. 'The Eiffel Tower "
                               "is located in the city of'.")
        if not self.subject.strip():
            raise RewriteError("The subject is empty.",
                               "name the subject as it appears in the prompt (or click its "
                               "tokens in the app).")
        if self.subject not in self.prompt:
            raise RewriteError(f"The subject {self.subject!r} does not occur in the prompt "
                               f"{self.prompt!r}.",
                               "type the subject exactly as it appears in the prompt (case and "
                               "spaces matter).")
        if self.prompt != self.prompt.rstrip():
            raise RewriteError(f"The prompt {self.prompt!r} ends with whitespace, which the "
                               "tokenizer would read as a token of its own.",
                               "drop the trailing space; put the space at the start of the "
                               "target instead (' Rome').")
        if not self.target.strip():
            raise RewriteError("The new target is empty.",
                               "type the text the prompt should continue with, e.g. ' Rome'.")

    @property
    def opens_with_subject(self) -> bool:
        """The prompt opens with the subject: its key there is the subject's key at a text's
        start (causal attention)."""
        return self.prompt.startswith(self.subject)

    @property
    def subject_end(self) -> int:
        """Character index just after the subject's first occurrence in the prompt."""
        return self.prompt.index(self.subject) + len(self.subject)

    def with_space(self) -> Fact:
        """The target (and old) with a leading space when the prompt needs one before it."""
        def spaced(t: str) -> str:
            return t if not t or t[0].isspace() else " " + t
        return Fact(self.prompt, self.subject, spaced(self.target), spaced(self.old))


def _number(value: Any, name: str, low: float, high: float, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RewriteError(f"{name}={value!r} is not a finite number.",
                           f"pass a number between {low:g} and {high:g}.")
    if not low <= value <= high:
        raise RewriteError(f"{name}={value!r} is outside [{low:g}, {high:g}].",
                           f"pass a number between {low:g} and {high:g}.")
    if integer and int(value) != value:
        raise RewriteError(f"{name}={value!r} is not a whole number.", f"pass an int for {name}.")
    return int(value) if integer else float(value)


#: bounds of the value options: wide enough for any sensible setting, tight enough that a
#: typo (steps=10**9) cannot make one edit run for hours
_VALUE_BOUNDS = {"steps": (1, 500, True), "lr": (1e-5, 10.0, False), "kl": (0.0, 100.0, False),
                 "decay": (0.0, 100.0, False), "clamp": (0.01, 100.0, False),
                 "stop_loss": (0.0, 10.0, False), "essence_tokens": (0, 32, True),
                 "opening": (0, 1, True)}


@dataclass(frozen=True)
class FactRequest:
    layer: str
    facts: tuple[Fact, ...]
    model: str = ""
    rank: int = 0  # 0: one direction per key row (KEY_ROWS[key_mode] per fact)
    direction_rule: str = DEFAULT_RULE
    ridge: float = 1e-3  # the exact solve's ridge, relative to the mean diagonal of AᵀA
    stats_samples: int = 0  # statistics chunks C was collected over (0: the session's default)
    value_options: dict = field(default_factory=lambda: dict(VALUE_OPTIONS))
    prefixes: tuple[str, ...] = PREFIXES
    essence: tuple[str, ...] = ESSENCE
    key_mode: str = "wide"
    #: keys and v* read every text after the model's document start (TextModel.prompt_ids);
    #: a request saved before this field existed replays without it, as it was computed
    document_start: bool = True
    kind: str = "fact"

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise RewriteError(f"layer={self.layer!r} is not a layer name.",
                               "name an editable layer, e.g. 'layers.4.mlp.down_proj'.")
        facts = self.facts
        if isinstance(facts, Fact):
            facts = (facts,)
        if not isinstance(facts, (tuple, list)) or not facts:
            raise RewriteError("The request has no fact to rewrite.",
                               "give at least one Fact(prompt, subject, target).")
        facts = tuple(Fact(**f) if isinstance(f, dict) else f for f in facts)
        if not all(isinstance(f, Fact) for f in facts):
            raise RewriteError("facts must be Fact objects.",
                               "build them with Fact(prompt, subject, target).")
        object.__setattr__(self, "facts", tuple(f.with_space() for f in facts))
        object.__setattr__(self, "rank", int(_number(self.rank, "rank", 0, 4096, True)))
        if self.key_mode not in KEY_MODES:
            raise RewriteError(f"Unknown key_mode {self.key_mode!r}.",
                               f"use one of {KEY_MODES} ('wide' is the default).")
        check_rule(self.direction_rule)
        object.__setattr__(self, "ridge", _number(self.ridge, "ridge", 0.0, 1e3))
        object.__setattr__(self, "stats_samples",
                           int(_number(self.stats_samples, "stats_samples", 0, 10**6, True)))
        if not isinstance(self.value_options, dict):
            raise RewriteError("value_options must be a dict.", f"e.g. {VALUE_OPTIONS}.")
        opts = {**VALUE_OPTIONS, **self.value_options}
        for k in opts:
            if k not in _VALUE_BOUNDS:
                raise RewriteError(f"Unknown value option {k!r}.",
                                   f"use only {sorted(VALUE_OPTIONS)}.")
            lo, hi, integer = _VALUE_BOUNDS[k]
            opts[k] = _number(opts[k], k, lo, hi, integer)
        object.__setattr__(self, "value_options", opts)
        for name in ("prefixes", "essence"):
            items = getattr(self, name)
            if isinstance(items, str) or not all(isinstance(p, str) for p in items):
                raise RewriteError(f"{name} must be a list of strings.", f"e.g. {PREFIXES[:2]}.")
            object.__setattr__(self, name, tuple(items))
        if not self.prefixes:
            raise RewriteError("prefixes is empty.", "keep at least the empty prefix ''.")
        for e in self.essence:
            if e.count("{}") != 1:
                raise RewriteError(f"The essence prompt {e!r} needs exactly one '{{}}' where the "
                                   "subject goes.", "e.g. '{} is a'.")
        if self.rank > self.key_rows:
            raise RewriteError(f"Rank {self.rank} needs at least {self.rank} key rows; the request "
                               f"has {self.key_rows} ({len(self.facts)} facts, key_mode "
                               f"{self.key_mode!r}).",
                               "lower the rank (0 picks one direction per key row).")
        if not isinstance(self.document_start, bool):
            raise RewriteError(f"document_start={self.document_start!r} is not true or false.",
                               "pass document_start=True (the default) or False.")
        if self.kind != "fact":
            raise RewriteError(f"kind={self.kind!r}: a text request rewrites facts.",
                               "use kind='fact'.")

    @property
    def key_rows(self) -> int:
        """Key rows the solve fits: per fact 1 ("mean"), 2 ("split", with > 1 prefix), or
        "wide": those and the subject opening a text, unless the prompt already opens with it."""
        split = self.key_mode in ("split", "wide") and len(self.prefixes) > 1
        per = 2 if split else 1
        if self.key_mode == "wide":
            return sum(per + (not f.opens_with_subject) for f in self.facts)
        return len(self.facts) * per

    @property
    def effective_rank(self) -> int:
        return self.rank or self.key_rows

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["facts"] = [asdict(f) for f in self.facts]
        d["prefixes"], d["essence"] = list(self.prefixes), list(self.essence)
        return {"format": FORMAT, **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | dict) -> FactRequest:
        try:
            obj = json.loads(text) if isinstance(text, str) else dict(text)
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise RewriteError(f"The request is not valid JSON ({e}).",
                               "load a file written by save_request().") from e
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise RewriteError(f"This is not a rewidget text request (format "
                               f"{obj.get('format') if isinstance(obj, dict) else None!r}).",
                               f"load a file written by TextRewriteSession.save_request() "
                               f"(format {FORMAT!r}).")
        obj = {k: v for k, v in obj.items() if k != "format"}
        obj.setdefault("document_start", False)  # written before it existed: computed without
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise RewriteError(f"The request has unknown fields {unknown}.",
                               "load a file written by this version of rewidget.")
        facts = obj.get("facts")
        if not isinstance(facts, list) or not all(isinstance(f, dict) for f in facts):
            raise RewriteError("The request's facts are not a list of objects.",
                               "load a file written by save_request().")
        try:
            obj["facts"] = tuple(Fact(**f) for f in facts)
        except TypeError as e:
            raise RewriteError(f"A fact in the request has the wrong fields ({e}).",
                               "each fact needs prompt, subject, target (and optionally old).") from e
        return cls(**obj)
