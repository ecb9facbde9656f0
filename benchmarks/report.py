"""The benchmark's analysis and outputs: ratios, goals met or not and why, the report, the JSON.

A goal's explanation is data: :data:`REASONS` maps a row's kind (``Config.kind``) to groups of
clauses; from each group the first clause whose condition holds adds its text (see
:func:`reason`). The evidence the clauses read is computed once per row (:class:`Evidence`).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs import KIND_GRADIENT, KIND_NOISY, KIND_ON_GRADCAM, SMOOTH_CHUNK_B
from harness import Config

from paperlib.perf import CHUNK_SIZE
from paperlib.report import render

Row = dict[str, Any]
NAN = float("nan")

# ---------------------------------------------------------------------------------------------
# Ratios


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def analyse(configs: list[Config], smooth_n: int) -> tuple[list[Row], list[str]]:
    """One JSON row per configuration (times, ratios, verdicts) and the goals' explanations."""
    by = {c.key: c for c in configs}
    floor_med = by["floor"].ms_per_image("median")
    floor_min = by["floor"].ms_per_image("min")
    rows: list[Row] = []
    reasons: list[str] = []
    for c in configs:
        med, mn = c.ms_per_image("median"), c.ms_per_image("min")
        row: Row = {
            "key": c.key, "label": c.label, "group": c.group, "images_per_call": c.images,
            "repeats": len(c.times), "ms_per_image_median": med, "ms_per_image_min": mn,
            "ratio_to_floor": med / floor_med, "ratio_to_floor_min": mn / floor_min,
            "forwards_per_image": c.forwards_per_image, "times_s": c.times, "note": c.note,
            "reference": c.reference, "reference_label": c.ref_label,
            "reference_factor": c.ref_factor, "goal": c.goal}
        if c.reference is not None:
            ref = by[c.reference]
            row["ratio_to_reference"] = med / (c.ref_factor * ref.ms_per_image("median"))
            row["ratio_to_reference_min"] = mn / (c.ref_factor * ref.ms_per_image("min"))
            # paired per-repetition ratio (same repetition, adjacent in time): robust to drift
            if c.images == ref.images and c.times and ref.times:
                pairs = [a / (c.ref_factor * b) for a, b in zip(c.times, ref.times, strict=False)]
                row["ratio_to_reference_paired_median"] = statistics.median(pairs)
        if c.seconds:
            keys = c.seconds[0].keys()
            row["explain_seconds_median"] = {
                k: statistics.median(s[k] for s in c.seconds) for k in keys}
        if c.goal is not None:
            row["met"] = row["ratio_to_reference"] <= c.goal
            row["met_on_min"] = row["ratio_to_reference_min"] <= c.goal
            reasons.append(reason(Evidence.of(c, row, by, floor_med, smooth_n)))
        rows.append(row)
    return rows, reasons


def breakdown(c: Config) -> tuple[float, float, dict[str, float]]:
    """(pass ms/image, methods ms/image, {method: ms/image}) from Explanations.seconds medians."""
    if not c.seconds:
        return NAN, NAN, {}
    med = {k: 1000 * statistics.median(s[k] for s in c.seconds) / c.images for k in c.seconds[0]}
    methods = {k: v for k, v in med.items() if k != "pass"}
    return med.get("pass", NAN), sum(methods.values()), methods


# ---------------------------------------------------------------------------------------------
# Goals: why met or not, as rules


@dataclass(frozen=True)
class Evidence:
    """What a goal row's explanation reads: the row, its reference and where its time went."""

    cfg: Config
    row: Row
    by: Mapping[str, Config]
    floor_med: float              # ms/image, median
    smooth_n: int
    pass_ms: float                # the shared pass, ms/image (Explanations.seconds median)
    methods_ms: float             # the methods' own computation, ms/image
    per_method: dict[str, float]  # {method: ms/image}

    @classmethod
    def of(cls, c: Config, row: Row, by: Mapping[str, Config], floor_med: float,
           smooth_n: int) -> Evidence:
        p, meth, per = breakdown(c)
        return cls(c, row, by, floor_med, smooth_n, p, meth, per)

    @property
    def ratio(self) -> float:
        return float(self.row["ratio_to_reference"])

    @property
    def goal(self) -> float:
        assert self.cfg.goal is not None
        return self.cfg.goal

    @property
    def met(self) -> bool:
        return bool(self.row["met"])

    @property
    def paired(self) -> float:
        return float(self.row.get("ratio_to_reference_paired_median", NAN))

    @property
    def reference(self) -> Config:
        assert self.cfg.reference is not None
        return self.by[self.cfg.reference]

    @property
    def ref_ms(self) -> float:
        """The reference call, ms/image (median)."""
        return self.reference.ms_per_image("median")

    @property
    def added_ms(self) -> float:
        """In-call time of the method a ``<reference>+<method>`` row adds, ms/image."""
        return self.per_method.get(self.cfg.key.split("+", 1)[-1], NAN)

    @property
    def chunk_b_ratio(self) -> float | None:
        """The diagnostic chunk_size=B SmoothGrad-CAM++ row in (n+1) floors, if it ran."""
        diag = self.by.get(SMOOTH_CHUNK_B)
        if diag is None or not diag.times:
            return None
        return diag.ms_per_image("median") / ((self.smooth_n + 1) * self.floor_med)


@dataclass(frozen=True)
class Clause:
    """Adds ``text(e)`` to an explanation when ``when(e)`` holds."""

    when: Callable[[Evidence], bool]
    text: Callable[[Evidence], str]


#: from a group, the first clause whose condition holds contributes its text (or none does)
Group = tuple[Clause, ...]


def _always(e: Evidence) -> bool:
    return True


def _says(text: str) -> Callable[[Evidence], str]:
    return lambda e: text


def _gradient_evidence(e: Evidence) -> str:
    return (f"Shared pass (forward + backward to the target layer) "
            f"{e.pass_ms / e.floor_med:.3f}x floor; the maps' own computation "
            f"{e.methods_ms:.2f} ms/image ({100 * e.methods_ms / e.floor_med:.1f}% of the floor: "
            + ", ".join(f"{k} {v:.2f}" for k, v in e.per_method.items()) + " ms/image).")


def _on_gradcam_evidence(e: Evidence) -> str:
    own, grad = e.added_ms, e.ref_ms
    ref_pass, _, _ = breakdown(e.reference)
    return (f"The attention step's own time inside the call (Explanations.seconds) is "
            f"{own:.2f} ms/image = {100 * own / grad:.1f}% of a Grad-CAM call "
            f"({grad:.1f} ms/image); paired per-repetition ratio {e.paired:.3f}x."
            f" The shared pass took {e.pass_ms:.2f} ms/image in this row and {ref_pass:.2f} in "
            "the Grad-CAM row.")


def _noisy_evidence(e: Evidence) -> str:
    extra = e.methods_ms
    return (f"Shared pass {e.pass_ms / e.floor_med:.2f}x floor; the {e.smooth_n} noisy "
            f"forward+backward passes take {extra / e.floor_med:.2f} floors per image "
            f"({extra / e.floor_med / e.smooth_n:.2f} floors per noisy copy), run in chunks of "
            f"chunk_size={CHUNK_SIZE} images while the floor is a batch of {e.cfg.images}.")


def _chunk_b(suffix: str) -> Callable[[Evidence], str]:
    def text(e: Evidence) -> str:
        return (f" With chunk_size={e.cfg.images} (the floor's batch size) it takes "
                f"{e.chunk_b_ratio:.3f}x (n+1) floors (diagnostic row)"
                + suffix.format(chunk=CHUNK_SIZE, batch=e.cfg.images))
    return text


def _chunk_b_ran(cond: Callable[[Evidence, float], bool]) -> Callable[[Evidence], bool]:
    return lambda e: (d := e.chunk_b_ratio) is not None and cond(e, d)


#: The clauses every explanation ends with.
COMMON: tuple[Group, ...] = (
    (Clause(lambda e: e.met != bool(e.row["met_on_min"]),
            _says(" Median and min disagree on the verdict: the difference is within this "
                  "run's timing noise.")),),
)

#: ``{Config.kind: the groups of clauses explaining its verdict}``
REASONS: dict[str, tuple[Group, ...]] = {
    KIND_GRADIENT: (
        (Clause(_always, _gradient_evidence),),
        (Clause(lambda e: "ratio_to_reference_paired_median" in e.row,
                lambda e: f" Paired per-repetition ratio {e.paired:.3f}x."),),
        (Clause(lambda e: not e.met and e.pass_ms / e.floor_med > e.goal,
                _says(" The shared pass alone (one forward and a backward through the head "
                      "only) is over the goal.")),),
    ),
    KIND_ON_GRADCAM: (
        (Clause(_always, _on_gradcam_evidence),),
        (Clause(lambda e: not e.met and e.added_ms / e.ref_ms <= e.goal - 1,
                _says(" The attention step itself is within the goal; the rest of the "
                      "wall-clock difference is spent outside the attention code (the same "
                      "pass timed differently in the two rows), i.e. it is timing noise.")),
         Clause(lambda e: not e.met,
                _says(" The attention step itself costs more than the goal allows."))),
    ),
    KIND_NOISY: (
        (Clause(_always, _noisy_evidence),),
        (Clause(_chunk_b_ran(lambda e, d: e.ratio <= e.goal), _chunk_b(".")),
         Clause(_chunk_b_ran(lambda e, d: d <= e.goal),
                _chunk_b(": the miss comes from the chunk size, a forward costs more per image "
                         "in batches of {chunk} than of {batch} on this machine (with glibc's "
                         "default allocator, `--malloc system`, the larger batches' buffers are "
                         "page-faulted in on every forward; see benchmarks/README.md).")),
         Clause(_chunk_b_ran(lambda e, d: d < e.ratio),
                _chunk_b(": the chunk size accounts for part of the difference.")),
         Clause(_chunk_b_ran(lambda e, d: True),
                _chunk_b(": the chunk size does not explain the difference."))),
    ),
}


def reason(e: Evidence) -> str:
    """The goal's line in the report: ratio, verdict, then the rules' explanation."""
    c, row = e.cfg, e.row
    verdict = "met" if e.met else "NOT met"
    head = (f"- **{c.label}**: {e.ratio:.3f}x {c.ref_label} (median; min-based "
            f"{row['ratio_to_reference_min']:.3f}x; goal <= {e.goal:.2f}x) -> **{verdict}**. ")
    why = ""
    for group in (*REASONS.get(c.kind, ()), *COMMON):
        why += next((cl.text(e) for cl in group if cl.when(e)), "")
    return head + why


# ---------------------------------------------------------------------------------------------
# Report and JSON


def markdown_table(rows: list[Row]) -> str:
    """The main table: one line per configuration."""
    out = ["| Configuration | ms/image median | ms/image min | x floor | compared with "
           "| ratio | goal | met? |",
           "|---|---:|---:|---:|---|---:|---|---|"]
    for r in rows:
        ref = r.get("ratio_to_reference")
        goal = f"<= {r['goal']:.2f}x" if r["goal"] is not None else ""
        met = "" if r["goal"] is None else ("met" if r["met"] else "**not met**")
        label = r["label"] + (f" ({r['note']})" if r["note"] else "")
        ref_label = r["reference_label"] if ref is not None else ""
        out.append(f"| {label} | {r['ms_per_image_median']:.2f} | {r['ms_per_image_min']:.2f} "
                   f"| {r['ratio_to_floor']:.2f} | {ref_label} "
                   f"| {_fmt(ref, '.3f') if ref is not None else ''} | {goal} | {met} |")
    return "\n".join(out)


def breakdown_table(rows: list[Row], floor_med: float) -> str:
    """Where paperlib's time goes: the shared pass and each method, per image."""
    out = ["| paperlib configuration | shared pass ms/image (x floor) | methods' own ms/image |",
           "|---|---:|---|"]
    for r in rows:
        s = r.get("explain_seconds_median")
        if not s:
            continue
        n = r["images_per_call"]
        p = 1000 * s.get("pass", NAN) / n
        meth = ", ".join(f"{k} {1000 * v / n:.2f}" for k, v in s.items() if k != "pass")
        out.append(f"| {r['label']} | {p:.2f} ({p / floor_med:.3f}) | {meth} |")
    return "\n".join(out)


def render_report(facts: Mapping[str, Any], rows: list[Row], reasons: Sequence[str],
                  notes: Sequence[str], repeats: int, slow_repeats: int) -> str:
    """``REPORT_<device>.md``: the machine, the table, the goals, the breakdown, the notes."""
    floor = next(r for r in rows if r["key"] == "floor")
    return render("bench_report.md.j2", facts=facts, floor=floor, repeats=repeats,
                  slow_repeats=slow_repeats, table=markdown_table(rows),
                  breakdown=breakdown_table(rows, floor["ms_per_image_median"]),
                  reasons=reasons, notes=notes)


def write_report(path: Path, facts: Mapping[str, Any], rows: list[Row], reasons: Sequence[str],
                 notes: Sequence[str], repeats: int, slow_repeats: int) -> str:
    """Write ``REPORT_<device>.md`` and return its text."""
    text = render_report(facts, rows, reasons, notes, repeats, slow_repeats)
    path.write_text(text)
    return text


def write_json(path: Path, facts: Mapping[str, Any], settings: Mapping[str, Any],
               goals: Mapping[str, float], rows: list[Row], reasons: Sequence[str],
               notes: Sequence[str]) -> None:
    """Write ``results_<device>.json``: everything measured, with the settings and goals."""
    path.write_text(json.dumps({
        "machine": dict(facts),
        "settings": dict(settings),
        "goals": dict(goals),
        "rows": rows,
        "goal_reasons": list(reasons),
        "notes": list(notes),
    }, indent=2) + "\n")
