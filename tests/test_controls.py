"""Control maps and Average Gain: exact values, the registry's role, the control check."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from test_cam import X_IN, tiny_black_box

from paperlib import explain
from paperlib.cam import METHODS, ROLES, default_methods, method_names
from paperlib.controls import CONTROLS, CentrePriorOptions, centre_prior, edge_map, fake_map
from paperlib.evaluation import control_methods, paper_baselines, variants
from paperlib.metrics import MetricConfig, average_gain, gain_terms
from paperlib.tables import control_check, table3, verdict_metrics


def test_controls_are_registered_last_with_their_own_role():
    assert ROLES[-1] == "control"
    assert control_methods() == CONTROLS == method_names("control")
    assert default_methods()[-len(CONTROLS):] == CONTROLS
    assert not set(CONTROLS) & (set(paper_baselines()) | set(variants()))
    assert all(METHODS[m].doc for m in CONTROLS)


def test_fakecam_is_one_but_the_top_left_pixel():
    ex = explain(tiny_black_box(), X_IN, ["fakecam"])
    assert ex["fakecam"].tolist() == [[[0.0, 1.0], [1.0, 1.0]]]
    assert fake_map(2, 3, 4).sum().item() == 2 * (12 - 1)


def test_random_map_is_one_seeded_pattern_for_every_image():
    bb = tiny_black_box()
    two = torch.cat([X_IN, X_IN.flip(-1)])
    a = explain(bb, two, ["random-map"], seed=3)["random-map"]
    b = explain(bb, X_IN, ["random-map"], seed=3)["random-map"]
    c = explain(bb, X_IN, ["random-map"], seed=4)["random-map"]
    assert torch.equal(a[0], a[1]) and torch.equal(a[0], b[0])
    assert not torch.equal(b, c)
    gen = torch.Generator().manual_seed(3)
    raw = torch.rand(2, 2, generator=gen, dtype=torch.float64).float()
    expected = (raw - raw.min()) / (raw.max() - raw.min())
    assert torch.allclose(b[0], expected, atol=1e-7)


def test_centre_prior_exact_values():
    m = centre_prior(1, 5, 5, std=0.2)[0].double()       # s = 0.2 * 5 = 1 pixel
    assert m[2, 2].item() == 1.0
    assert m[2, 3].item() == pytest.approx(math.exp(-0.5), rel=1e-6)
    assert m[0, 0].item() == pytest.approx(math.exp(-8 / 2), rel=1e-6)
    assert torch.equal(m, m.flip(0)) and torch.equal(m, m.t())
    with pytest.raises(ValueError, match="centre_std"):
        CentrePriorOptions(centre_std=0)


def test_edge_map_of_a_vertical_step():
    # left half black, right half white: luminance 0 | 1 (0.299 + 0.587 + 0.114 = 1)
    img = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    img[..., 2:] = 1.0
    e = edge_map(img)[0]
    # |Sobel x| = (1 + 2 + 1) * 1 on the two columns beside the step, 0 elsewhere, no border edge
    expected = torch.tensor([[0.0, 4.0, 4.0, 0.0]] * 4, dtype=torch.float64)
    assert torch.allclose(e, expected, rtol=0, atol=1e-12)   # the weights sum to 1 - 1e-16


def test_gain_terms_exact():
    Y = np.array([0.5, 0.5, 0.25, 1.0])
    O = np.array([0.75, 0.25, 0.625, 1.0])
    # (0.75 - 0.5) / 0.5 = 50; a drop is no gain; 0.375 / 0.75 = 50; no room above Y = 1
    assert gain_terms(Y, O).tolist() == [50.0, 0.0, 50.0, 0.0]
    assert average_gain(Y, O) == 25.0


def test_gain_columns_are_in_tables_3_and_4_and_in_the_verdict():
    cfg = MetricConfig()
    names = [c.name for c in cfg.columns()]
    assert "gain_soft" in names and all(f"gain_top{k}" in names for k in cfg.fractions)
    assert list(verdict_metrics()) == ["drop_soft", "increase_soft", "gain_soft", "drop_top20",
                                       "gain_top20", "deletion_auc", "insertion_auc"]


def _frame() -> pd.DataFrame:
    files = [f"f{i}" for i in range(6)]
    rows = []
    values = {"gradcam": (10.0, 50.0, 5.0), "fakecam": (2.0, 40.0, 1.0),
              "random-map": (30.0, 10.0, 2.0)}
    for m, (drop, inc, gain) in values.items():
        for i, f in enumerate(files):
            rows.append({"file": f, "method": m, "flat_map": False, "drop_soft": drop + i,
                         "increase_soft": inc, "gain_soft": gain + i})
    return pd.DataFrame(rows)


def test_control_check_on_hand_made_rows():
    frame = _frame()
    out = control_check(frame, ["gradcam"], ["fakecam", "random-map"]).set_index("column")
    assert list(out.index) == ["drop_soft", "increase_soft", "gain_soft"]
    # Average Drop: the best control is Fake-CAM (4.5 < 12.5): Grad-CAM's 12.5 loses to it
    assert out.loc["drop_soft", "best_control"] == "fakecam"
    assert out.loc["drop_soft", "control_value"] == 4.5
    assert not out.loc["drop_soft", "beats_every_control"]
    # % Increase: 50 beats Fake-CAM's 40 (constant differences: Wilcoxon's smallest p for n=6)
    assert out.loc["increase_soft", "beats_every_control"]
    assert out.loc["gain_soft", "best_control"] == "random-map"
    assert out.loc["gain_soft", "beats_every_control"]
    t3 = table3(frame.assign(label=0, target=0, Y=0.5, O_soft=0.5), ["gradcam", "fakecam"])
    assert list(t3["avg_gain"]) == [7.5, 3.5]
    assert t3["paper_avg_gain"].isna().all()
