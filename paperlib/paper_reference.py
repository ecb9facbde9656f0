"""The paper's own numbers, for comparison only (quoted, never computed).

An & Joe (2022), Applied Sciences 12, 3846, report every number for ResNet-50 on ImageNet (Table 2
also GoogLeNet and VGG19) with their own, unpublished code. Every cell of their Tables 2-4 is
copied here, keyed by the paper's column names; ``ours`` is the paper's attention method. A kit
method names the paper column it stands beside in its registry record (``MethodSpec.paper``:
every reading of the paper's method stands beside ``ours``).

The paper does not say on how many images Table 2 was measured, nor whether its "mean accuracy" is
top-1 or top-5; nor which number Table 4 reports for each k (the "percentage in" read-out).
"""

from __future__ import annotations

__all__ = ["PAPER_COLUMNS", "PAPER_TABLE2", "PAPER_TABLE3", "PAPER_TABLE4", "SOURCE"]

SOURCE = "An & Joe (2022), Applied Sciences 12, 3846; ResNet-50 on ImageNet"

#: The paper's method columns, in its tables' order.
PAPER_COLUMNS = ("gradcam", "gradcampp", "smoothgradcampp", "xgradcam", "ours")

#: Table 2 (black-box selection): "Mean accuracy" (a fraction) and "top5-error" (percent).
PAPER_TABLE2: dict[str, dict[str, float]] = {
    "resnet50": {"mean_accuracy": 0.9496, "top5_error": 5.38},
    "googlenet": {"mean_accuracy": 0.9363, "top5_error": 8.26},
    "vgg19": {"mean_accuracy": 0.9372, "top5_error": 9.21},
}

#: Table 3: Average Drop (%, Eq. 8, lower is better) and % Increase (Eq. 9, higher is better) of
#: the soft explanation map.
PAPER_TABLE3: dict[str, dict[str, float]] = {
    "gradcam": {"avg_drop": 45.27, "increase": 23.06},
    "gradcampp": {"avg_drop": 44.35, "increase": 23.15},
    "smoothgradcampp": {"avg_drop": 44.82, "increase": 23.75},
    "xgradcam": {"avg_drop": 46.33, "increase": 22.15},
    "ours": {"avg_drop": 42.52, "increase": 25.35},
}

#: Table 4 ("percentage in"): the top k% of the map kept (k = 5, 10, 20, 25, 50); the read-out
#: is not defined by the paper.
PAPER_TABLE4: dict[str, dict[int, float]] = {
    "gradcam": {5: 0.2846, 10: 0.3954, 20: 4.5524, 25: 6.6328, 50: 8.9952},
    "gradcampp": {5: 0.2715, 10: 0.3841, 20: 4.5001, 25: 7.1551, 50: 8.9876},
    "smoothgradcampp": {5: 0.4997, 10: 0.7814, 20: 4.8335, 25: 6.7879, 50: 8.7792},
    "xgradcam": {5: 0.2915, 10: 0.4521, 20: 4.7527, 25: 7.6782, 50: 8.6304},
    "ours": {5: 1.0229, 10: 1.2898, 20: 5.5308, 25: 9.5161, 50: 11.5334},
}
