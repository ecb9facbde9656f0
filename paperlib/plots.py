"""Figures: overlays, the paper's Figures 3, 6 and 7, curves with interval bands.

Every ``save`` writes PNG and PDF under the figures folder (:func:`paperlib.paths.figures_dir`).
Functions take tensors/frames and return matplotlib figures; the only computation here is the
figures' top-k% masks (:func:`top_masks`, ranked as the metrics rank pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from . import schema
from .cam import method_label as label
from .masking import keep_top, n_pixels, pixel_ranks
from .paths import figures_dir
from .stats import bootstrap_ci

__all__ = ["accuracy_figure", "attention_panels", "band_plot", "claims_heatmap", "curves",
           "figure3",
           "figure6", "figure7", "image_np", "method_grid", "overlay", "save", "sanity_figure",
           "score_vs_k", "top_masks", "training_figure"]


def save(fig: plt.Figure, name: str, folder: str | Path | None = None) -> list[Path]:
    """Save ``fig`` as ``name.png`` (150 dpi) and ``name.pdf``; returns the paths."""
    out = figures_dir(folder)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None})
    return paths


def top_masks(maps: torch.Tensor, percent: float) -> torch.Tensor:
    """(B, H, W) binary masks keeping exactly the top ``percent``% pixels of each (B, H, W) map,
    ranked as the metrics rank them (:func:`paperlib.masking.pixel_ranks`: ties by pixel index),
    e.g. for :func:`figure6` and :func:`figure7`."""
    H, W = maps.shape[-2:]
    return keep_top(pixel_ranks(maps), n_pixels(percent, H * W), (H, W))


def image_np(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) numpy."""
    return image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()


def overlay(ax: plt.Axes, image: torch.Tensor, cam: torch.Tensor | None, alpha: float = 0.5,
            title: str | None = None) -> None:
    """The image with a jet heat map on top (or the image alone when ``cam`` is None)."""
    ax.imshow(image_np(image))
    if cam is not None:
        ax.imshow(cam.detach().cpu().numpy(), cmap="jet", alpha=alpha, vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)


def method_grid(images: torch.Tensor, maps: dict[str, torch.Tensor], titles: Sequence[str]
                ) -> plt.Figure:
    """Rows: images; columns: the image, then each method's overlay."""
    methods = list(maps)
    n, c = images.shape[0], len(methods) + 1
    fig, axes = plt.subplots(n, c, figsize=(1.6 * c, 1.7 * n), squeeze=False)
    for i in range(n):
        overlay(axes[i, 0], images[i], None, title=titles[i])
        for j, m in enumerate(methods, start=1):
            overlay(axes[i, j], images[i], maps[m][i], title=label(m) if i == 0 else None)
    fig.tight_layout()
    return fig


def figure3(image: torch.Tensor, A: torch.Tensor, weights: torch.Tensor, low_res: torch.Tensor,
            cam: torch.Tensor, n_maps: int = 4, title: str = "") -> plt.Figure:
    """The paper's Figure 3 step by step: feature maps A_k of the top-weighted channels, the
    channel weights w_k, the weighted sum ReLU(sum_k w_k A_k), the overlay."""
    top = weights.argsort(descending=True)[:n_maps]
    fig = plt.figure(figsize=(2.0 * (n_maps + 4), 2.4))
    grid = fig.add_gridspec(1, n_maps + 4, width_ratios=[1] * (n_maps + 1) + [1.6, 1, 1])
    ax = fig.add_subplot(grid[0])
    overlay(ax, image, None, title=title or "input")
    for j, k in enumerate(top.tolist(), start=1):
        ax = fig.add_subplot(grid[j])
        ax.imshow(A[k].cpu().numpy(), cmap="viridis")
        ax.set_title(f"A_{k} (w={weights[k].item():.2e})", fontsize=7)
        ax.set_axis_off()
    ax = fig.add_subplot(grid[n_maps + 1])
    w = weights.detach().cpu().numpy()
    ax.plot(np.sort(w)[::-1], lw=1)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_title("channel weights w_k (sorted)", fontsize=8)
    ax.tick_params(labelsize=6)
    ax = fig.add_subplot(grid[n_maps + 2])
    ax.imshow(low_res.detach().cpu().numpy(), cmap="jet")
    ax.set_title("ReLU(sum_k w_k A_k)", fontsize=8)
    ax.set_axis_off()
    ax = fig.add_subplot(grid[n_maps + 3])
    overlay(ax, image, cam, title="Grad-CAM overlay")
    fig.tight_layout()
    return fig


def figure6(images: torch.Tensor, maps: torch.Tensor, keep: torch.Tensor, titles: Sequence[str],
            method: str, percent: int = 25) -> plt.Figure:
    """The paper's Figure 6: original, heat map, explanation map keeping the top ``percent``%."""
    n = images.shape[0]
    fig, axes = plt.subplots(n, 3, figsize=(5.4, 1.9 * n), squeeze=False)
    for i in range(n):
        overlay(axes[i, 0], images[i], None, title=titles[i])
        overlay(axes[i, 1], images[i], maps[i],
                title=f"{label(method)} heat map" if i == 0 else None)
        overlay(axes[i, 2], images[i] * keep[i][None], None,
                title=f"top {percent}% kept" if i == 0 else None)
    fig.tight_layout()
    return fig


def figure7(image: torch.Tensor, masks: dict[str, dict[int, torch.Tensor]], title: str = ""
            ) -> plt.Figure:
    """The paper's Figure 7: each method's explanation images keeping the top k% pixels."""
    methods = list(masks)
    ks = list(next(iter(masks.values())))
    fig, axes = plt.subplots(len(methods), len(ks), figsize=(1.5 * len(ks), 1.55 * len(methods)),
                             squeeze=False)
    for i, m in enumerate(methods):
        for j, k in enumerate(ks):
            overlay(axes[i, j], image * masks[m][k][None], None,
                    title=f"top {k}%" if i == 0 else None)
        axes[i, 0].set_axis_on()
        axes[i, 0].set_xticks([])
        axes[i, 0].set_yticks([])
        axes[i, 0].set_ylabel(label(m), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def band_plot(ax: plt.Axes, x: Sequence[float] | np.ndarray, per_image: np.ndarray, name: str,
              seed: int = 0, **kw) -> None:
    """Mean over images (rows of ``per_image``) with a 95% bootstrap band, per x."""
    cis = [bootstrap_ci(per_image[:, j], seed=seed, n_boot=1000) for j in range(per_image.shape[1])]
    mean = np.array([c.mean for c in cis])
    ax.plot(x, mean, label=label(name), **kw)
    ax.fill_between(x, [c.low for c in cis], [c.high for c in cis], alpha=0.15,
                    color=ax.lines[-1].get_color())


def score_vs_k(frame: pd.DataFrame, methods: Sequence[str], fractions: Sequence[int],
               prefixes: dict[str, str], seed: int = 0) -> plt.Figure:
    """One panel per read-out: value vs k for every method, with interval bands."""
    fig, axes = plt.subplots(1, len(prefixes), figsize=(4.2 * len(prefixes), 3.4), squeeze=False)
    for ax, (prefix, title) in zip(axes[0], prefixes.items()):
        for m in methods:
            sub = frame[frame["method"] == m]
            scale = schema.readout_scale(prefix)
            vals = np.column_stack([sub[schema.readout(prefix, k)].to_numpy() * scale
                                    for k in fractions])
            band_plot(ax, fractions, vals, m, seed=seed, marker="o", ms=3, lw=1)
        ax.set_xlabel("k (% of pixels kept)")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(list(fractions))
    axes[0, -1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    return fig


def curves(frame: pd.DataFrame, methods: Sequence[str], steps: int, seed: int = 0
           ) -> plt.Figure:
    """Deletion and insertion curves (target probability vs fraction of pixels) with bands."""
    x = np.linspace(0, 1, steps + 1)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, column, title in ((axes[0], schema.deletion, "deletion (lower is better)"),
                              (axes[1], schema.insertion, "insertion (higher is better)")):
        for m in methods:
            sub = frame[frame["method"] == m]
            vals = np.column_stack([sub[column(t)].to_numpy() for t in range(steps + 1)])
            band_plot(ax, x, vals, m, seed=seed, lw=1)
        ax.set_xlabel("fraction of pixels removed" if column is schema.deletion else
                      "fraction of pixels inserted")
        ax.set_ylabel("target probability")
        ax.set_title(title, fontsize=9)
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    return fig


def accuracy_figure(table: pd.DataFrame) -> plt.Figure:
    """Table 2 as bars: top-1 and top-5 accuracy with 95% intervals."""
    avail = table[table["available"]]
    x = np.arange(len(avail))
    fig, ax = plt.subplots(figsize=(1.4 * len(avail) + 2, 3.2))
    for off, col, name in ((-0.2, "top1_acc", "top-1"), (0.2, "top5_acc", "top-5")):
        err = np.vstack([avail[col] - avail[f"{col}_lo"], avail[f"{col}_hi"] - avail[col]])
        ax.bar(x + off, avail[col], width=0.4, yerr=err, capsize=3, label=name)
    ax.set_xticks(x, avail["model"], rotation=15, fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(50, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def training_figure(candidates: list[dict]) -> plt.Figure:
    """Training curves (loss and its parts per epoch) of every grid candidate."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for cand in candidates:
        h = pd.DataFrame(cand["history"])
        name = f"l_area={cand['l_area']}, l_tv={cand['l_tv']}"
        for ax, col in zip(axes, ("loss", "ce", "area")):
            ax.plot(h["epoch"], h[col], marker="o", ms=3, lw=1, label=name)
            ax.set_title(col, fontsize=9)
            ax.set_xlabel("epoch")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def sanity_figure(summary: pd.DataFrame, steps: Sequence[str]) -> plt.Figure:
    """Mean Spearman correlation with the trained classifier's maps along the cascade."""
    cols = [c for c in summary.columns if c.startswith("step")]
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for _, row in summary.iterrows():
        ax.plot(range(1, len(cols) + 1), row[cols].to_numpy(dtype=float), marker="o", ms=3,
                lw=1, label=label(row["method"]))
    ax.set_xticks(range(1, len(cols) + 1), steps, rotation=20, fontsize=7)
    ax.set_ylabel("Spearman vs trained model")
    ax.set_xlabel("randomised (cumulative, from the top)")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def attention_panels(images: torch.Tensor, modules: dict, ex: dict, titles: Sequence[str]
                     ) -> plt.Figure:
    """Per image: the image, each module's channel weights Mc (sorted) and spatial map Ms, and the
    final maps of Grad-CAM and every attention variant in ``ex``."""
    n = images.shape[0]
    maps = [m for m in ex if m != "gradcam"]
    cols = 1 + 2 * len(modules) + 1 + len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(1.75 * cols, 1.8 * n), squeeze=False)
    for i in range(n):
        overlay(axes[i, 0], images[i], None, title=titles[i])
        j = 1
        for name, out in modules.items():
            ax = axes[i, j]
            ax.plot(np.sort(out.channel[i].detach().cpu().numpy())[::-1], lw=1)
            ax.set_ylim(0, 1)
            ax.tick_params(labelsize=5)
            ax.set_title(f"Mc ({name}), sorted" if i == 0 else "", fontsize=7)
            ax = axes[i, j + 1]
            ax.imshow(out.spatial[i].detach().cpu().numpy(), cmap="magma", vmin=0, vmax=1)
            ax.set_axis_off()
            ax.set_title(f"Ms ({name})" if i == 0 else "", fontsize=7)
            j += 2
        overlay(axes[i, j], images[i], ex["gradcam"][i], title="Grad-CAM" if i == 0 else None)
        for m in maps:
            j += 1
            overlay(axes[i, j], images[i], ex[m][i], title=label(m) if i == 0 else None)
    fig.tight_layout()
    return fig


#: Verdict -> value on the heat map's diverging scale.
VERDICT_SCORE = {"better": 1, "no significant difference": 0, "worse": -1}


def claims_heatmap(claims: pd.DataFrame) -> plt.Figure:
    """The claim check as a heat map: rows variant x baseline, columns metrics, cells coloured
    better (green) / no significant difference (grey) / worse (red), annotated with p (Holm)."""
    import seaborn as sns
    from matplotlib.colors import ListedColormap

    frame = claims.assign(row=[f"{label(v)} vs {label(b)}"
                               for v, b in zip(claims["variant"], claims["baseline"])])
    score = frame.pivot_table(index="row", columns="metric", sort=False,
                              values="verdict", aggfunc=lambda v: VERDICT_SCORE[v.iloc[0]])
    pvals = frame.pivot_table(index="row", columns="metric", values="p (Holm)", sort=False,
                              aggfunc="first").loc[score.index, score.columns]
    fig, ax = plt.subplots(figsize=(1.5 * score.shape[1] + 3, 0.32 * score.shape[0] + 1.4))
    sns.heatmap(score, ax=ax, cmap=ListedColormap(["#d6604d", "#e0e0e0", "#4393c3"]), vmin=-1.5,
                vmax=1.5, annot=pvals.map(lambda p: f"p={p:.2g}"), fmt="", linewidths=0.5,
                annot_kws={"fontsize": 6}, cbar_kws={"ticks": [-1, 0, 1], "shrink": 0.6})
    colorbar = ax.collections[0].colorbar
    if colorbar is not None:
        colorbar.set_ticklabels(["worse", "n.s.", "better"])
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.tick_params(labelsize=7)
    ax.set_title("Does the variant beat the baseline as the paper claims? (Holm, alpha 0.05)",
                 fontsize=8)
    fig.tight_layout()
    return fig
