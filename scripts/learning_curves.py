"""Learning curves of the shipped known-operator models against the classical solvers.

    python scripts/learning_curves.py --runs pretrain_runs --out curves --figure figs/learning_curves.png

For every model trained by scripts/train_pretrained.py (its --out folder), every kept budget
(model_epoch_*.pth, then model_latest.pth) is scored on the benchmark cases of the known test
protocol with the four held-out test photos (never seen in training), next to the model's own
start x0 (its MODEL.START: A_dagger(y), or a classical solver) and the classical baselines of
dgunet.baselines, computed once:
  deblurring  adagger (the start), adagger-oracle (eps per image on the truth), hyperlaplacian
  denoising   adagger (= y, the start), hyperlaplacian, nlm
  sr          bicubic (= adagger, the start)
PSNR as the protocol scores it (deblurring, denoising: RGB, peak 255; SR: Y, border s), averaged
per group (noise level, or scale). The PSNR of every stage's output is kept too,
at every budget (what the unfolding adds stage by stage, and whether the output is the best
stage). Writes curves.json, curves.md (the tables of docs/known_degradation.md) and, with --figure,
one panel per model and group. Re-runs reuse curves.json's entries for checkpoints already scored.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from dgunet.head_tuning import HeadTuning, tune_model

BASELINE_ROWS = {"deblurring": ("wiener-flat", "adagger", "adagger-oracle", "hyperlaplacian"),
                 "denoising": ("adagger", "hyperlaplacian", "nlm"), "sr": ("bicubic",)}
EPOCH_FILE = re.compile(r"model_epoch_(\d+)\.pth$")


def group_of(case) -> str:
    """Cases averaged together: one noise level (deblurring, denoising) or one scale (SR)."""
    if case.kind == "sr":
        return f"x{case.scale}"
    return f"sigma {case.sigma * 100:g}%" if case.kind == "blur" else f"sigma {round(case.sigma * 255)}"


def test_items(task: str, scale: int | None):
    """[(group, case name, stem, clean, y, op, params)] of the protocol on the built-in photos."""
    from dgunet.benchmarks import cases, protocol
    from dgunet.testrun import known

    chosen = cases(known.KNOWN_PROTOCOLS[task], scales=[scale] if scale else None)
    seed = protocol()["noise_seed"]
    return [(group_of(case), case.name, stem, *known.degrade_case(case, clean, stem, seed))
            for case in chosen for stem, clean in known.photo_images()]


def score(pred: torch.Tensor, clean: np.ndarray, scale: int | None) -> float:
    """The protocol's PSNR of (1,C,H,W) in [0,1] against the uint8 clean image."""
    from dgunet.data.io import to_uint8
    from dgunet.metrics.protocols import get_protocol
    from dgunet.metrics.psnr import psnr

    pred = to_uint8(pred[0].clamp(0, 1))
    if scale:
        return get_protocol(f"sr_x{scale}").score(pred, clean, ("restored", "clean"))[0]
    return psnr(pred, clean, 255.0)


def mean_by_group(values: list[tuple[str, float]]) -> dict[str, float]:
    groups = defaultdict(list)
    for group, value in values:
        groups[group].append(value)
    return {g: round(float(np.mean(v)), 3) for g, v in groups.items()}


@torch.no_grad()
def baselines(task: str, items, scale: int | None, known: dict | None = None) -> dict[str, dict[str, float]]:
    """Every row of BASELINE_ROWS[task]; rows already in `known` (an earlier curves.json) are kept."""
    from dgunet.baselines import BASELINES

    rows = {}
    for name in BASELINE_ROWS[task]:
        if known and name in known:
            rows[name] = known[name]
            continue
        rows[name] = mean_by_group([(g, score(BASELINES[name](y, op, params).float(), clean, scale))
                                    for g, _case, _stem, clean, y, op, params in items])
    return rows


@torch.no_grad()
def model_scores(model: torch.nn.Module, items, scale: int | None) -> dict:
    """{"final": group -> PSNR, "stages": group -> 7 PSNRs, stage 1 first (the last is the output)}."""
    from dgunet.testrun.known import run_model

    final, per_stage = [], []
    for group, _case, _stem, clean, y, op, _params in items:
        outputs = run_model(model, y, op, stages=True)
        final.append((group, score(outputs[0].float(), clean, scale)))
        # DGUNet returns the final output first, then stages 6 ... 1
        per_stage.append((group, [score(o.float(), clean, scale) for o in reversed(outputs)]))
    groups = defaultdict(list)
    for group, values in per_stage:
        groups[group].append(values)
    stages = {g: [round(float(v), 3) for v in np.mean(vs, axis=0)] for g, vs in groups.items()}
    return {"final": mean_by_group(final), "stages": stages,
            "margin": {g: margin(np.array(vs)) for g, vs in groups.items()}}


def margin(per_image: np.ndarray) -> list[float]:
    """[mean, standard error] over images of the output's PSNR minus that of the best of stages 1-6
    (best by mean), from (images, 7) PSNRs: how far apart the two are, next to how well one run's
    test images resolve it (paired, so the images' own difficulty cancels)."""
    best = int(np.argmax(per_image[:, :-1].mean(axis=0)))
    diff = per_image[:, -1] - per_image[:, best]
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    return [round(float(diff.mean()), 3), round(se, 3)]


def budgets(run_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, file) of every kept checkpoint, model_latest.pth last."""
    found = sorted((int(m.group(1)), p) for p in run_dir.iterdir() if (m := EPOCH_FILE.match(p.name)))
    latest = run_dir / "model_latest.pth"
    if latest.exists():
        epoch = int(torch.load(latest, map_location="cpu", weights_only=True)["epoch"])
        found = [(e, p) for e, p in found if e != epoch] + [(epoch, latest)]
    return found


# Optional second scorings of every budget: (key in a point, row suffix, the summaries' subject)
VARIANTS = (("tuned", ", head tuned", "The head-tuned output"),
            ("consistent", ", data-consistent", "The data-consistent output"))


def curve(name: str, runs: Path, previous: dict, epochs: list[int] | None = None,
          tune: HeadTuning | None = None, consistent: bool = False) -> dict:
    """The learning curve of one trained model (see the module docstring); `epochs`: only these
    budgets (a deblurring budget costs about 10 minutes on 2 cores); `tune`: also score each budget
    with its head tuned (dgunet.head_tuning) on the run's training photos; `consistent` (SR): also
    with the output projected onto A x = y (MODEL.DATA_CONSISTENCY), for a run trained without it."""
    from dgunet.config import config_from_yaml_string
    from dgunet.testrun.loading import load_model

    run_dir = runs / "runs" / name
    points = [(e, p) for e, p in budgets(run_dir) if epochs is None or e in epochs]
    cfg = config_from_yaml_string(torch.load(points[-1][1], map_location="cpu", weights_only=True)["config"])
    task = cfg.MODEL.TASK
    scale = cfg.DEGRADE.SCALE if task == "sr" else None
    photos = len(list((runs / "train_photos").iterdir()))
    steps_per_epoch = photos * cfg.DATA.LENGTH_MULTIPLIER // cfg.OPTIM.BATCH_SIZE
    items = test_items(task, scale)
    start_row = cfg.MODEL.START if cfg.MODEL.START != "adagger" else "bicubic" if task == "sr" else "adagger"
    result = {"task": task, "scale": scale, "steps_per_epoch": steps_per_epoch, "start": start_row,
              "points": [], "baselines": baselines(task, items, scale, previous.get("baselines"))}
    done = {p["epoch"]: p for p in previous.get("points", [])}
    for epoch, path in points:
        wanted = ["stages", *(["tuned"] if tune is not None else []), *(["consistent"] if consistent else [])]
        if epoch in done and all(k in done[epoch] for k in wanted) and path.name != "model_latest.pth":
            result["points"].append(done[epoch])
            continue
        start = time.perf_counter()
        model = load_model(task, path).model  # gradient step and start from the checkpoint's config
        point = {"epoch": epoch, "steps": epoch * steps_per_epoch, **model_scores(model, items, scale)}
        if consistent and not model.data_consistency:
            model.data_consistency = True  # read at forward time; the weights are untouched
            point["consistent"] = model_scores(model, items, scale)
            model.data_consistency = False
            print(f"{name} epoch {epoch}, data-consistent: {point['consistent']['final']}", flush=True)
        if tune is not None:
            info = tune_model(model, cfg, tune, train_dir=runs / "train_photos", source=str(path))
            point["tuned"] = {**model_scores(model, items, scale), "head_tuning": info}
            print(f"{name} epoch {epoch}, head tuned: {point['tuned']['final']}", flush=True)
        result["points"].append(point)
        print(f"{name} epoch {epoch}: {point['final']} ({time.perf_counter() - start:.0f} s)", flush=True)
    return result


def stage_above_output(stages: list[float]) -> tuple[int, float] | None:
    """(stage, PSNR) of the best of stages 1-6 when it is above the output (the last of the 7), else
    None: the check of "the output is the best stage" at one budget."""
    best = int(np.argmax(stages[:-1]))
    return (best + 1, stages[best]) if stages[best] > stages[-1] else None


def cell(final: float, above: tuple[int, float] | None, gap: list[float] | None = None) -> str:
    """The output's PSNR at one budget, and the stage above it when there is one (with the paired
    difference and its standard error, where recorded)."""
    if not above:
        return f"{final:.2f}"
    detail = f"; {gap[0]:+.3f} ± {gap[1]:.3f}" if gap else ""
    return f"{final:.2f} (stage {above[0]}: {above[1]:.2f}{detail})"


def summary(who: str, scored: list[tuple[dict, dict]], groups: list[str]) -> list[str]:
    """Where a stage is above the output, and the smallest and largest paired margins, for one run
    of (point, scores) pairs."""
    found = [(p["steps"], g) for p, q in scored for g in groups
             if "stages" in q and stage_above_output(q["stages"][g])]
    where = ", ".join(f"{s} steps ({g})" for s, g in found)
    lines = ["", f"A stage is above {who[0].lower() + who[1:]} at: {where}." if found else
             f"{who} is the best stage at every budget and group."]
    gaps = [(q["margin"][g][0], q["margin"][g][1], p["steps"], g)
            for p, q in scored if "margin" in q for g in groups]
    if gaps:
        low = min(gaps)
        lines += ["", f"{who} minus the best of stages 1-6 (mean ± standard error over the test images): "
                  f"smallest {low[0]:+.3f} ± {low[1]:.3f} dB ({low[2]} steps, {low[3]}), largest "
                  f"{max(gaps)[0]:+.3f} dB."]
    return lines


def markdown(curves: dict) -> str:
    """The curves as tables: per model, the output at every budget (with the stage above it, where
    one is), the start and the baselines, and the PSNR of every stage at the last budget."""
    lines = []
    for name, c in curves.items():
        groups = list(c["points"][-1]["final"])
        lines += [f"**{name}** (PSNR in dB on the held-out photos)", "",
                  "| | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
        for row, values in c["baselines"].items():
            label = f"{row} (the model's start)" if row == c.get("start", "adagger") else row
            lines.append(f"| {label} | " + " | ".join(f"{values[g]:.2f}" for g in groups) + " |")
        # (suffix, point, its scores) per budget: as trained, then each variant where scored
        rows = [(suffix, p, q) for p in c["points"]
                for suffix, q in (("", p), *((v[1], p.get(v[0])) for v in VARIANTS)) if q is not None]
        for suffix, point, scores in rows:
            above = {g: stage_above_output(scores["stages"][g]) if "stages" in scores else None for g in groups}
            lines.append(f"| DGUNet{suffix}, {point['steps']} steps (epoch {point['epoch']}) | "
                         + " | ".join(cell(scores["final"][g], above[g], scores.get("margin", {}).get(g))
                                      for g in groups) + " |")
        for suffix, who in (("", "The output"), *((v[1], v[2]) for v in VARIANTS)):
            if scored := [(p, q) for s, p, q in rows if s == suffix]:
                lines += summary(who, scored, groups)
        last = c["points"][-1]
        lines += ["", f"Stage by stage at {last['steps']} steps (stage 1 to 7, 7 = the output):", ""]
        lines += [f"- {g}: " + " / ".join(f"{v:.2f}" for v in last["stages"][g]) for g in groups]
        lines.append("")
    return "\n".join(lines)


def figure(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, group) for name, c in curves.items() for group in c["points"][-1]["final"]]
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.2 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, (name, group) in zip(flat, panels, strict=False):
        c = curves[name]
        steps = [p["steps"] for p in c["points"]]
        ax.plot(steps, [p["final"][group] for p in c["points"]], "o-", color="k", label="DGUNet (output)")
        for j, (row, values) in enumerate(c["baselines"].items()):
            ax.axhline(values[group], linestyle="--", color=f"C{j}", label=row)
        ax.set_title(f"{name}, {group}", fontsize=9)
        ax.set_xlabel("optimizer steps")
        ax.set_ylabel("PSNR (dB), held-out photos")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    for ax in flat[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    from dgunet.atomic import atomic_open

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:  # a half-written PNG never replaces a good one
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from dgunet.atomic import write_text_atomic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="the --out folder of train_pretrained.py")
    parser.add_argument("--models", nargs="+", help="default: every trained model in --runs")
    parser.add_argument("--out", type=Path, required=True, help="folder for curves.json")
    parser.add_argument("--figure", type=Path, help="also draw the curves into this PNG")
    parser.add_argument("--epochs", nargs="+", type=int, help="score only these budgets (default: all kept)")
    parser.add_argument("--tune-head", action="store_true", help="also score every budget with its head tuned "
                        "(dgunet.head_tuning, stages frozen) on the run's training photos")
    parser.add_argument("--tune-batches", type=int, default=HeadTuning().batches,
                        help="cached training batches of --tune-head (default %(default)s)")
    parser.add_argument("--data-consistency", action="store_true", help="SR: also score every budget with the "
                        "output projected onto A x = y (MODEL.DATA_CONSISTENCY), weights unchanged")
    args = parser.parse_args(argv)
    names = args.models or sorted(p.name for p in (args.runs / "runs").iterdir() if p.is_dir())
    out_file = args.out / "curves.json"
    previous = json.loads(out_file.read_text()) if out_file.exists() else {}
    curves = {}
    for name in names:
        curves[name] = curve(name, args.runs, previous.get(name, {}), args.epochs,
                             HeadTuning(batches=args.tune_batches) if args.tune_head else None,
                             args.data_consistency)
        write_text_atomic(out_file, json.dumps({**previous, **curves}, indent=1) + "\n")
    every = dict(sorted({**previous, **curves}.items()))  # earlier models of curves.json are shown too
    write_text_atomic(args.out / "curves.md", markdown(every))
    if args.figure:
        figure(every, args.figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
