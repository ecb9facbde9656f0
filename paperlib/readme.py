"""``make readme``: write ``results/RESULTS.md`` and refresh the README's blocks from a run's files.

Every number in the README sits between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers
and is rewritten here from ``results/`` (and ``benchmarks/``); nothing is typed by hand. A block
whose source file is missing says so (:data:`PLACEHOLDER`) instead of showing stale numbers.

``results/RESULTS.md`` holds every table of a run (Tables 2-4, the trend check, deletion and
insertion, the claims, the paired tests, the sanity check, the run time); it is generated entirely
here and overwritten each time. The bullets of "What the results say" are sentences built by
:func:`findings` from ``claims.csv``, ``table4_trend.csv``, ``sanity.csv`` and ``table3.csv``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .paper_reference import PAPER_TABLE3, PAPER_TABLE4
from .paths import REPO_ROOT, results_dir
from .precision import SAFE_WIDTH_FRACTION, SPEEDUP_GOAL
from .stats import bootstrap_ci
from .tables import (
    CLAIMS,
    HEADLINE,
    READOUTS,
    VERDICTS,
    claim_check,
    claim_holds,
    formatted,
    tally_verdicts,
)

__all__ = ["PLACEHOLDER", "blocks", "findings", "main", "replace_blocks", "results_markdown",
           "update", "write_results"]

#: What a block shows when the file it is made from does not exist.
PLACEHOLDER = "_(not yet produced: run `make reproduce`)_"
#: Significance level of the claim verdicts (the default of :func:`paperlib.tables.claim_check`).
ALPHA = inspect.signature(claim_check).parameters["alpha"].default
#: Level of the bootstrap intervals (the default of :func:`paperlib.stats.bootstrap_ci`).
LEVEL = inspect.signature(bootstrap_ci).parameters["level"].default
#: Two methods tie when Average Drop and % Increase (percentage points) differ by at most this.
TIE_TOLERANCE = 1e-4
#: The variant whose parameters are fitted to each image on the quantity the metrics measure.
PER_IMAGE = "attention-per-image"


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def _csv(path: Path) -> pd.DataFrame | None:
    """The table, or ``None`` when the file is missing or holds no rows."""
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None
    return frame if len(frame) else None


def _md(results: Path, name: str) -> str | None:
    text = _read(results / f"{name}.md")
    return (text.strip() or None) if text else None


def _caption(results: Path, name: str) -> str | None:
    """The caption line that :func:`paperlib.tables.write_table` puts above a table, if any."""
    text = _read(results / f"{name}.md")
    if not text:
        return None
    first = text.strip().split("\n\n", 1)[0].strip()
    return None if first.startswith("|") else first


def _ordered(values: pd.Series) -> list[str]:
    """Distinct values in order of first appearance."""
    return list(dict.fromkeys(values.tolist()))


def _names(items: Sequence[str]) -> str:
    return ", ".join(f"`{x}`" for x in items)


def _and(labels: Sequence[str]) -> str:
    """``*a*, *b* and *c*`` (labels may contain commas)."""
    items = [f"*{x}*" for x in labels]
    return " and ".join([", ".join(items[:-1]), items[-1]]) if len(items) > 1 else \
        (items[0] if items else "none")


# --- blocks --------------------------------------------------------------------------------------

def _choice(results: Path) -> str | None:
    text = _read(results / "chosen_model.json")
    if text is None:
        return None
    return ("Chosen black box: **{model}** (most accurate: {most_accurate}; rule: {rule})."
            .format(**json.loads(text)))


def _table4_blocks(results: Path) -> str | None:
    t4 = _csv(results / "table4.csv")
    if t4 is None:
        return None
    ks = sorted({int(c[len("O_top"):]) for c in t4.columns if re.fullmatch(r"O_top\d+", c)})
    shown = formatted(t4)
    parts = []
    for prefix, title in READOUTS.items():
        cols = ["method"] + [f"{prefix}{k}" for k in ks]
        table = shown[cols].rename(columns={f"{prefix}{k}": f"top {k}%" for k in ks})
        parts.append(f"**{title}**\n\n" + table.to_markdown(index=False))
    paper = pd.DataFrame([{"paper (ResNet-50)": col, **{f"top {k}%": cells.get(k) for k in ks}}
                          for col, cells in PAPER_TABLE4.items()])
    parts.append("**The paper's rows** (read-out undefined; `ours` is its attention method)\n\n"
                 + paper.to_markdown(index=False, floatfmt=".4f"))
    return "\n\n".join(parts)


def _claims(results: Path) -> str | None:
    """One row per variant x baseline, one verdict column per metric."""
    claims = _csv(results / "claims.csv")
    if claims is None:
        return None
    wide = claims.pivot_table(index=["variant", "baseline"], columns="metric", values="verdict",
                              aggfunc="first")
    order = pd.MultiIndex.from_tuples(
        [(v, b) for v in _ordered(claims["variant"]) for b in _ordered(claims["baseline"])
         if (v, b) in wide.index], names=["variant", "baseline"])
    wide = wide.reindex(order)[_ordered(claims["metric"])].fillna("").replace(VERDICTS)
    legend = (f"*better* / *worse*: significant (Holm-adjusted p < {ALPHA}) in / against the "
              "direction the paper claims; *n.s.*: no significant difference.")
    caption = _caption(results, "claims")
    return "\n\n".join(filter(None, [caption, wide.reset_index().to_markdown(index=False),
                                     legend]))


def _p(p: float) -> str:
    return "n/a" if pd.isna(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def _wilcoxon(results: Path) -> str | None:
    """The paired tests, compact: one row per variant x baseline, cells "mean diff (p Holm)"."""
    wt = _csv(results / "wilcoxon.csv")
    if wt is None:
        return None
    labels = {m: CLAIMS[m][0] if m in CLAIMS else m for m in _ordered(wt["metric"])}
    rows = []
    for v in _ordered(wt["variant"]):
        for b in _ordered(wt["baseline"]):
            sub = wt[(wt["variant"] == v) & (wt["baseline"] == b)]
            if not len(sub):
                continue
            row = {"variant": v, "baseline": b}
            for _, r in sub.iterrows():
                row[labels[r["metric"]]] = f"{r['mean_diff']:+.3g} ({_p(r['p_holm'])})"
            rows.append(row)
    table = pd.DataFrame(rows).fillna("")
    lower = [CLAIMS[m][0] for m in labels if m in CLAIMS and CLAIMS[m][1] < 0]
    higher = [CLAIMS[m][0] for m in labels if m in CLAIMS and CLAIMS[m][1] > 0]
    legend = ("Each cell: mean over images of variant - baseline (Holm-adjusted p over all "
              f"{len(wt)} tests). Lower is better for {_and(lower)}; higher is better for "
              f"{_and(higher)}.")
    caption = _caption(results, "wilcoxon")
    return "\n\n".join(filter(None, [caption, table.to_markdown(index=False), legend]))


def _speed(results: Path) -> str | None:
    """One or two lines: the last full run's time and the evaluation's cost against the floor."""
    speed = _read(results / "eval_speed.json")
    summary = _read(results / "reproduce_summary.json")
    if speed is None and summary is None:
        return None
    parts = []
    if summary is not None:
        r = json.loads(summary)
        parts.append(f"Last full run ({r['finished']}): **{r['total_seconds'] / 60:.1f} min** on "
                     f"{'GPU ' + r['cuda'] if r['cuda'] else 'CPU'} ({r['machine']}, "
                     f"{r['threads']} threads, torch {r['torch']}).")
    if speed is not None:
        s = json.loads(speed)
        parts.append(f"Tables 3+4 evaluation of {s['images']} images: "
                     f"**{s['ratio_to_floor']:.2f}x** the floor of plain forwards "
                     f"({s['floor_ms_per_image']:.1f} ms per image; goal 1.2x).")
    return " ".join(parts)


def _speed_full(results: Path) -> str | None:
    """The run time per step and the evaluation's cost against the floor, as in RESULTS.md."""
    speed = _read(results / "eval_speed.json")
    summary = _read(results / "reproduce_summary.json")
    if speed is None or summary is None:
        return None
    s, r = json.loads(speed), json.loads(summary)
    run = (f"Run: {r['finished']}, torch {r['torch']}, {r['threads']} threads, "
           f"{'GPU ' + r['cuda'] if r['cuda'] else 'CPU'} ({r['machine']}); "
           f"total {r['total_seconds'] / 60:.1f} min.")
    evaluation = (f"Tables 3+4 evaluation: {s['images']} images, {s['metric_forwards']} forwards "
                  f"of masked copies in {s['metric_seconds'] / 60:.1f} min = "
                  f"**{s['ratio_to_floor']:.2f}x** the floor ({s['floor_ms_per_image']:.1f} ms per "
                  "plain forward per image, measured on every batch of the same run; goal 1.2x).")
    lines = [run, "", "| step | minutes |", "|---|---|"]
    lines += [f"| {k} | {v / 60:.1f} |" for k, v in r["steps_seconds"].items()]
    lines += ["", evaluation]
    return "\n".join(lines)


# --- "What the results say" ----------------------------------------------------------------------

def _versus(verdict: str, names: list[str], total: int) -> str:
    how = {"better": "better than", "worse": "worse than",
           "no significant difference": "no significant difference from"}.get(verdict,
                                                                              f"{verdict}:")
    if len(names) == total:
        return (f"{how} {_names(names)}" if total == 1 else f"{how} both" if total == 2
                else f"{how} all {total}")
    return f"{how} {len(names)} ({_names(names)})"


def _claim_bullets(claims: pd.DataFrame, n_images: int | None = None) -> list[str]:
    variants, baselines = _ordered(claims["variant"]), _ordered(claims["baseline"])
    metrics = _ordered(claims["metric"])
    on = f" on {n_images} images" if n_images else ""
    lead = (f"Each variant against the {len(baselines)} baselines {_names(baselines)} in paired "
            f"Wilcoxon tests{on}: *better* / *worse* = significant (Holm-adjusted p < {ALPHA}) "
            "in / against the direction the paper claims.")
    out = [lead]
    headline = [m for m in HEADLINE if m in metrics]
    if headline:
        holds = claim_holds(claims)
        ok = [v for v in variants if holds[v]]
        not_ok = [v for v in variants if v not in ok]
        sentence = (f"The paper's claim (a better {' and '.join(headline)} than every baseline) "
                    f"holds for {_names(ok) if ok else 'no variant'}")
        out.append(sentence + (f" and not for {_names(not_ok)}." if ok and not_ok else "."))
    for v in variants:
        mine = claims[claims["variant"] == v]
        n = len(_ordered(mine["baseline"]))
        parts = []
        for m in metrics:
            rows = mine[mine["metric"] == m]
            if not len(rows):
                continue
            phrases = [_versus(verdict, rows.loc[rows["verdict"] == verdict, "baseline"].tolist(),
                               len(rows))
                       for verdict in ("better", "worse", "no significant difference",
                                       *sorted(set(rows["verdict"]) - {
                                           "better", "worse", "no significant difference"}))
                       if (rows["verdict"] == verdict).any()]
            parts.append(f"*{m}*: {', '.join(phrases)}")
        out.append(f"`{v}` vs {n} baseline{'s' if n != 1 else ''} — " + "; ".join(parts) + ".")
    if PER_IMAGE in variants:
        out.append(f"`{PER_IMAGE}` fits its parameters to each image so that x·M keeps the class "
                   "— the quantity Average Drop and % Increase measure — so its Table 3 numbers "
                   "measure the optimiser as much as the explanation.")
    return out


def _tie_groups(table3: pd.DataFrame, tol: float = TIE_TOLERANCE) -> list[list[str]]:
    groups: list[list[str]] = []
    reps: list[tuple[float, float]] = []
    for _, r in table3.iterrows():
        key = (float(r["avg_drop"]), float(r["increase"]))
        for group, rep in zip(groups, reps, strict=True):
            if abs(key[0] - rep[0]) <= tol and abs(key[1] - rep[1]) <= tol:
                group.append(str(r["method"]))
                break
        else:
            groups.append([str(r["method"])])
            reps.append(key)
    return [g for g in groups if len(g) > 1]


def _tie_bullet(table3: pd.DataFrame) -> str:
    groups = _tie_groups(table3)
    if not groups:
        return (f"No two of the {len(table3)} methods in Table 3 have equal Average Drop and "
                f"% Increase (to within {TIE_TOLERANCE:g}).")
    return ("Ties in Table 3 (equal Average Drop and % Increase, to within "
            f"{TIE_TOLERANCE:g}): " + "; ".join(" = ".join(f"`{m}`" for m in g) for g in groups)
            + ".")


def _trend_bullet(trend: pd.DataFrame) -> str | None:
    if not len(trend):
        return None
    t = trend.assign(_rho=trend["spearman"].round(6).fillna(-np.inf))
    t = t.sort_values(["_rho", "max_abs_diff"], ascending=[False, True], kind="stable")
    best, rest = t.iloc[0], t.iloc[1:]

    def cell(r: pd.Series) -> str:
        rho = "n/a" if pd.isna(r["spearman"]) else f"{r['spearman']:.2f}"
        return f"*{r['readout']}* (Spearman {rho}, largest absolute difference " \
            f"{r['max_abs_diff']:.2f})"

    sentence = (f"Of the {len(t)} Table 4 read-outs, {cell(best)} follows the paper's Grad-CAM "
                "row best")
    if len(rest):
        sentence += "; then " + ", ".join(cell(r) for _, r in rest.iterrows())
    same = trend.loc[trend["same_direction_every_step"].astype(str) == "True", "readout"].tolist()
    sentence += (". Changing with k in the paper's direction at every step: "
                 f"{', '.join(f'*{x}*' for x in same) if same else 'none'}.")
    return sentence


def _sanity_bullet(sanity: pd.DataFrame) -> str:
    steps = [c for c in sanity.columns if re.fullmatch(r"step\d+", c)]
    last = max(steps, key=lambda c: int(c[len("step"):])) if steps else None
    flagged = sanity["flagged"].astype(str) == "True"

    def named(rows: pd.DataFrame) -> str:
        if not len(rows):
            return "none"
        if last is None:
            return _names(rows["method"].tolist())
        return ", ".join(f"`{r['method']}` ({r[last]:.2f})" for _, r in rows.iterrows())

    where = (f" over {len(steps)} steps; in brackets, the mean Spearman correlation of each "
             "method's maps after the last step with its maps on the trained model") if last else ""
    return (f"Sanity check (cascading randomisation{where}): flagged as barely changing: "
            f"{named(sanity[flagged])}; not flagged: {named(sanity[~flagged])}.")


def findings(claims: pd.DataFrame | None = None, trend: pd.DataFrame | None = None,
             sanity: pd.DataFrame | None = None, table3: pd.DataFrame | None = None,
             ) -> list[str]:
    """The sentences of "What the results say", each built from the tables given (any may be
    ``None``: its sentences are left out)."""
    out = []
    if claims is not None and len(claims):
        n = int(table3["n_images"].max()) if table3 is not None and len(table3) else None
        out += _claim_bullets(claims, n)
    if table3 is not None and len(table3):
        out.append(_tie_bullet(table3))
    if trend is not None:
        bullet = _trend_bullet(trend)
        if bullet:
            out.append(bullet)
    if sanity is not None and len(sanity):
        out.append(_sanity_bullet(sanity))
    return out


def _findings(results: Path) -> str | None:
    bullets = findings(_csv(results / "claims.csv"), _csv(results / "table4_trend.csv"),
                       _csv(results / "sanity.csv"), _csv(results / "table3.csv"))
    return "\n".join(f"* {b}" for b in bullets) if bullets else None


# --- the verdict on the paper -------------------------------------------------------------------

def _cell(row: pd.Series, col: str) -> str:
    return f"{row[col]:.2f} [{row[col + '_lo']:.2f}, {row[col + '_hi']:.2f}]"


def _paper(value: object) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{float(value):.2f}"  # type: ignore[arg-type]


def _verdict(results: Path) -> str | None:
    """Paper vs kit, Table 3, every baseline and every reading of the paper's method, with the
    claim check's tally per reading and the images needed to see the paper's gap."""
    t3, claims = _csv(results / "table3.csv"), _csv(results / "claims.csv")
    if t3 is None or claims is None:
        return None
    pw = _csv(results / "power.csv")
    variants = _ordered(claims["variant"])
    baselines = _ordered(claims["baseline"])
    rows = []
    for _, r in t3.iterrows():
        m = r["method"]
        if m not in variants and m not in baselines:
            continue
        row = {"method": f"`{m}`", "Average Drop (kit)": _cell(r, "avg_drop"),
               "Average Drop (paper)": _paper(r.get("paper_avg_drop")),
               "% Increase (kit)": _cell(r, "increase"),
               "% Increase (paper)": _paper(r.get("paper_increase"))}
        sub = claims[claims["variant"] == m]
        for metric in HEADLINE:
            verdicts = sub.loc[sub["metric"] == metric, "verdict"]
            row[f"{metric} vs {len(baselines)} baselines"] = tally_verdicts(verdicts)
        need = ""
        if pw is not None and len(sub):
            hit = pw[(pw["variant"] == m) & (pw["baseline"] == baselines[0])
                     & (pw["metric"] == CLAIM_COLUMN["Average Drop"])]
            if len(hit) and not pd.isna(hit["n_needed"].iloc[0]):
                need = f"{int(hit['n_needed'].iloc[0])}"
        row[f"images to see the paper's AD gap vs `{baselines[0]}`"] = need
        rows.append(row)
    n = int(t3["n_images"].max())
    legend = (f"Kit: {n} images, mean [{LEVEL:.0%} bootstrap interval]; paper: ResNet-50 on "
              "ImageNet (every reading of its method stands beside its \"ours\"). Tallies: "
              "verdicts of paired Wilcoxon tests against the baselines, Holm-adjusted, "
              f"alpha {ALPHA}: *better* / *worse* in / against the paper's direction, *n.s.* no "
              "significant difference. Images needed: paired t, power 0.8 (see Power in "
              "RESULTS.md).")
    return pd.DataFrame(rows).to_markdown(index=False) + "\n\n" + legend


#: claim label -> per-image column
CLAIM_COLUMN = {label: col for col, (label, _) in CLAIMS.items()}


def _smoothgrad_bullet(t3: pd.DataFrame) -> str | None:
    names = ["smoothgradcampp", "smoothgradcampp-maps"]
    sub = t3.set_index("method")
    if not all(n in sub.index for n in names) or "smoothgradcampp" not in PAPER_TABLE3:
        return None
    paper = PAPER_TABLE3["smoothgradcampp"]
    dist = {n: abs(sub.loc[n, "avg_drop"] - paper["avg_drop"])
            + abs(sub.loc[n, "increase"] - paper["increase"]) for n in names}
    best = min(dist, key=dist.__getitem__)
    parts = [f"`{n}` {sub.loc[n, 'avg_drop']:.2f} / {sub.loc[n, 'increase']:.2f}" for n in names]
    return (f"SmoothGrad-CAM++, two definitions (Average Drop / % Increase): {parts[0]} (noise "
            f"averages the gradient terms), {parts[1]} (mean of each noisy copy's Grad-CAM++ map); "
            f"the paper: {paper['avg_drop']:.2f} / {paper['increase']:.2f}. Closer to the paper's "
            f"row: `{best}` (sum of absolute differences {dist[best]:.2f} against "
            f"{max(dist.values()):.2f}).")


def _seeds_bullet(seeds: pd.DataFrame) -> str:
    parts = []
    for init, sub in seeds.groupby("init", sort=False):
        cells = [f"{r['metric']} {r['mean']:.2f} [{r['min']:.2f}, {r['max']:.2f}] vs Grad-CAM "
                 f"{r['gradcam']:.2f}, better for {r['better']}, worse for {r['worse']}, "
                 f"n.s. for {r['no significant difference']} of {r['seeds']} seeds"
                 for _, r in sub.iterrows() if r["metric"] in HEADLINE]
        parts.append(f"init `{init}`: " + "; ".join(cells))
    return ("`attention-untrained` (Eq. 6-7 never trained, mean [min, max] over seeds): "
            + " — ".join(parts) + ".")


def _protocol_bullet(changes: pd.DataFrame) -> str:
    protocols = [c for c in changes.columns if "/" in c]
    changed = changes[changes["changes"].astype(bool)]
    text = (f"Protocol sensitivity ({len(protocols)} protocols: target x fill; soft map and top "
            f"20%): {len(changed)} of {len(changes)} verdicts (variant x baseline x metric) change "
            "with the protocol")
    if not len(changed):
        return text + "; none does."
    examples = [f"`{r['variant']}` vs `{r['baseline']}`, {r['metric']}: "
                + ", ".join(f"{p} {VERDICTS.get(r[p], r[p])}" for p in protocols)
                for _, r in changed.head(3).iterrows()]
    return text + ", e.g. " + "; ".join(examples) + "."


def _power_bullet(pw: pd.DataFrame) -> str | None:
    col = CLAIM_COLUMN["Average Drop"]
    sub = pw[(pw["metric"] == col) & pw["paper_gap"].notna()]
    if not len(sub):
        return None
    n = int(sub["n_images"].max())
    mdd = sub["mdd"]
    need = sub["n_needed"].dropna()
    reach = int(sub["detectable_at_n"].astype(bool).sum())
    text = (f"Power (paired t, alpha {ALPHA}, power 0.8): with {n} images this run detects "
            f"Average Drop differences of {mdd.min():.2f} to {mdd.max():.2f} points (by "
            "comparison); the paper's own gaps (its \"ours\" minus each baseline, "
            f"{sub['paper_gap'].abs().min():.2f} to {sub['paper_gap'].abs().max():.2f} points)")
    if len(need):
        text += (f" need {int(need.min())} to {int(need.max())} images; {reach} of {len(sub)} "
                 "comparisons are powered for them at this n.")
    return text


def _scale_cost(path: Path) -> str | None:
    """The ImageNet cost estimate of ``benchmarks/bench_scale.py``, in one paragraph."""
    text = _read(path)
    if text is None:
        return None
    est = json.loads(text)["imagenet"]
    gpus = ", ".join(f"{g['hours']:.2f} h on {g['devices']}" for g in est["gpus"])
    return (f"Cost of ImageNet's {est['n_images']:,} validation images with every method "
            f"({est['forwards_per_image']:.0f} forwards per image, measured): "
            f"{est['cpu_hours']:.0f} h on the benchmark's CPU ({est['base']}); on GPUs, estimated "
            f"at {est['gpu_ms_per_forward']} ms per image forward (an assumption until measured "
            f"with `bench_cam.py --device cuda`): {gpus}. Details: "
            "[`benchmarks/SCALE_cpu.md`](benchmarks/SCALE_cpu.md).")


def _precision(results: Path) -> str | None:
    """One paragraph on the opt-in fast forwards (``python -m paperlib.precision``'s summary):
    the fastest safe mode, its speed-up against the CPU goal, and why the others are not safe."""
    summ = _csv(results / "precision_summary.csv")
    if summ is None or summ.empty:
        return None
    first = summ.iloc[0]
    where = (f"{first['device']}, {int(first['threads'])} thread"
             f"{'s' if int(first['threads']) != 1 else ''}")
    text = (f"Opt-in fast metric forwards (`ARGS=\"--precision bf16 --compile\"`; default fp32 "
            f"eager), measured on {int(first['images'])} images of split `{first['split']}` with "
            f"every method ({where}; [`results/precision.md`](results/precision.md)): ")
    safe = summ[summ["safe"]].sort_values("evaluation_speedup", ascending=False)
    goal = SPEEDUP_GOAL["cpu" if first["device"] == "cpu" else "cuda"]
    if len(safe):
        b = safe.iloc[0]
        met = "meets" if b["evaluation_speedup"] >= goal else "misses"
        text += (f"the fastest safe mode is `{b['mode']}`, full evaluation "
                 f"**{b['evaluation_speedup']:.2f}x** faster ({met} the {goal:g}x goal), Average "
                 f"Drop moved by at most {b['max_avg_drop_delta_over_width']:.2g} of its "
                 f"interval width, {int(b['verdicts_changed'])} of {int(b['verdicts'])} verdicts "
                 "changed")
    else:
        text += "no fast mode is safe"
    unsafe = [f"`{r['mode']}` is {r['evaluation_speedup']:.2f}x but moves an Average Drop by "
              f"{r['max_avg_drop_delta_over_width']:.2f} of its interval width and changes "
              f"{int(r['verdicts_changed'])} of {int(r['verdicts'])} verdicts"
              for _, r in summ[~summ["safe"]].iterrows()]
    if unsafe:
        text += "; not safe: " + "; ".join(unsafe)
    return (text + " (safe: every verdict unchanged and every Average Drop within "
            f"{SAFE_WIDTH_FRACTION:g} of its interval width).")


def _matrix(results: Path) -> str | None:
    """The claim matrix (``make reproduce-matrix``): its sentence, the Average Drop / % Increase
    tallies per variant and cell, each cell's compute time, links to the full table and figure
    (a few lines: the README stays short)."""
    sentence = _read(results / "claim_matrix_verdict.txt")
    tally = _csv(results / "claim_matrix_tally.csv")
    if sentence is None or tally is None:
        return None
    parts = [sentence.strip(), "", tally.to_markdown(index=False), "",
             "Entries: verdicts against the baselines (AD: Average Drop, %Inc: % Increase), "
             "Holm-adjusted paired Wilcoxon tests within each cell."]
    cells = _read(results / "matrix" / "cells.json")
    if cells:
        records = json.loads(cells)
        order = [c for c in tally.columns if c in records] + \
            [c for c in records if c not in tally.columns]
        times = ", ".join(f"{name} {records[name]['compute_seconds'] / 60:.0f} min"
                          for name in order)
        parts[-1] += f" Compute time per cell: {times}."
    parts[-1] += (" Every comparison (each baseline; also the top-20% read-out and deletion / "
                  "insertion AUC): [`results/claim_matrix.md`](results/claim_matrix.md), "
                  "[`figures/claim_matrix.png`](figures/claim_matrix.png).")
    return "\n".join(parts)


def _readings(results: Path) -> str | None:
    """Bullets on the readings of the paper: SmoothGrad definitions, the untrained module,
    protocol sensitivity, power, Table 4's scale."""
    bullets = []
    for name, bullet in (("table3.csv", _smoothgrad_bullet), ("untrained_seeds.csv", _seeds_bullet),
                         ("protocol_verdicts.csv", _protocol_bullet), ("power.csv", _power_bullet)):
        frame = _csv(results / name)
        if frame is not None:
            bullets.append(bullet(frame))
    scale = _read(results / "table4_scale_verdict.txt")
    if scale:
        bullets.append("Table 4 by scale: " + scale.strip())
    text = [f"* {b}" for b in bullets if b]
    return "\n".join(text) if text else None


# --- README blocks and RESULTS.md ----------------------------------------------------------------

def blocks(results: Path, bench: Path | None = None) -> dict[str, str | None]:
    """Every block's content by name (``None`` where its source file is missing)."""
    bench = REPO_ROOT / "benchmarks" if bench is None else bench
    return {
        "table2": _md(results, "table2"),
        "choice": _choice(results),
        "table3": _md(results, "table3"),
        "table4": _table4_blocks(results),
        "trend": _md(results, "table4_trend"),
        "claims": _claims(results),
        "curves": _md(results, "deletion_insertion"),
        "wilcoxon": _wilcoxon(results),
        "sanity": _md(results, "sanity"),
        "speed": _speed(results),
        "speed_full": _speed_full(results),
        "findings": _findings(results),
        "verdict": _verdict(results),
        "scale_cost": _scale_cost(bench / "scale_cpu.json"),
        "readings": _readings(results),
        "power": _md(results, "power"),
        "untrained": _md(results, "untrained_seeds"),
        "protocol": _md(results, "protocol_verdicts"),
        "scale": _md(results, "table4_scale"),
        "precision": _precision(results),
        "matrix": _matrix(results),
        "benchmark_cpu": (_read(bench / "REPORT_cpu.md") or "").strip() or None,
    }


#: RESULTS.md: (heading, blocks shown under it, in order).
SECTIONS = [
    ("The verdict on the paper: its numbers beside ours", ["verdict", "readings"]),
    ("What the results say", ["findings"]),
    ("Table 2 — black-box selection", ["table2", "choice"]),
    ("Table 3 — Average Drop (lower is better) and % Increase (higher is better)", ["table3"]),
    ("Table 4 — percentage in (top k% of pixels kept)", ["table4"]),
    ("Table 4 — which read-out follows the paper's trend", ["trend"]),
    ("Deletion and insertion AUC", ["curves"]),
    ("The paper's claims, variant vs baseline", ["claims"]),
    ("Paired Wilcoxon tests", ["wilcoxon"]),
    ("Power — could this run see the paper's gaps?", ["power"]),
    ("The untrained module over many seeds", ["untrained"]),
    ("Protocol sensitivity — verdicts per fill and target", ["protocol"]),
    ("Table 4 by scale", ["scale"]),
    ("Sanity check — cascading model-parameter randomisation", ["sanity"]),
    ("Claim matrix — three black boxes x two layers", ["matrix"]),
    ("Fast forwards — reduced precision and compile", ["precision"]),
    ("Run time", ["speed_full"]),
]


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def results_markdown(results: Path) -> str:
    """The whole of ``RESULTS.md`` for the files in ``results``."""
    content = blocks(results)
    generated = ("_Generated by `make readme` (`python -m paperlib.readme`) from the files that "
                 "`make reproduce` wrote to `results/`; do not edit by hand. The CSV files hold "
                 f"every number with its interval bounds; intervals are {LEVEL:.0%} percentile "
                 "bootstrap over images._")
    lines = ["# Results", "", generated, ""]
    lines += [f"* [{h}](#{_anchor(h)})" for h, _ in SECTIONS] + [""]
    for heading, names in SECTIONS:
        lines += [f"## {heading}", ""]
        for name in names:
            body = content[name]
            lines += [body if body is not None else PLACEHOLDER, ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_results(results: Path | None = None, out: Path | None = None) -> Path:
    """Write ``RESULTS.md`` (default: into ``results``) and return its path."""
    results = results or results_dir()
    out = out or results / "RESULTS.md"
    out.write_text(results_markdown(results))
    return out


def replace_blocks(text: str, contents: dict[str, str | None]) -> tuple[str, list[str]]:
    """Replace the body of every ``<!-- BEGIN name -->`` ... ``<!-- END name -->`` block named in
    ``contents`` (``None``: :data:`PLACEHOLDER`); other blocks and all text outside stay as they
    are. Returns the new text and the names of the blocks found."""
    changed = []
    for name, content in contents.items():
        pattern = re.compile(rf"(<!-- BEGIN {re.escape(name)} -->\n)(.*?)(<!-- END "
                             rf"{re.escape(name)} -->)", re.DOTALL)
        if not pattern.search(text):
            continue
        body = content if content is not None else PLACEHOLDER

        def fill(m: re.Match[str], body: str = body) -> str:
            return m.group(1) + body + "\n" + m.group(3)

        text = pattern.sub(fill, text)
        changed.append(name)
    return text, changed


def update(readme: Path = REPO_ROOT / "README.md", results: Path | None = None) -> list[str]:
    """Refresh the README's blocks from ``results``; returns the names of the blocks found."""
    results = results or results_dir()
    old = readme.read_text()
    text, changed = replace_blocks(old, blocks(results))
    if text != old:
        readme.write_text(text)
    return changed


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write results/RESULTS.md and refresh the README's "
                                "blocks from a run's files.")
    p.add_argument("--results", type=Path, default=None, help="folder of a run's files "
                   "(default: $PAPERLIB_RESULTS, else results/)")
    p.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md")
    args = p.parse_args(argv)
    results = args.results or results_dir()
    print("wrote", write_results(results))
    print("updated README blocks:", ", ".join(update(args.readme, results)) or "none")
