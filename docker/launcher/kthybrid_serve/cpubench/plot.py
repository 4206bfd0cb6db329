"""One bench result shown: a text table, and a PNG of GB/s of expert weights against threads.

The PNG has read bandwidth as a line.

Drawn with Pillow (the image has it; matplotlib is not in the image). Pillow is imported
when a plot is made, so the launcher imports without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kthybrid_serve.drawing import PlotError, font, pillow, ticks
from kthybrid_serve.units import GIB, MIB

WIDTH, HEIGHT = 960, 600
LEFT, RIGHT, TOP, BOTTOM = 80, 250, 84, 60
COLOURS = {
    "sweep": (31, 119, 180),
    "other": (148, 103, 189),
    "plan": (214, 39, 40),
    "best": (44, 160, 44),
    "bandwidth": (90, 90, 90),
    "axis": (40, 40, 40),
    "grid": (225, 225, 225),
}


@dataclass(frozen=True)
class _Canvas:
    """The drawing and its coordinates: threads along x, GB/s up y."""

    draw: Any
    small: Any
    normal: Any
    x_low: int
    x_high: int
    y_high: float

    @property
    def plot_w(self) -> int:
        return WIDTH - LEFT - RIGHT

    @property
    def plot_h(self) -> int:
        return HEIGHT - TOP - BOTTOM

    def x_of(self, value: float) -> float:
        return LEFT + (value - self.x_low) / (self.x_high - self.x_low) * self.plot_w

    def y_of(self, value: float) -> float:
        return TOP + self.plot_h - value / self.y_high * self.plot_h


def _axes(canvas: _Canvas, y_ticks: Sequence[float], bandwidth: float) -> None:
    draw, small, normal = canvas.draw, canvas.small, canvas.normal
    plot_w, plot_h = canvas.plot_w, canvas.plot_h
    for tick in y_ticks:
        y = canvas.y_of(tick)
        draw.line([(LEFT, y), (LEFT + plot_w, y)], fill=COLOURS["grid"])
        draw.text((LEFT - 8, y), f"{tick:g}", fill=COLOURS["axis"], font=small, anchor="rm")
    for value in range(canvas.x_low + 1, canvas.x_high):
        x = canvas.x_of(value)
        draw.line([(x, TOP + plot_h), (x, TOP + plot_h + 5)], fill=COLOURS["axis"])
        draw.text((x, TOP + plot_h + 8), str(value), fill=COLOURS["axis"], font=small, anchor="mt")
    draw.rectangle([LEFT, TOP, LEFT + plot_w, TOP + plot_h], outline=COLOURS["axis"])
    draw.text(
        (LEFT + plot_w / 2, HEIGHT - 18),
        "kt-kernel threads (--kt-cpuinfer)",
        fill=COLOURS["axis"],
        font=normal,
        anchor="mm",
    )
    draw.text((14, TOP - 22), "GB/s of expert weights", fill=COLOURS["axis"], font=normal)

    y_bw = canvas.y_of(bandwidth)
    for start in range(LEFT, LEFT + plot_w, 14):
        draw.line(
            [(start, y_bw), (min(start + 8, LEFT + plot_w), y_bw)],
            fill=COLOURS["bandwidth"],
            width=2,
        )
    draw.text(
        (LEFT + 6, y_bw - 4),
        f"read bandwidth {bandwidth:.1f} GB/s",
        fill=COLOURS["bandwidth"],
        font=small,
        anchor="lb",
    )


Legend = list[tuple[tuple[int, int, int], str]]


def _runs(canvas: _Canvas, result: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> Legend:
    """The plan's sweep as a line, other layouts as squares; returns their legend entries."""
    draw, x_of, y_of = canvas.draw, canvas.x_of, canvas.y_of
    plan_pools = int(result["plan_pools"])
    plan_nodes = list(result["plan_numa_nodes"])
    sweep = sorted(
        (r for r in runs if r["pools"] == plan_pools and list(r["numa_nodes"]) == plan_nodes),
        key=lambda r: int(r["threads"]),
    )
    points = [(x_of(int(r["threads"])), y_of(float(r["gbps"]))) for r in sweep]
    if len(points) > 1:
        draw.line(points, fill=COLOURS["sweep"], width=2)
    for x, y in points:
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=COLOURS["sweep"])
    legend: Legend = [
        (COLOURS["sweep"], f"{plan_pools} pool(s) on node(s) {','.join(map(str, plan_nodes))}")
    ]
    others = [r for r in runs if r not in sweep]
    for run in others:
        x, y = x_of(int(run["threads"])), y_of(float(run["gbps"]))
        draw.rectangle([x - 5, y - 5, x + 5, y + 5], outline=COLOURS["other"], width=2)
        draw.text(
            (x + 8, y),
            run["labels"][0].split(" (")[0],
            fill=COLOURS["other"],
            font=canvas.small,
            anchor="lm",
        )
    if others:
        legend.append((COLOURS["other"], "other layouts (tutorial, upstream)"))
    return legend


def _best_and_plan(
    canvas: _Canvas, result: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]
) -> Legend:
    """Rings around the best run and the plan's; returns their legend entries."""
    draw = canvas.draw
    legend: Legend = []
    best_gbps, plan_gbps = result["best_gbps"], result["plan_gbps"]
    best = next(
        r for r in runs if r["gbps"] == best_gbps and r["threads"] == result["best_threads"]
    )
    x, y = canvas.x_of(int(best["threads"])), canvas.y_of(float(best_gbps))
    draw.ellipse([x - 9, y - 9, x + 9, y + 9], outline=COLOURS["best"], width=3)
    legend.append((COLOURS["best"], f"best: {best['threads']} threads, {best_gbps:.1f} GB/s"))
    if plan_gbps is not None:
        x, y = canvas.x_of(int(result["plan_threads"])), canvas.y_of(float(plan_gbps))
        draw.ellipse([x - 13, y - 13, x + 13, y + 13], outline=COLOURS["plan"], width=2)
        legend.append(
            (COLOURS["plan"], f"plan: {result['plan_threads']} threads, {plan_gbps:.1f} GB/s")
        )
    legend.append(
        (COLOURS["bandwidth"], f"read bandwidth ({result['bandwidth']['threads']} threads)")
    )
    return legend


def _legend_and_titles(canvas: _Canvas, result: Mapping[str, Any], legend: Legend) -> None:
    draw, small, normal = canvas.draw, canvas.small, canvas.normal
    legend_x, legend_y = LEFT + canvas.plot_w + 16, TOP + 4
    for colour, text in legend:
        draw.rectangle([legend_x, legend_y + 3, legend_x + 12, legend_y + 15], fill=colour)
        draw.text((legend_x + 18, legend_y), text, fill=COLOURS["axis"], font=small)
        legend_y += 24
    shape = result["shape"]
    title = (
        f"kt-kernel {result['method']} decode, {shape['model']} experts "
        f"{shape['hidden']}x{shape['intermediate']} top-{shape['top_k']}"
    )
    subtitle = (
        f"{result['cpu_model']}, CPU variant {result['cpu_variant']}, working set "
        f"{result['working_set_bytes'] / 1024**3:.1f} GiB"
    )
    draw.text((LEFT, 12), title, fill=COLOURS["axis"], font=normal)
    draw.text((LEFT, 34), subtitle, fill=COLOURS["axis"], font=small)


def render_png(result: Mapping[str, Any], path: Path) -> Path:
    """Write the plot of `result` (the bench JSON) to `path`."""
    image_mod, draw_mod, font_mod = pillow()
    runs: Sequence[Mapping[str, Any]] = [r for r in result["runs"] if r.get("gbps") is not None]
    if not runs:
        raise PlotError("no run was measured; nothing to plot")
    bandwidth = float(result["bandwidth_gbps"])
    threads = [int(r["threads"]) for r in runs]
    y_high = max(bandwidth, *(float(r["gbps"]) for r in runs)) * 1.12
    y_ticks = ticks(y_high)
    image = image_mod.new("RGB", (WIDTH, HEIGHT), "white")
    canvas = _Canvas(
        draw=draw_mod.Draw(image),
        small=font(font_mod, 13),
        normal=font(font_mod, 15),
        x_low=min(threads) - 1,
        x_high=max(threads) + 1,
        y_high=max(y_high, y_ticks[-1]),
    )
    _axes(canvas, y_ticks, bandwidth)
    legend = _runs(canvas, result, runs) + _best_and_plan(canvas, result, runs)
    _legend_and_titles(canvas, result, legend)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def render_table(result: Mapping[str, Any]) -> str:
    """The human-readable report of one bench result."""
    shape = result["shape"]
    bandwidth = result["bandwidth_gbps"]
    lines = [
        f"kt-kernel {result['method']} decode ({result['moe_class']}, CPU variant "
        f"{result['cpu_variant']}), {shape['model']} experts {shape['hidden']}x"
        f"{shape['intermediate']}, top-{shape['top_k']}",
        f"working set {result['working_set_bytes'] / GIB:.1f} GiB ({result['layers_loaded']} "
        f"layer(s) x {result['experts_loaded_per_layer']} experts x "
        f"{result['bytes_per_expert'] / MIB:.1f} MiB); last-level cache "
        f"{result['llc_bytes'] / MIB:.0f} MiB",
    ]
    for figure in result["bandwidth_per_node"]:
        nodes = ",".join(map(str, figure["nodes"]))
        lines.append(
            f"read bandwidth node {nodes}: {figure['gbps']:.1f} GB/s, {figure['threads']} threads"
        )
    if len(result["bandwidth_per_node"]) > 1:
        lines.append(f"read bandwidth, all nodes at once: {bandwidth:.1f} GB/s")
    lines.append("")
    lines.append(f"{'threads':>7}  {'pools':>5}  {'per pool':<14} {'GB/s':>7}  {'of read':>7}  run")
    for run in result["runs"]:
        per_pool = " + ".join(
            f"{t}@{n}" for t, n in zip(run["threads_per_pool"], run["numa_nodes"], strict=True)
        )
        if run["gbps"] is None:
            figure, share = "-", "-"
        else:
            figure, share = f"{run['gbps']:.1f}", f"{run['gbps'] / bandwidth:.0%}"
        what = ", ".join(run["labels"])
        if run.get("error"):
            what += f" ({run['error']})"
        elif run.get("note"):
            what += f" ({run['note']})"
        counts = f"{run['threads']:>7}  {run['pools']:>5}"
        lines.append(f"{counts}  {per_pool:<14} {figure:>7}  {share:>7}  {what}")
    lines.append("")
    if result["plan_gbps"] is None:
        lines.append(
            f"plan ({result['plan_threads']} threads): not measured ({result['plan_error']})"
        )
    else:
        lines.append(
            f"plan: {result['plan_threads']} threads in {result['plan_pools']} pool(s), "
            f"{result['plan_gbps']:.1f} GB/s = {result['plan_vs_best']:.2f} of the best"
        )
    lines.append(
        f"best: {result['best_threads']} threads in {result['best_pools']} pool(s), "
        f"{result['best_gbps']:.1f} GB/s = {result['best_vs_bandwidth']:.2f} of the read bandwidth"
    )
    return "\n".join(lines)
