"""Reports as facts + templates: the one renderer of RESULTS.md, the README's blocks, the precision
report and the benchmark reports.

The facts are data computed here from a run's files (plain dicts, lists and DataFrames: tie
groups, the trend ranking, the distance to the paper, the verdict tallies...), tested as data; the
wording lives in Jinja2 templates under ``paperlib/templates/`` and tables are
``DataFrame.to_markdown``. :func:`render` renders a template with facts. Torch-free: ``make
readme`` and ``paperlib readme --check`` import no torch.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from .agreement import agreement_facts
from .formatting import formatted
from .paper_reference import PAPER_TABLE3, PAPER_TABLE4
from .paths import PACKAGE_DIR, REPO_ROOT
from .schema import READOUTS, SOFT, drop
from .stats import bootstrap_ci
from .verdicts import ALPHA, HEADLINE, VERDICTS, claim_holds, tally_verdicts

__all__ = ["LEVEL", "PER_IMAGE", "PLACEHOLDER", "READOUTS_FILE", "TIE_TOLERANCE", "blocks",
           "beats_controls", "claim_columns", "claim_facts", "control_facts", "extra_readouts",
           "identity_facts", "readout_facts", "readout_table_name",
           "closest_to_paper", "facts", "findings", "power_facts", "precision_facts", "render",
           "sanity_facts", "tie_groups", "trend_ranking", "verdict_rows"]

#: What a block shows when the file it is made from does not exist.
PLACEHOLDER = "_(not yet produced: run `make reproduce`)_"
#: Level of the bootstrap intervals (the default of :func:`paperlib.stats.bootstrap_ci`).
LEVEL = inspect.signature(bootstrap_ci).parameters["level"].default
#: Two methods tie when Average Drop and % Increase (percentage points) differ by at most this.
TIE_TOLERANCE = 1e-4
#: The variant whose parameters are fitted to each image on the quantity the metrics measure.
PER_IMAGE = "attention-per-image"
#: Where the templates are (shipped as package data).
TEMPLATES = PACKAGE_DIR / "templates"


# --- the renderer --------------------------------------------------------------------------------

def _md(frame: pd.DataFrame, **kwargs: Any) -> str:
    return frame.to_markdown(index=False, **kwargs)


def _names(items: Sequence[str]) -> str:
    return ", ".join(f"`{x}`" for x in items)


def _and(labels: Sequence[str]) -> str:
    """``*a*, *b* and *c*`` (labels may contain commas)."""
    items = [f"*{x}*" for x in labels]
    return " and ".join([", ".join(items[:-1]), items[-1]]) if len(items) > 1 else \
        (items[0] if items else "none")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             undefined=jinja2.StrictUndefined, autoescape=False,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(md=_md, names=_names, and_=_and, anchor=_anchor,
                       f=lambda v, spec: format(v, spec))
    return env


_ENV = _env()


def render(template: str, **facts: Any) -> str:
    """The template ``paperlib/templates/<template>`` rendered with ``facts``."""
    return _ENV.get_template(template).render(**facts)


# --- reading a run's files -----------------------------------------------------------------------

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


def _file_md(results: Path, name: str) -> str | None:
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


def _json(path: Path) -> Any:
    text = _read(path)
    return None if text is None else json.loads(text)


# --- facts: the claims ---------------------------------------------------------------------------

_OTHER = ("better", "worse", "no significant difference")


def claim_facts(claims: pd.DataFrame) -> dict[str, Any]:
    """The claim check as data: variants, baselines, metrics (in order), the headline metrics
    present, per variant whether the paper's claim holds, and per variant and metric the baselines
    of each verdict (``better`` first, then ``worse``, ``no significant difference``, others)."""
    variants, baselines = _ordered(claims["variant"]), _ordered(claims["baseline"])
    metrics = _ordered(claims["metric"])
    headline = [m for m in HEADLINE if m in metrics]
    holds = claim_holds(claims) if headline else pd.Series(dtype=bool)
    per: dict[str, dict[str, Any]] = {}
    for v in variants:
        mine = claims[claims["variant"] == v]
        by_metric: dict[str, list[dict[str, Any]]] = {}
        for m in metrics:
            rows = mine[mine["metric"] == m]
            if not len(rows):
                continue
            order = (*_OTHER, *sorted(set(rows["verdict"]) - set(_OTHER)))
            by_metric[m] = [{"verdict": verdict, "total": len(rows),
                             "baselines": rows.loc[rows["verdict"] == verdict,
                                                   "baseline"].tolist()}
                            for verdict in order if (rows["verdict"] == verdict).any()]
        per[v] = {"baselines": len(_ordered(mine["baseline"])), "metrics": by_metric}
    ok = {v: bool(holds[v]) for v in holds.index}
    return {"variants": variants, "baselines": baselines, "metrics": metrics,
            "headline": headline, "holds": ok,
            "holds_for": [v for v in variants if ok.get(v)],
            "fails_for": [v for v in variants if not ok.get(v)], "per_variant": per}


def tie_groups(table3: pd.DataFrame, tol: float = TIE_TOLERANCE) -> list[list[str]]:
    """Groups (of two or more) of Table 3's methods with equal Average Drop and % Increase, to
    within ``tol``: each method joins the first group whose first member it ties with."""
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


def trend_ranking(trend: pd.DataFrame) -> list[dict[str, Any]]:
    """Table 4's read-outs, best follower of the paper's Grad-CAM row first: by Spearman (rounded
    to 6 digits; undefined last), then by the smaller largest absolute difference."""
    t = trend.assign(_rho=trend["spearman"].round(6).fillna(-np.inf))
    t = t.sort_values(["_rho", "max_abs_diff"], ascending=[False, True], kind="stable")
    return [{"readout": r["readout"],
             "spearman": None if pd.isna(r["spearman"]) else float(r["spearman"]),
             "max_abs_diff": float(r["max_abs_diff"]),
             "same_direction_every_step":
                 str(r["same_direction_every_step"]) == "True"} for _, r in t.iterrows()]


def sanity_facts(sanity: pd.DataFrame) -> dict[str, Any]:
    """The sanity check: its number of steps, and the flagged / not flagged methods with their
    correlation after the last step (``None`` without step columns)."""
    steps = [c for c in sanity.columns if re.fullmatch(r"step\d+", c)]
    last = max(steps, key=lambda c: int(c[len("step"):])) if steps else None
    flagged = sanity["flagged"].astype(str) == "True"

    def named(rows: pd.DataFrame) -> list[dict[str, Any]]:
        return [{"method": r["method"], "last": None if last is None else float(r[last])}
                for _, r in rows.iterrows()]

    return {"steps": len(steps) if last else 0, "flagged": named(sanity[flagged]),
            "not_flagged": named(sanity[~flagged])}


def findings(claims: pd.DataFrame | None = None, trend: pd.DataFrame | None = None,
             sanity: pd.DataFrame | None = None, table3: pd.DataFrame | None = None,
             ) -> dict[str, Any]:
    """The facts of "What the results say", from the tables given (any may be ``None``: its
    facts are ``None``)."""
    return {
        "claims": claim_facts(claims) if claims is not None and len(claims) else None,
        "n_images": (int(table3["n_images"].max()) if table3 is not None and len(table3)
                     else None),
        "alpha": ALPHA, "per_image": PER_IMAGE, "tolerance": TIE_TOLERANCE,
        "ties": tie_groups(table3) if table3 is not None and len(table3) else None,
        "n_table3": len(table3) if table3 is not None else 0,
        "trend": trend_ranking(trend) if trend is not None and len(trend) else None,
        "trend_same": (trend.loc[trend["same_direction_every_step"].astype(str) == "True",
                                 "readout"].tolist() if trend is not None else []),
        "sanity": sanity_facts(sanity) if sanity is not None and len(sanity) else None,
    }


# --- facts: the verdict on the paper and the readings --------------------------------------------

def _cell(row: pd.Series, col: str) -> str:
    return f"{row[col]:.2f} [{row[col + '_lo']:.2f}, {row[col + '_hi']:.2f}]"


def _paper(value: object) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{float(value):.2f}"  # type: ignore[arg-type]


def verdict_rows(table3: pd.DataFrame, claims: pd.DataFrame,
                 power: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """Paper vs kit per baseline and variant of the claim check (Table 3's order): the kit's and
    the paper's Average Drop and % Increase, per headline metric the tally of the verdicts, and the
    images needed to see the paper's Average Drop gap against the first baseline (``None``)."""
    variants, baselines = _ordered(claims["variant"]), _ordered(claims["baseline"])
    rows = []
    for _, r in table3.iterrows():
        m = r["method"]
        if m not in variants and m not in baselines:
            continue
        sub = claims[claims["variant"] == m]
        need = None
        if power is not None and len(sub):
            hit = power[(power["variant"] == m) & (power["baseline"] == baselines[0])
                        & (power["metric"] == drop(SOFT))]
            if len(hit) and not pd.isna(hit["n_needed"].iloc[0]):
                need = int(hit["n_needed"].iloc[0])
        rows.append({"method": m, "avg_drop": _cell(r, "avg_drop"),
                     "paper_avg_drop": _paper(r.get("paper_avg_drop")),
                     "increase": _cell(r, "increase"),
                     "paper_increase": _paper(r.get("paper_increase")),
                     "tallies": {metric: tally_verdicts(sub.loc[sub["metric"] == metric,
                                                                "verdict"])
                                 for metric in HEADLINE},
                     "n_needed": need})
    return rows


def _verdict(results: Path) -> dict[str, Any] | None:
    t3, claims = _csv(results / "table3.csv"), _csv(results / "claims.csv")
    if t3 is None or claims is None:
        return None
    baselines = _ordered(claims["baseline"])
    rows = verdict_rows(t3, claims, _csv(results / "power.csv"))
    controls = _csv(results / "controls.csv")
    beats = beats_controls(controls) if controls is not None else {}
    gain = "avg_gain_lo" in t3.columns
    by_method = t3.set_index("method")
    table = pd.DataFrame([{
        "method": f"`{r['method']}`", "Average Drop (kit)": r["avg_drop"],
        "Average Drop (paper)": r["paper_avg_drop"], "% Increase (kit)": r["increase"],
        "% Increase (paper)": r["paper_increase"],
        **({"Average Gain (kit)": _cell(by_method.loc[r["method"]], "avg_gain")} if gain else {}),
        **{f"{metric} vs {len(baselines)} baselines": t for metric, t in r["tallies"].items()},
        **({"beats every control on": beats.get(r["method"], "")} if beats else {}),
        f"images to see the paper's AD gap vs `{baselines[0]}`":
            "" if r["n_needed"] is None else str(r["n_needed"])} for r in rows])
    return {"table": table, "n_images": int(t3["n_images"].max()), "level": LEVEL,
            "alpha": ALPHA, "gain": gain, "controls": bool(beats)}


def beats_controls(controls: pd.DataFrame) -> dict[str, str]:
    """Per method of the control check (``controls.csv``): on how many verdict metrics its mean
    beats every control map's, as ``"k of n"``."""
    out = {}
    for m, sub in controls.groupby("method", sort=False):
        won = sub["beats_every_control"].astype(str) == "True"
        out[str(m)] = f"{int(won.sum())} of {len(sub)}"
    return out


def _beating(controls: pd.DataFrame) -> list[dict[str, Any]]:
    """Per metric of a control check (``controls.csv``, ``road_controls.csv``): the best control,
    its mean and the methods beating every control (mean) and significantly so."""
    metrics = []
    for label, sub in controls.groupby("metric", sort=False):
        won = sub["beats_every_control"].astype(str) == "True"
        sig = sub["significantly"].astype(str) == "True"
        metrics.append({"metric": str(label), "column": str(sub["column"].iloc[0]),
                        "best_control": str(sub["best_control"].iloc[0]),
                        "control_value": float(sub["control_value"].iloc[0]),
                        "n_methods": len(sub), "beaten_by": sub.loc[won, "method"].tolist(),
                        "significantly": sub.loc[sig, "method"].tolist()})
    return metrics


def control_facts(controls: pd.DataFrame, table3: pd.DataFrame) -> dict[str, Any]:
    """The control check as data: the control maps' Table 3 cells (the methods of Table 3 that
    the check compares against, i.e. not among its ``method`` column), and per verdict metric the
    best control, its mean and the methods beating every control (mean) and significantly so."""
    checked = _ordered(controls["method"])
    ctrl_rows = table3[~table3["method"].isin(checked)]
    maps = [{"method": r["method"], "avg_drop": float(r["avg_drop"]),
             "increase": float(r["increase"]),
             "avg_gain": float(r["avg_gain"]) if "avg_gain" in r else None}
            for _, r in ctrl_rows.iterrows()]
    return {"controls": maps, "metrics": _beating(controls), "n_methods": len(checked)}


def road_facts(road: pd.DataFrame, against: pd.DataFrame | None) -> dict[str, Any]:
    """The ROAD study as data (``road.csv``, ``road_controls.csv``): its images and methods, the
    best non-control method by ``road_combined``, the controls' ``road_combined`` and, per ROAD
    metric, the methods beating every control."""
    ctrl = road[road["role"] == "control"]
    others = road[~road["method"].isin(ctrl["method"])]
    best = others.loc[others["road_combined"].idxmax()] if len(others) else None
    return {"n_images": int(road["n_images"].max()), "n_methods": len(road),
            "n_others": len(others),
            "best": ({"method": str(best["method"]), "road_combined": float(best["road_combined"])}
                     if best is not None else None),
            "controls": [{"method": str(r["method"]), "road_combined": float(r["road_combined"])}
                         for _, r in ctrl.iterrows()],
            "metrics": _beating(against) if against is not None else []}


def _controls(results: Path) -> dict[str, Any] | None:
    controls, t3 = _csv(results / "controls.csv"), _csv(results / "table3.csv")
    if controls is None or t3 is None or not len(controls):
        return None
    return control_facts(controls, t3)


def _road(results: Path) -> dict[str, Any] | None:
    road = _csv(results / "road.csv")
    if road is None:
        return None
    return road_facts(road, _csv(results / "road_controls.csv"))


def _trial(results: Path) -> dict[str, Any] | None:
    """The metric on trial: the control check, ROAD and the agreement between metrics."""
    out = {"controls": _controls(results), "road": _road(results),
           "agreement": _agreement(results)}
    return out if any(v is not None for v in out.values()) else None


def identity_facts(table3: pd.DataFrame | None,
                   names: Sequence[str] = ("gradcam", "xgradcam", "hirescam")) -> dict[str, Any]:
    """Grad-CAM = XGrad-CAM = HiResCAM at a last stage followed by pooling and a linear layer:
    the paper's Table 3 cells of the two it reports, the kit's cells of the three (those run) and
    whether they are equal to within :data:`TIE_TOLERANCE` (float32 maps: not bit-equal)."""
    paper = {m: PAPER_TABLE3[m] for m in names if m in PAPER_TABLE3}
    kit = {}
    if table3 is not None:
        sub = table3.set_index("method")
        kit = {m: {"avg_drop": float(sub.loc[m, "avg_drop"]),
                   "increase": float(sub.loc[m, "increase"])} for m in names if m in sub.index}
    spread = max((max(v[c] for v in kit.values()) - min(v[c] for v in kit.values())
                  for c in ("avg_drop", "increase")), default=0.0) if kit else 0.0
    return {"paper": paper, "kit": kit, "kit_equal": len(kit) > 1 and spread <= TIE_TOLERANCE,
            "tolerance": TIE_TOLERANCE, "test": IDENTITY_TEST}


#: The test that proves the identity on the kit's black box.
IDENTITY_TEST = ("tests/test_cam.py::"
                 "test_gradcam_xgradcam_hirescam_are_one_map_before_pooling_and_a_linear_layer")


def _agreement(results: Path) -> dict[str, Any] | None:
    tau, rel = _csv(results / "metric_agreement.csv"), _csv(results / "metric_reliability.csv")
    sentence = _read(results / "metric_agreement.txt")
    if tau is None or sentence is None:
        return None
    return {"sentence": sentence.strip(), "facts": agreement_facts(tau, rel)}


def closest_to_paper(table3: pd.DataFrame, names: Sequence[str] = (
        "smoothgradcampp", "smoothgradcampp-maps"), paper: str = "smoothgradcampp",
        ) -> dict[str, Any] | None:
    """Which of ``names`` is closest to the paper's Table 3 row ``paper`` (sum of the absolute
    differences of Average Drop and % Increase), with every method's values and distance;
    ``None`` when one is missing."""
    sub = table3.set_index("method")
    if not all(n in sub.index for n in names) or paper not in PAPER_TABLE3:
        return None
    ref = PAPER_TABLE3[paper]
    dist = {n: float(abs(sub.loc[n, "avg_drop"] - ref["avg_drop"])
                     + abs(sub.loc[n, "increase"] - ref["increase"])) for n in names}
    best = min(dist, key=dist.__getitem__)
    return {"methods": [{"method": n, "avg_drop": float(sub.loc[n, "avg_drop"]),
                         "increase": float(sub.loc[n, "increase"]), "distance": dist[n]}
                        for n in names],
            "paper": ref, "best": best, "distance": dist[best], "worst": max(dist.values())}


def seeds_facts(seeds: pd.DataFrame) -> list[dict[str, Any]]:
    """The untrained module's seed sweep: per init, its headline metrics' rows."""
    return [{"init": init, "rows": [r.to_dict() for _, r in sub.iterrows()
                                    if r["metric"] in HEADLINE]}
            for init, sub in seeds.groupby("init", sort=False)]


def protocol_facts(changes: pd.DataFrame, means: pd.DataFrame | None = None,
                   examples: int = 3) -> dict[str, Any]:
    """Protocol sensitivity: the protocols, how many verdicts change, the first few that do, and
    the images each protocol ran on (``means``: protocol.csv; ``None`` when unknown)."""
    protocols = [c for c in changes.columns if "/" in c]
    changed = changes[changes["changes"].astype(bool)]
    n = (int(means["n_images"].max()) if means is not None and "n_images" in means
         and len(means) else None)
    return {"protocols": protocols, "changed": len(changed), "total": len(changes),
            "n_images": n,
            "examples": [{"variant": r["variant"], "baseline": r["baseline"],
                          "metric": r["metric"],
                          "verdicts": [(p, VERDICTS.get(r[p], r[p])) for p in protocols]}
                         for _, r in changed.head(examples).iterrows()]}


def power_facts(power: pd.DataFrame) -> dict[str, Any] | None:
    """Power for Average Drop against the paper's gaps: the detectable difference's range, the
    paper's gaps, the images they need, how many comparisons are powered at this n."""
    sub = power[(power["metric"] == drop(SOFT)) & power["paper_gap"].notna()]
    if not len(sub):
        return None
    need = sub["n_needed"].dropna()
    return {"alpha": ALPHA, "n_images": int(sub["n_images"].max()),
            "mdd": (float(sub["mdd"].min()), float(sub["mdd"].max())),
            "gap": (float(sub["paper_gap"].abs().min()), float(sub["paper_gap"].abs().max())),
            "needed": (int(need.min()), int(need.max())) if len(need) else None,
            "powered": int(sub["detectable_at_n"].astype(bool).sum()), "comparisons": len(sub)}


def _readings(results: Path) -> dict[str, Any] | None:
    t3 = _csv(results / "table3.csv")
    seeds = _csv(results / "untrained_seeds.csv")
    changes = _csv(results / "protocol_verdicts.csv")
    power = _csv(results / "power.csv")
    scale = _read(results / "table4_scale_verdict.txt")
    out = {"smoothgrad": closest_to_paper(t3) if t3 is not None else None,
           "seeds": seeds_facts(seeds) if seeds is not None else None,
           "protocol": (protocol_facts(changes, _csv(results / "protocol.csv"))
                        if changes is not None else None),
           "power": power_facts(power) if power is not None else None,
           "scale": scale.strip() if scale else None}
    return out if any(v for v in out.values()) else None


# --- facts: the other blocks ---------------------------------------------------------------------

def _table4(results: Path) -> dict[str, Any] | None:
    t4 = _csv(results / "table4.csv")
    if t4 is None:
        return None
    ks = sorted({int(c[len("O_top"):]) for c in t4.columns if re.fullmatch(r"O_top\d+", c)})
    shown = formatted(t4)
    readouts = []
    for prefix, title in READOUTS.items():
        cols = ["method"] + [f"{prefix}{k}" for k in ks]
        readouts.append((title, shown[cols].rename(
            columns={f"{prefix}{k}": f"top {k}%" for k in ks})))
    paper = pd.DataFrame([{"paper (ResNet-50)": col, **{f"top {k}%": cells.get(k) for k in ks}}
                          for col, cells in PAPER_TABLE4.items()])
    return {"readouts": readouts, "paper": paper}


def _claims_table(results: Path) -> dict[str, Any] | None:
    claims = _csv(results / "claims.csv")
    if claims is None:
        return None
    wide = claims.pivot_table(index=["variant", "baseline"], columns="metric", values="verdict",
                              aggfunc="first")
    order = pd.MultiIndex.from_tuples(
        [(v, b) for v in _ordered(claims["variant"]) for b in _ordered(claims["baseline"])
         if (v, b) in wide.index], names=["variant", "baseline"])
    wide = wide.reindex(order)[_ordered(claims["metric"])].fillna("").replace(VERDICTS)
    return {"caption": _caption(results, "claims"), "table": wide.reset_index(),
            "alpha": ALPHA}


def _p(p: float) -> str:
    return "n/a" if pd.isna(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


#: The run's read-outs as data (:func:`paperlib.metrics.readout_facts`, written beside the tables
#: by :mod:`paperlib.outputs`): the report's source of column labels and claim directions.
READOUTS_FILE = "readouts.json"


def readout_facts(results: Path) -> list[dict[str, Any]] | None:
    """The read-outs of the run in ``results`` (``None`` when it did not record them)."""
    text = _read(results / READOUTS_FILE)
    return json.loads(text)["readouts"] if text else None


def claim_columns(readouts: Sequence[dict[str, Any]]) -> dict[str, tuple[str, int]]:
    """``{column: (label, direction)}`` of the claim columns of ``readouts``."""
    return {c["name"]: (c["label"], c["direction"]) for r in readouts for c in r["columns"]
            if c["claim"]}


def _wilcoxon(results: Path) -> dict[str, Any] | None:
    wt = _csv(results / "wilcoxon.csv")
    readouts = readout_facts(results)
    if wt is None or readouts is None:
        return None
    claims = claim_columns(readouts)
    labels = {m: claims[m][0] if m in claims else m for m in _ordered(wt["metric"])}
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
    return {"caption": _caption(results, "wilcoxon"), "table": pd.DataFrame(rows).fillna(""),
            "tests": len(wt),
            "lower": [claims[m][0] for m in labels if m in claims and claims[m][1] < 0],
            "higher": [claims[m][0] for m in labels if m in claims and claims[m][1] > 0]}


def _run(results: Path) -> dict[str, Any] | None:
    speed = _json(results / "eval_speed.json")
    summary = _json(results / "reproduce_summary.json")
    if speed is None and summary is None:
        return None
    return {"speed": speed, "summary": summary}


def precision_facts(summary: pd.DataFrame) -> dict[str, Any]:
    """The fast forwards' summary (``precision_summary.csv``): where it was measured, the fastest
    safe mode (``None``) against the device's goal, and the unsafe modes."""
    from .goals import SAFE_WIDTH_FRACTION, SPEEDUP_GOAL

    first = summary.iloc[0]
    safe = summary[summary["safe"]].sort_values("evaluation_speedup", ascending=False)
    goal = SPEEDUP_GOAL["cpu" if first["device"] == "cpu" else "cuda"]
    best = safe.iloc[0].to_dict() if len(safe) else None
    return {"device": first["device"], "threads": int(first["threads"]),
            "images": int(first["images"]), "split": first["split"], "goal": goal,
            "best": best, "meets": best is not None and best["evaluation_speedup"] >= goal,
            "unsafe": [r.to_dict() for _, r in summary[~summary["safe"]].iterrows()],
            "safe_width": SAFE_WIDTH_FRACTION}


def _matrix(results: Path) -> dict[str, Any] | None:
    sentence = _read(results / "claim_matrix_verdict.txt")
    tally = _csv(results / "claim_matrix_tally.csv")
    if sentence is None or tally is None:
        return None
    records = _json(results / "matrix" / "cells.json")
    minutes = None
    if records:
        order = [c for c in tally.columns if c in records] + \
            [c for c in records if c not in tally.columns]
        minutes = [(name, records[name]["compute_seconds"] / 60) for name in order]
    return {"sentence": sentence.strip(), "tally": tally, "minutes": minutes}


#: The ImageNet estimate with the measured CUDA floor (benchmarks/gpu_check.py writes it).
GPU_ESTIMATE = "scale_estimate_cuda.json"


def _scale_cost(scale: dict[str, Any] | None, measured: dict[str, Any] | None
                ) -> dict[str, Any] | None:
    """The ImageNet cost: the CPU benchmark's estimate, its GPU part from the measured CUDA floor
    (``gpu_check.py``'s ``scale_estimate_cuda.json``) when there is one."""
    if not scale:
        return None
    return measured if measured else scale["imagenet"]


def facts(results: Path, bench: Path | None = None) -> dict[str, Any]:
    """Every computed block's facts by name (``None`` where its source files are missing)."""
    bench = REPO_ROOT / "benchmarks" if bench is None else bench
    run = _run(results)
    summ = _csv(results / "precision_summary.csv")
    scale = _json(bench / "scale_cpu.json")
    return {
        "choice": _json(results / "chosen_model.json"),
        "table4": _table4(results),
        "claims": _claims_table(results),
        "wilcoxon": _wilcoxon(results),
        "speed": run,
        "speed_full": run if run and run["speed"] and run["summary"] else None,
        "findings": findings(_csv(results / "claims.csv"), _csv(results / "table4_trend.csv"),
                             _csv(results / "sanity.csv"), _csv(results / "table3.csv")),
        "verdict": _verdict(results),
        "scale_cost": _scale_cost(scale, _json(bench / GPU_ESTIMATE)),
        "readings": _readings(results),
        "precision": precision_facts(summ) if summ is not None and not summ.empty else None,
        "matrix": _matrix(results),
        "trial": _trial(results),
        "identity": identity_facts(_csv(results / "table3.csv")),
    }


#: Blocks that show a file of the run as it is (its ``.md``), by name.
FILES = {"table2": "table2", "table3": "table3", "trend": "table4_trend",
         "curves": "deletion_insertion", "sanity": "sanity", "power": "power",
         "untrained": "untrained_seeds", "protocol": "protocol_verdicts", "scale": "table4_scale",
         "control_table": "controls", "agreement_table": "metric_agreement",
         "reliability": "metric_reliability", "calibration": "calibration",
         "road_table": "road", "road_controls": "road_controls"}
#: Blocks that show a benchmark's report (``benchmarks/<file>``) without its title line.
BENCH_FILES = {"benchmark_cpu": "REPORT_cpu.md", "benchmark_road": "ROAD_cpu.md"}
#: The order of the blocks.
ORDER = ["table2", "choice", "table3", "table4", "trend", "claims", "curves", "wilcoxon",
         "sanity", "speed", "speed_full", "findings", "verdict", "scale_cost", "readings", "power",
         "untrained", "protocol", "scale", "precision", "matrix", "benchmark_cpu", "trial",
         "control_table", "road_table", "road_controls", "benchmark_road", "agreement_table",
         "reliability", "calibration", "identity"]


def blocks(results: Path, bench: Path | None = None) -> dict[str, str | None]:
    """Every block's Markdown by name (``None`` where its source file is missing)."""
    bench = REPO_ROOT / "benchmarks" if bench is None else bench
    computed = facts(results, bench)
    out: dict[str, str | None] = {}
    for name in ORDER:
        if name in FILES:
            out[name] = _file_md(results, FILES[name])
        elif name in BENCH_FILES:
            text = (_read(bench / BENCH_FILES[name]) or "").strip()
            out[name] = re.sub(r"\A# [^\n]*\n+", "", text) or None
        else:
            f = computed[name]
            text = render(f"blocks/{name}.md.j2", f=f) if f is not None else ""
            out[name] = text.rstrip("\n") or None
    for r in extra_readouts(results):
        out[readout_table_name(r["name"])] = _file_md(results, readout_table_name(r["name"]))
    return out


def readout_table_name(readout: str) -> str:
    """The table file (without extension) of a read-out beyond the kit's own three."""
    return f"readout_{readout}"


def extra_readouts(results: Path) -> list[dict[str, Any]]:
    """The run's read-outs beyond the kit's own (each has its own table and RESULTS.md section)."""
    return [r for r in readout_facts(results) or [] if not r["kit"]]
