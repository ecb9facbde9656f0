"""The benchmark's rows: paperlib's methods, the peers pytorch-grad-cam and torchcam, the goals.

Which methods get a row comes from paperlib's registry: every gradient method
(:data:`paperlib.cam.GRADIENT_METHODS`) alone and all together, every reading of the paper's
method (``method_names("variant")``) on top of a Grad-CAM call, or against the floor when it needs
extra forwards; display names are the registry's labels (:func:`paperlib.method_label`).
See benchmarks/README.md for what each row times.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import torch
from harness import REPO, Config

import paperlib
from paperlib import attention as pl_attention
from paperlib.cam import GRADIENT_METHODS, METHODS, method_names
from paperlib.perf import CHUNK_SIZE

label = paperlib.method_label

# Goals (ratios, never absolute times).
GOAL_GRADIENT_ALONE = 1.15   # each gradient method <= 1.15x the floor
GOAL_GRADIENT_ALL = 1.30     # the gradient methods together, one call <= 1.3x the floor
GOAL_SMOOTH = 1.15           # SmoothGrad-CAM++ with n samples <= 1.15x (n+1) floors
GOAL_ATTENTION = 1.05        # attention-fixed / -trained add <= 5% to a Grad-CAM call

#: The goals as written to the JSON.
GOALS = {"gradient_method_alone": GOAL_GRADIENT_ALONE,
         "five_gradient_methods_one_call": GOAL_GRADIENT_ALL,
         "smoothgradcampp_vs_n_plus_1_floors": GOAL_SMOOTH,
         "attention_over_gradcam": GOAL_ATTENTION}

# What the report's rules (report.REASONS) call the rows with a goal (Config.kind).
KIND_GRADIENT = "gradient"           # gradient methods against the floor
KIND_ON_GRADCAM = "on-gradcam"       # a method added to a Grad-CAM call, against that call
KIND_NOISY = "noisy-copies"          # SmoothGrad-CAM++ against (n+1) floors
#: the diagnostic SmoothGrad-CAM++ row with its noisy copies in chunks of the floor's batch
SMOOTH_CHUNK_B = "ours:smoothgradcampp-chunkB"

_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def count_word(n: int) -> str:
    """``5`` -> ``"five"`` (digits beyond eight)."""
    return _WORDS.get(n, str(n))


def joined_labels(methods: Sequence[str]) -> str:
    """The registry labels of ``methods``, comma-separated."""
    return ", ".join(label(m) for m in methods)


@dataclass(frozen=True)
class Settings:
    """The benchmark's settings (the CLI's options that shape the rows)."""

    repeats: int = 15
    slow_repeats: int = 3
    smooth_samples: int = paperlib.ExplainOptions().of("smoothgradcampp").smooth_samples
    smooth_sigma: float = paperlib.ExplainOptions().of("smoothgradcampp").smooth_sigma
    scorecam_channels: int = paperlib.ExplainOptions().of("scorecam").scorecam_channels
    full_scorecam: str = "auto"      # "auto" (only on CUDA) | "yes" | "no"
    full_scorecam_repeats: int = 1


# ---------------------------------------------------------------------------------------------
# Peers


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """pytorch-grad-cam's ScoreCAM draws tqdm bars on stderr; keep them out of the log."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def pgc_call(cls: Any, model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor,
             targets: list[int], batch_size: int | None = None) -> Any:
    """pytorch-grad-cam as its README runs it: a CAM object, targets, one call (numpy maps)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with cls(model=model, target_layers=[layer]) as cam:
        if batch_size is not None:
            cam.batch_size = batch_size
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])


def torchcam_call(cls: Any, model: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor,
                  targets: list[int], **kwargs: Any) -> Any:
    """torchcam as its README runs it: hook, forward, extractor(class_idx, scores)."""
    with cls(model, target_layer=layer, **kwargs) as extractor:
        scores = model(x)
        return extractor(class_idx=targets, scores=scores)


def _quiet_call(fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
    with _quiet():
        return fn(*a, **kw)


def peer_classes() -> tuple[dict[str, Any], dict[str, Any]]:
    """``({method: pytorch-grad-cam class}, {method: torchcam class})`` for the gradient methods
    each library has, in the registry's order."""
    import pytorch_grad_cam as pgc
    import torchcam.methods as tcm

    pgc_all = {"gradcam": pgc.GradCAM, "gradcampp": pgc.GradCAMPlusPlus,
               "xgradcam": pgc.XGradCAM, "hirescam": pgc.HiResCAM, "layercam": pgc.LayerCAM}
    tc_all = {"gradcam": tcm.GradCAM, "gradcampp": tcm.GradCAMpp, "xgradcam": tcm.XGradCAM,
              "layercam": tcm.LayerCAM}
    return ({m: pgc_all[m] for m in GRADIENT_METHODS if m in pgc_all},
            {m: tc_all[m] for m in GRADIENT_METHODS if m in tc_all})


def _uses_checkpoint(method: str) -> bool:
    return "checkpoint" in {f.name for f in dataclasses.fields(METHODS[method].options)}


# ---------------------------------------------------------------------------------------------


def build_configs(settings: Settings, bb: paperlib.BlackBox, x: torch.Tensor,
                  targets: torch.Tensor, device: torch.device, notes: list[str]) -> list[Config]:
    """Every row, in the order they are timed; ``notes`` gets what the report should say."""
    import pytorch_grad_cam as pgc
    import torchcam.methods as tcm

    B = x.shape[0]
    R, RS = settings.repeats, min(settings.slow_repeats, settings.repeats)
    n, k = settings.smooth_samples, settings.scorecam_channels
    tlist = [int(t) for t in targets]
    model = bb.model
    explain = paperlib.explain
    opts = {"smooth_samples": n, "scorecam_channels": k}
    gradcam = label("gradcam")

    def ours(methods: Sequence[str], xx: torch.Tensor = x, tt: torch.Tensor = targets,
             **extra: Any) -> Callable[[], paperlib.Explanations]:
        return lambda: explain(bb, xx, methods=list(methods), targets=tt, **{**opts, **extra})

    def floor() -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = model(x)
        return out

    C: list[Config] = [Config("floor", "floor: plain no_grad forward", "floor", floor, B, R, 1.0)]
    pgc_classes, tc_classes = peer_classes()

    # paperlib: each gradient method alone, then all of them in one call
    grad_methods = list(GRADIENT_METHODS)
    for m in grad_methods:
        C.append(Config(f"ours:{m}", f"paperlib {label(m)}", "paperlib", ours([m]), B, R, 1.0,
                        "floor", 1.0, "floor", GOAL_GRADIENT_ALONE, kind=KIND_GRADIENT))
    all_word = count_word(len(grad_methods))
    C.append(Config("ours:five", f"paperlib the {all_word} gradient methods, one call",
                    "paperlib", ours(grad_methods), B, R, 1.0, "floor", 1.0, "floor",
                    GOAL_GRADIENT_ALL, kind=KIND_GRADIENT))
    tc_word = count_word(len(tc_classes))
    C.append(Config("ours:four", f"paperlib the {tc_word} torchcam has, one call", "paperlib",
                    ours(list(tc_classes)), B, R, 1.0, "floor", 1.0, "floor", None,
                    note=f"reference for torchcam's {tc_word}"))

    # a user's classifier: the same network wrapped by paperlib.wrap_model, parameters trainable
    # (requires_grad=True, as a user's module has them); explaining must not depend on the flags
    user_net = copy.deepcopy(bb.net).requires_grad_(True)
    wrapped = paperlib.wrap_model(user_net, bb.target_layer_name.removeprefix("net."),
                                  input_size=bb.input_size, mean=bb.mean, std=bb.std,
                                  name=f"{bb.name}-wrapped", device=device)
    same: dict[str, Any] = dict(opts)  # the options of the frozen row
    C.append(Config("ours:gradcam-wrapped", f"paperlib {gradcam}, wrapped unfrozen copy",
                    "paperlib",
                    lambda: explain(wrapped, x, methods=["gradcam"], targets=targets, **same),
                    B, R, 1.0, "floor", 1.0, "floor", GOAL_GRADIENT_ALONE, kind=KIND_GRADIENT,
                    note="paperlib.wrap_model, requires_grad=True"))

    # the paper's method: the readings computed from the pass, on top of a Grad-CAM call
    ckpt = pl_attention.checkpoint_path(bb)
    have_ckpt = ckpt.is_file() and ckpt.with_suffix(".json").is_file()
    ckpt_shown = ckpt.relative_to(REPO) if ckpt.is_relative_to(REPO) else ckpt
    variants = method_names("variant")
    for v in (v for v in variants if not METHODS[v].extra_forwards):
        if _uses_checkpoint(v) and not have_ckpt:
            notes.append(f"{label(v)}: row skipped, no checkpoint at {ckpt_shown} "
                         "(train it with `make train-attention`).")
            continue
        C.append(Config(f"ours:gradcam+{v}", f"paperlib {gradcam} + {label(v)}", "paperlib",
                        ours(["gradcam", v]), B, R, 1.0, "ours:gradcam", 1.0,
                        f"{gradcam} call", GOAL_ATTENTION, kind=KIND_ON_GRADCAM))

    # SmoothGrad-CAM++
    smooth = label("smoothgradcampp")
    C.append(Config("ours:smoothgradcampp", f"paperlib {smooth} (n={n})", "paperlib",
                    ours(["smoothgradcampp"]), B, R, 1.0 + n, "floor", n + 1.0,
                    f"(n+1)={n + 1} floors", GOAL_SMOOTH, kind=KIND_NOISY))

    # diagnostic: the same, with its noisy copies in chunks of B (the floor's batch) instead of
    # paperlib's default chunk_size; per-image forward cost depends on the batch size
    if B != CHUNK_SIZE:
        C.append(Config(SMOOTH_CHUNK_B, f"paperlib {smooth} (n={n}, chunk_size={B})",
                        "paperlib", ours(["smoothgradcampp"], chunk_size=B), B, R, 1.0 + n,
                        "floor", n + 1.0, f"(n+1)={n + 1} floors", None,
                        note=f"diagnostic: default chunk_size is {CHUNK_SIZE}"))

    # the slow ones: Score-CAM, and the readings fitted per image (extra forwards)
    C.append(Config("ours:scorecam", f"paperlib {label('scorecam')} (k={k} channels)",
                    "paperlib", ours(["scorecam"]), B, RS, 1.0 + k, "floor", k + 1.0,
                    f"(k+1)={k + 1} floors", None))
    for v in (v for v in variants if METHODS[v].extra_forwards):
        steps: int | None = getattr(paperlib.ExplainOptions().of(v), "per_image_steps", None)
        what = f"{steps} steps, " if steps is not None else ""
        C.append(Config(f"ours:{v}", f"paperlib {label(v)} ({what}with its {gradcam} pass)",
                        "paperlib", ours([v]), B, RS, 1.0 + (steps or 0), "floor", 1.0,
                        "floor", None))
        if _uses_checkpoint(v) and not have_ckpt:
            notes.append(f"{label(v)}: no trained checkpoint, so it starts from paperlib's "
                         "seeded random initialisation (same cost per step as from a "
                         "checkpoint).")

    # ---- peers: a copy of the same model with trainable parameters, as users run them
    peer = copy.deepcopy(model).requires_grad_(True).eval()
    layer = peer.get_submodule(bb.target_layer_name)

    def add_peer(key: str, library: str, classes: dict[str, Any], call: Callable[..., Any],
                 together: str, together_label: str, ours_together: str,
                 ours_label: str) -> None:
        """One row per peer class (against the same paperlib method), and one row for all of
        them called one after another (against paperlib computing them in one call)."""
        for m, cls in classes.items():
            C.append(Config(f"{key}:{m}", f"{library} {cls.__name__}", library,
                            functools.partial(call, cls, peer, layer, x, tlist), B, R, 1.0,
                            f"ours:{m}", 1.0, f"paperlib {label(m)}"))

        def all_calls() -> None:
            for cls in classes.values():
                call(cls, peer, layer, x, tlist)

        C.append(Config(f"{key}:{together}", together_label, library, all_calls, B, R,
                        float(len(classes)), ours_together, 1.0, ours_label))

    pgc_word = count_word(len(pgc_classes))
    add_peer("pgc", "pytorch-grad-cam", pgc_classes, pgc_call, "five",
             f"pytorch-grad-cam the {pgc_word}, one call each", "ours:five",
             f"paperlib {all_word}, one call")
    add_peer("tc", "torchcam", tc_classes, torchcam_call, "four",
             f"torchcam the {tc_word} it has, one call each", "ours:four",
             f"paperlib {tc_word}, one call")
    tc_missing = [m for m in grad_methods if m not in tc_classes]
    if tc_missing:
        notes.append(f"torchcam {metadata.version('torchcam')} has no "
                     f"{joined_labels(tc_missing)}, so its row covers {tc_word} gradient methods "
                     f"({joined_labels(list(tc_classes))}) and is compared with paperlib "
                     f"computing the same {tc_word} in one call.")

    # torchcam SmoothGrad-CAM++: absolute noise std; ours is sigma x (max - min) per image
    sigma = settings.smooth_sigma
    flat = x.flatten(1)
    tc_std = float(sigma * (flat.max(1).values - flat.min(1).values).mean())
    C.append(Config("tc:smoothgradcampp", f"torchcam SmoothGradCAMpp (n={n})", "torchcam",
                    lambda: torchcam_call(tcm.SmoothGradCAMpp, peer, layer, x, tlist,
                                          num_samples=n, std=tc_std),
                    B, R, 1.0 + n, "ours:smoothgradcampp", 1.0, f"paperlib {smooth}"))
    notes.append(
        f"torchcam SmoothGradCAMpp: same n={n}; its noise std is absolute, set to "
        f"{sigma} x the batch's mean value range = {tc_std:.4f} (paperlib: "
        f"{sigma} x each image's own range); torchcam draws independent noise per "
        "image and per sample, paperlib draws n patterns shared by the batch; torchcam runs n "
        "forward+backward passes of the whole batch after the user's clean forward, paperlib "
        f"puts the B*n noisy images in chunks of {CHUNK_SIZE}.")

    # Score-CAM with every channel: one image, optional (1280 forwards per image on Lite0)
    full = settings.full_scorecam == "yes" or (settings.full_scorecam == "auto"
                                               and device.type == "cuda")
    channels = int(paperlib.gradient_pass(bb, x[:1], targets[:1]).A.shape[1])
    full_repeats = settings.full_scorecam_repeats
    if full:
        x1, t1 = x[:1], targets[:1]
        C.append(Config("ours:scorecam-all", f"paperlib {label('scorecam')}, all channels, 1 image",
                        "paperlib", ours(["scorecam"], x1, t1, scorecam_channels=None), 1,
                        full_repeats, 1.0 + channels, "floor",
                        1.0 + channels, f"(C+1)={1 + channels} floors", None))
        C.append(Config("pgc:scorecam", f"pytorch-grad-cam ScoreCAM (all channels, 1 image, "
                        f"batch_size={CHUNK_SIZE})", "pytorch-grad-cam",
                        lambda: _quiet_call(pgc_call, pgc.ScoreCAM, peer, layer, x1, tlist[:1],
                                            batch_size=CHUNK_SIZE),
                        1, full_repeats, 1.0 + channels,
                        "ours:scorecam-all", 1.0, f"paperlib {label('scorecam')}, all channels"))
        notes.append(f"{label('scorecam')} with all {channels} channels is timed on 1 image "
                     f"({full_repeats} repetition(s)) for paperlib and "
                     f"pytorch-grad-cam (which always scores every channel), both in batches of "
                     f"{CHUNK_SIZE} masked images; the per-image floor is the batch-{B} one.")
    else:
        notes.append(f"pytorch-grad-cam ScoreCAM not timed (it scores all {channels} channels: "
                     f"{channels} forwards per image); run with --full-scorecam yes to time it "
                     "and paperlib's all-channel Score-CAM on 1 image.")
    return C
