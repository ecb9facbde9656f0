"""Model-selection rule (Table 2) and the sanity check's pieces, on hand-made inputs."""

import pandas as pd
import pytest
import torch

from paperlib import model_selection as ms
from paperlib import sanity


def _rows(correct):
    return pd.DataFrame({"file": [f"f{i}" for i in range(len(correct))], "top1": correct})


def test_mcnemar_exact_hand_values():
    # discordant pairs: 2 right only for a, 0 only for b -> two-sided binomial p = 2 * 0.5^2
    assert ms.mcnemar_exact([1, 1, 1, 0], [0, 0, 1, 0]) == pytest.approx(0.5)
    assert ms.mcnemar_exact([1, 0], [1, 0]) == 1.0


def test_choice_prefers_a_cheaper_equivalent_and_keeps_a_significant_winner():
    big = [True] * 90 + [False] * 10
    small_close = [True] * 88 + [False] * 12        # 2 discordant -> p = 0.5: equivalent
    small_far = [True] * 60 + [False] * 40          # 30 discordant -> p ~ 2e-9: worse
    close = ms.choose_model({"big": _rows(big), "small": _rows(small_close)},
                            {"big": 10, "small": 1})
    assert close["model"] == "small" and close["most_accurate"] == "big"
    far = ms.choose_model({"big": _rows(big), "small": _rows(small_far)}, {"big": 10, "small": 1})
    assert far["model"] == "big"
    with pytest.raises(ValueError, match="same images"):
        ms.choose_model({"a": _rows(big), "b": _rows(big[:50])}, {"a": 1, "b": 1})


def test_spearman_maps():
    a = torch.arange(12.0).view(1, 3, 4)
    rho, undefined = sanity.spearman_maps(torch.cat([a, a, a]),
                                          torch.cat([a, -a, torch.zeros_like(a)]))
    assert rho.tolist() == pytest.approx([1.0, -1.0, 0.0])
    assert undefined == 1


def test_randomized_resets_only_the_named_blocks(lite0):
    rnd = sanity.randomized(lite0, ["classifier"], seed=0)
    assert not torch.equal(rnd.net.classifier.weight, lite0.net.classifier.weight)
    assert torch.equal(rnd.net.conv_head.weight, lite0.net.conv_head.weight)
    assert rnd.target_layer is rnd.model.get_submodule("net.bn2")
    assert lite0.target_layer is lite0.model.get_submodule("net.bn2")   # original untouched
    again = sanity.randomized(lite0, ["classifier"], seed=0)
    assert torch.equal(again.net.classifier.weight, rnd.net.classifier.weight)
