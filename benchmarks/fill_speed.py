"""The output solver's and the replace fill's speed, against their full-width forms, same run.

    python benchmarks/fill_speed.py                 # CPU, one torch thread (as suggest runs)
    python benchmarks/fill_speed.py --repeats 5 --device cuda

Two requests: scenes `roof_to_tree_all` (every roof of 30 samples replaced by a crown, the
flagship) at main.9, rank 20, ridge 1 (its suggested setting), and faces glasses_b pasted on all
three faces (benchmarks/suggest.py) at main.6, rank 10, ridge 1. For each, median of --repeats
(the two forms alternating):
- the replace fill of the layer's values (targets._inpaint, which updates only the hole pixels,
  against targets.inpaint_dense, the whole tensor averaged each iteration; scenes only: faces
  glasses_b does not replace);
- the output solve (through.solve_output, 100 Adam steps from the exact solution): low-rank
  (the edited layer as W₀k + ΛDᵀk) against the full edited layer, with both final losses;
- the whole edit (session.compute_edit) as a user's Rewrite runs it.
Prints a markdown report and writes results/fill_speed.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics as st
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from suggest import glasses_b_on_all  # noqa: E402

from rewidget import RewriteSession, examples  # noqa: E402
from rewidget.core.edits import DEFAULT_OPTIONS, edit_problem  # noqa: E402
from rewidget.core.solve import solve_exact  # noqa: E402
from rewidget.core.targets import _inpaint, inpaint_dense, replace_holes  # noqa: E402
from rewidget.core.through import solve_output  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return st.median(times), out


def pair(fast, slow, repeats: int) -> tuple[float, float, object, object]:
    """Median seconds of ``fast`` and ``slow`` (alternating) and their last results."""
    a, b, ra, rb = [], [], None, None
    for _ in range(repeats):
        t = time.perf_counter()
        ra = fast()
        a.append(time.perf_counter() - t)
        t = time.perf_counter()
        rb = slow()
        b.append(time.perf_counter() - t)
    return st.median(a), st.median(b), ra, rb


def measure(s: RewriteSession, name: str, request, repeats: int) -> list[str]:
    gen = s.gen
    mem_layer = request.layer
    problem = edit_problem(gen, request)
    mem = problem.mem
    lines = [f"## {name} — {mem_layer}, rank {request.rank}, ridge "
             f"{request.solver_options['ridge']:g}", "",
             "| step | fast form | full form | × faster | check |", "|---|---|---|---|---|"]
    if request.replace:
        _, vals, holes = replace_holes(mem, request.pastes, problem.keys_of.__getitem__,
                                       request.context_on, gen.image_size)
        fast, slow, a, b = pair(lambda: _inpaint(vals, holes), lambda: inpaint_dense(vals, holes),
                                repeats)
        lines.append(f"| replace fill of the values {tuple(vals.shape)}, holes "
                     f"{float(holes.float().mean()):.1%} | {fast * 1e3:.0f} ms | "
                     f"{slow * 1e3:.0f} ms | {slow / fast:.1f} | max diff "
                     f"{float((a - b).abs().max()):.1e} |")
    opts = {**DEFAULT_OPTIONS["output"], **request.solver_options}
    goal = problem.output_goal(int(opts["grow"]))
    d, _ = problem.directions(s.inverse(mem_layer), request.rank, request.direction_rule)
    init, _ = solve_exact(mem, d, problem.targets, normal=problem.normal(d), ridge=opts["ridge"])

    def solve(low: bool):
        return solve_output(gen, mem, mem_layer, d, goal, init, int(opts["steps"]), opts["lr"],
                            opts["keep"], low_rank=low)
    fast, slow, (fa, ra), (fb, rb) = pair(lambda: solve(True), lambda: solve(False), repeats)
    lines.append(f"| output solve, {int(opts['steps'])} steps, {goal.keys.shape[0]} goal samples "
                 f"| {fast:.2f} s | {slow:.2f} s | {slow / fast:.2f} | loss "
                 f"{ra['output_l1']['installed']:.5f} vs {rb['output_l1']['installed']:.5f}; "
                 f"Λ differs by {float((fa - fb).norm() / fb.norm()):.1%} |")
    whole, edit = timed(lambda: s.compute_edit(request), repeats)
    lines += ["", f"The whole edit (session.compute_edit, keys → goals → directions → solve): "
              f"median {whole:.2f} s; its output loss {edit.report['output_l1']['installed']:.5f}.",
              ""]
    return lines


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    lines = ["# The output solver and the replace fill: fast forms against full ones", "",
             f"`python benchmarks/fill_speed.py` — {args.device}, {args.threads} torch thread(s), "
             f"torch {torch.__version__}, median of {args.repeats}, load average before: "
             f"{', '.join(f'{x:.2f}' for x in load0)}.", ""]
    scenes = RewriteSession("scenes", device=args.device)
    flagship = examples.request("roof_to_tree_all")
    flagship = dataclasses.replace(flagship, layer="main.9", rank=20, direction_rule="whitened",
                                   solver="output", solver_options={"ridge": 1.0},
                                   stats_samples=scenes.samples_for("main.9"))
    scenes.prepare_statistics(["main.9"])
    lines += measure(scenes, "scenes roof_to_tree_all", flagship, args.repeats)
    faces = RewriteSession("dcgan-faces", device=args.device)
    on_all = dataclasses.replace(glasses_b_on_all(faces), layer="main.6", rank=10,
                                 direction_rule="whitened", solver="output",
                                 solver_options={"ridge": 1.0},
                                 stats_samples=faces.samples_for("main.6"))
    faces.prepare_statistics(["main.6"])
    lines += measure(faces, "faces glasses_b on all three faces", on_all, args.repeats)
    lines.append(f"Load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fill_speed.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
