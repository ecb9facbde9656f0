"""The paper's own numbers, for comparison only (quoted, not computed).

An & Joe (2022) report their results on ResNet-50 over ImageNet. The kit had offline access only
to the Grad-CAM row of Table 4 (as quoted in the kit's issue tracker); every other published cell
is left as ``None`` and shown as "n/a" in the tables. A researcher with the paper can fill in the
missing cells here; nothing else in the kit reads them.
"""

from __future__ import annotations

#: Table 4 ("percentage in"), ResNet-50, keyed by method then by k (% of pixels kept).
#: The paper does not define the read-out; the kit reports four and says which follows this trend.
PAPER_TABLE4: dict[str, dict[int, float | None]] = {
    "gradcam": {5: 0.28, 10: 0.40, 20: 4.55, 25: 6.63, 50: 9.00},
}

#: Table 3 (Average Drop %, % Increase), ResNet-50: not available offline.
PAPER_TABLE3: dict[str, dict[str, float | None]] = {}

SOURCE = "An & Joe (2022), Applied Sciences 12, 3846; ResNet-50 on ImageNet"
