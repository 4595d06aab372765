"""Weights out: a finished run's model as a state dict for kuangliu/pytorch-cifar's PreActResNet18.

    export_weights("runs/demo/ce", format="kuangliu", out="ce.pt")
    # writes ce.pt (a plain state dict: net.load_state_dict(torch.load("ce.pt"))) and ce.pt.json

Key names are those of ``PreActResNet18()`` in kuangliu/pytorch-cifar's models/preact_resnet.py; the
only renames are ``layerN.0.shortcut.weight`` -> ``layerN.0.shortcut.0.weight`` (its shortcut is an
``nn.Sequential``) and dropping our ``mean`` / ``std`` buffers. That network has no input normalisation
inside, so the sidecar JSON ``<out>.json`` (and, for a ``.safetensors`` out file, its metadata) states
it: feed ``(x - mean) / std`` for images ``x`` in [0, 1]. It also records the width: at width != 1 the
stages have ``stage_widths`` channels instead of kuangliu's fixed 64/128/256/512, same keys, other shapes.

What the exported network computes:
- CE models: the same logits as the run's model.
- GSL with ``normalization="batchnorm"``: the same embedding; the output BatchNorm1d is folded into the
  linear layer with its running statistics (exact in eval mode, up to float rounding).
- GSL with ``normalization="l2"``: the linear layer's raw outputs. The run's embedding is those outputs
  divided by their L2 norm (``output_transform: "l2_normalize"`` in the sidecar); kuangliu's network has
  no such layer.

``format="robustbench"`` is refused, with the reason (see ``ROBUSTBENCH_REFUSAL``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from robustgsl import runs
from robustgsl.errors import InputError
from robustgsl.io import atomic_path, sha256_file, write_json_atomic
from robustgsl.models import PreActResNet18

EXPORT_FORMATS = ("kuangliu", "robustbench")
KUANGLIU_NETWORK = "kuangliu/pytorch-cifar models/preact_resnet.py: PreActResNet18()"
SIDECAR_SUFFIX = ".json"
# Key of the safetensors metadata entry holding the same JSON as the sidecar.
SAFETENSORS_METADATA_KEY = "robustgsl_export"

ROBUSTBENCH_REFUSAL = (
    "RobustBench's PreActResNet18() (robustbench/model_zoo/architectures/resnet.py, "
    "PreActResNet(PreActBlock, [2, 2, 2, 2])) applies each projection shortcut to the block's input x, "
    "while robustgsl's network, like kuangliu's, applies it to relu(bn1(x)): the weights would load with "
    "every key matched but compute a different function, and no rewrite of the weights makes the two equal "
    "in general (the shortcut would have to undo a ReLU). Export with format 'kuangliu' instead: that state "
    "dict also loads into RobustBench's PreActResNet(PreActBlockV2, [2, 2, 2, 2]) (or, in versions since "
    "May 2021, PreActResNet(PreActBlock, [2, 2, 2, 2], out_shortcut=True)), which computes the same "
    "function as kuangliu's network"
)


def kuangliu_state_dict(model: PreActResNet18) -> dict[str, torch.Tensor]:
    """``model``'s weights under kuangliu's key names (a GSL BatchNorm1d head folded into ``linear``)."""
    if model.bottleneck is not None:
        raise InputError(f"cannot export a model with a {model.bottleneck.out_features}-wide bottleneck layer in "
                         "kuangliu's layout: its PreActResNet18 has no layer between the features and linear")
    state = {}
    for key, value in model.state_dict().items():
        if key in ("mean", "std") or key.startswith("output_norm."):
            continue
        # kuangliu's shortcut is nn.Sequential(nn.Conv2d(...)): its weight is one level deeper.
        state[re.sub(r"\.shortcut\.weight$", ".shortcut.0.weight", key)] = value.detach().cpu().clone()
    if model.output_norm is not None:
        state["linear.weight"], state["linear.bias"] = _fold_batchnorm(model)
    return state


def _fold_batchnorm(model: PreActResNet18) -> tuple[torch.Tensor, torch.Tensor]:
    """linear followed by eval-mode BatchNorm1d, as one linear layer (computed in float64)."""
    norm, linear = model.output_norm, model.linear
    # "bn-l2" uses a BatchNorm1d without affine parameters: scale 1, shift 0.
    gamma = norm.weight.double() if norm.affine else torch.ones_like(norm.running_var, dtype=torch.float64)
    beta = norm.bias.double() if norm.affine else torch.zeros_like(norm.running_mean, dtype=torch.float64)
    scale = gamma / torch.sqrt(norm.running_var.double() + norm.eps)
    weight = linear.weight.double() * scale[:, None]
    bias = (linear.bias.double() - norm.running_mean.double()) * scale + beta
    return weight.float().cpu(), bias.float().cpu()


def kuangliu_metadata(model: PreActResNet18, config: dict) -> dict:
    """What the exported file computes and needs: the sidecar's fields."""
    stage_widths = [stage[0].conv1.out_channels for stage in (model.layer1, model.layer2, model.layer3, model.layer4)]
    l2 = model.normalization in ("l2", "bn-l2")
    return {
        "format": "kuangliu",
        "network": KUANGLIU_NETWORK,
        "input": "images in [0, 1], NCHW, normalised per channel as (x - mean) / std",
        "mean": model.mean.flatten().tolist(),
        "std": model.std.flatten().tolist(),
        "width": config["width"],
        "stage_widths": stage_widths,
        "outputs": model.linear.out_features,
        "loss": config["loss"],
        "output_transform": "l2_normalize" if l2 else None,
        "outputs_note": _outputs_note(model),
        "dataset": config["dataset"],
    }


def _outputs_note(model: PreActResNet18) -> str:
    folded = "the output BatchNorm1d is folded into linear with its running statistics (eval mode)"
    if model.normalization == "bn-l2":
        return f"{folded}; the run's GSL embedding is each output row divided by its L2 norm"
    if model.normalization == "l2":
        return "the linear layer's raw outputs; the run's GSL embedding is each output row divided by its L2 norm"
    return folded if model.output_norm is not None else "the run's logits"


def export_weights(run_dir: str | Path, format: str, out: str | Path) -> Path:
    """Write the finished model of ``run_dir`` as ``format`` to ``out`` (plus ``out`` + ".json"); return ``out``.

    ``out`` ending in ``.safetensors`` is written with safetensors, anything else with ``torch.save``.
    """
    if format not in EXPORT_FORMATS:
        raise InputError(f"unknown export format {format!r}; valid: {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    if out.is_dir():
        raise InputError(f"export target {out} is a folder; give a file name such as {out / 'model.pt'}")
    model, config = runs.load_model(run_dir)
    if model.final_norm is not None:
        raise InputError(f"cannot export {run_dir}: it was trained with --final-bn-relu, a BatchNorm-ReLU before "
                         f"the pooling that kuangliu's and RobustBench's PreActResNet18 do not have")
    if format == "robustbench":
        raise InputError(f"cannot export {run_dir} for RobustBench: {ROBUSTBENCH_REFUSAL}")
    state = kuangliu_state_dict(model)
    metadata = kuangliu_metadata(model, config) | {
        "source_run": str(run_dir),
        "source_weights_sha256": sha256_file(Path(run_dir) / runs.WEIGHTS_FILE),
    }
    sidecar = out.with_name(out.name + SIDECAR_SUFFIX)
    with atomic_path(out) as tmp:
        if out.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
                      metadata={SAFETENSORS_METADATA_KEY: json.dumps(metadata, sort_keys=True)})
        else:
            torch.save(state, tmp)
        # Written before the weights are renamed into place: no weights file without its sidecar.
        write_json_atomic(sidecar, metadata)
    return out
