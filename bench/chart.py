"""The suite's PNG chart (matplotlib, an optional bench dependency: `pip install -e .[bench]`)."""

from __future__ import annotations

from pathlib import Path

IMPL_COLORS = {
    "ours": "#2b7bba",
    "upstream-fp32": "#f39c12",
    "upstream": "#c0392b",
    "rustymimi": "#27ae60",
    "upstream_mlx": "#c0392b",
    "floor": "#555555",
}


def write_chart(report: dict, path: Path) -> Path | None:
    """Draw what the report holds (LM at full depth, Mimi, live loop); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    parts = report.get("parts", {})
    panels = [p for p in ("lm", "mimi", "loop") if p in parts]
    if not panels:
        return None
    lm_cases = _lm_cases(parts["lm"]) if "lm" in parts else []
    widths = [max(3, len(lm_cases)) if p == "lm" else 2 for p in panels]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4 + 1.3 * sum(widths), 4.8), gridspec_kw={"width_ratios": widths}, squeeze=False
    )
    for ax, p in zip(axes[0], panels):
        {"lm": _lm, "mimi": _mimi, "loop": _loop}[p](ax, parts[p], lm_cases)
    m = report.get("machine", {})
    fig.suptitle(
        f"moshi_mlx latency suite - {m.get('cpu', '')} ({m.get('cpus', '?')} cores), MLX {m.get('mlx', '?')}, "
        f"load avg {m.get('loadavg_start', ['?'])[0]}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _lm_cases(lm: dict) -> list[tuple[str, str]]:
    seen = []
    for r in lm["results"]:
        key = (r["shape"], r["fmt"])
        if "error" not in r and key not in seen:
            seen.append(key)
    return seen


def _lm(ax, lm: dict, cases) -> None:
    impls = ["ours", "upstream-fp32", "upstream"]
    by = {(r["shape"], r["fmt"], r["impl"]): r for r in lm["results"] if "error" not in r}
    w = 0.8 / (len(impls) + 1)
    for i, impl in enumerate(impls):
        xs, ys = [], []
        for j, (shape, fmt) in enumerate(cases):
            r = by.get((shape, fmt, impl))
            if r is not None:
                xs.append(j + i * w)
                ys.append(r["extrapolated"]["step_ms"] / 1000)
        ax.bar(xs, ys, w, label=impl, color=IMPL_COLORS[impl])
    xs, ys = [], []
    for j, (shape, fmt) in enumerate(cases):
        r = by.get((shape, fmt, "ours"))
        if r is not None:
            xs.append(j + len(impls) * w)
            ys.append(r["extrapolated"]["floor_ms"] / 1000)
    ax.bar(xs, ys, w, label="floor (1 core)", color=IMPL_COLORS["floor"])
    two = [by[(s, f, "ours")]["extrapolated"]["floor_ms_two_streams"] / 1000 for s, f in cases if (s, f, "ours") in by]
    ax.scatter(xs, two, marker="_", s=220, color="k", zorder=3, label="floor (2 cores)")
    ax.set_xticks([j + 1.5 * w for j in range(len(cases))])
    ax.set_xticklabels([f"{s}\n{f}" for s, f in cases], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("s per 80 ms frame (full depth, extrapolated)")
    ax.set_title("LM frame step", fontsize=10)
    ax.legend(fontsize=7)


def _mimi(ax, mimi: dict, _cases) -> None:
    names = list(mimi["results"])
    enc = [mimi["results"][n]["encode_median_ms"] for n in names]
    dec = [mimi["results"][n]["decode_median_ms"] for n in names]
    ax.bar(names, enc, label="encode", color="#7fb3d5")
    ax.bar(names, dec, bottom=enc, label="decode", color="#1f618d")
    ax.axhline(80, color="k", lw=0.8, ls="--")
    ax.set_ylabel("ms per 80 ms frame")
    ax.set_title("Mimi streaming", fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=7)


def _loop(ax, loop: dict, _cases) -> None:
    names = list(loop["results"])
    comp = [loop["results"][n]["compute_ms"]["median"] for n in names]
    over = [loop["results"][n]["overhead_ms"]["median"] for n in names]
    top = 250.0
    ax.bar(names, comp, label="compute (enc + LM + dec)", color="#76d7c4")
    ax.bar(names, over, bottom=comp, label="overhead", color="#e74c3c")
    for i, (c, o) in enumerate(zip(comp, over)):
        label = f"{c + o:.0f} ms" + (" (falls behind)" if c + o > top else f"\n(overhead {o:.2f})")
        ax.text(i, min(c + o, top) * 0.97, label, ha="center", va="top", fontsize=7)
    ax.axhline(80, color="k", lw=0.8, ls="--")
    ax.set_ylim(0, top)
    ax.set_ylabel("ms, capture -> answer ready (median)")
    ax.set_title("live loop (demo LM)", fontsize=10)
    ax.legend(fontsize=7)
