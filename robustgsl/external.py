"""Models robustgsl did not train: a factory, optional weights, input normalisation and a feature layer.

A model is named by ``MODULE:FACTORY`` (a module importable from ``sys.path``, or a ``path/to/file.py``)
where ``FACTORY()`` returns an ``nn.Module`` taking images in [0, 1], NCHW. Its weights come from a
safetensors file or a torch checkpoint read with ``weights_only=True`` (never unpickling code), with
RobustBench's conventions (``robustbench.utils.load_model``): a ``state_dict`` entry is unwrapped, then
a leading ``module.`` and then a leading ``model.`` are stripped from each key, one level each, unless
the keys already match the model (RobustBench strips always; that would break a model whose own
child is called ``model``). Nothing else is unwrapped, as in RobustBench.

    >>> model = load_external_model(ExternalSpec("my_models.py:resnet18_cifar", weights="rn18.pt",
    ...                                          normalize=parse_normalize("0.49,0.48,0.45/0.25,0.24,0.26"),
    ...                                          feature_layer="flatten"))
    >>> logits, features = model.forward_with_features(images)

The embedding heads (k-NN, SVC) need features: a node of the model's graph named with
``feature_layer`` (torchvision's ``create_feature_extractor``; list the names with
``torchvision.models.feature_extraction.get_graph_node_names``), or the model's own ``features()``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import math
import pickle
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from robustgsl.errors import InputError
from robustgsl.io import sha256_file
from robustgsl.options import OptionSpec, option_specs, setting

# RobustBench's load_model strips these, in this order, one level each.
STRIPPED_PREFIXES = ("module.", "model.")
# RobustBench's load_model unwraps this entry of a checkpoint dict.
STATE_DICT_KEY = "state_dict"
# How many missing / unexpected / mis-shaped keys an error message lists.
LISTED_KEYS = 5

# An option value meaning "none for this --model" (e.g. no weights file for the second of two models).
NONE = "-"
NORMALIZE_FORMAT = "MEAN/STD with 3 comma-separated values each, e.g. 0.4914,0.4822,0.4465/0.2470,0.2435,0.2616"


def _optional(parse: Callable[[str], object]) -> Callable[[str], object]:
    """A parser for a value given once per --model, where NONE means "none for this model"."""
    return lambda text: None if text == NONE else parse(text)


@dataclass(frozen=True)
class ExternalSpec:
    """What names an external model: ``factory`` is ``MODULE:FACTORY``; the rest is optional.

    Each field is also a command-line option of ``robustgsl evaluate`` (``EXTERNAL_OPTIONS``), given once
    per ``--model`` (see ``external_specs``).
    """

    factory: str = setting(dataclasses.MISSING, "A model robustgsl did not train: FACTORY() returns an nn.Module "
                                                "taking images in [0, 1], NCHW (repeatable).",
                           flag="--model", metavar="MODULE:FACTORY", multiple=True)
    weights: str | Path | None = setting(
        None, f"Its weights: safetensors, or a torch checkpoint read with weights_only=True ({NONE}: the factory's).",
        metavar="FILE", parse=_optional(str), multiple=True)
    # ((mean R, G, B), (std R, G, B)) applied inside the wrapper to images in [0, 1]; see parse_normalize.
    normalize: tuple[tuple[float, float, float], tuple[float, float, float]] | None = setting(
        None, f"Per-channel (x - mean) / std before the model, for models that expect normalised input ({NONE}: "
              "none).", metavar="MEAN/STD", parse=_optional(lambda text: parse_normalize(text)),  # defined below
        multiple=True)
    feature_layer: str | None = setting(
        None, f"Node of its graph whose output is the embedding of the 1nn/10nn/svc heads ({NONE}: its features() "
              "method, if any).", flag="--features", metavar="LAYER", parse=_optional(str), multiple=True)
    # Shown in reports; default: the factory's name.
    name: str | None = setting(None, f"Its name in tables and reports ({NONE}: the factory's name).",
                               flag="--model-name", metavar="NAME", parse=_optional(str), multiple=True)


EXTERNAL_OPTIONS: tuple[OptionSpec, ...] = option_specs(ExternalSpec)


def external_specs(factory: Sequence[str] = (), weights: Sequence = (), normalize: Sequence = (),
                   feature_layer: Sequence = (), name: Sequence = ()) -> list[ExternalSpec]:
    """One ExternalSpec per factory from options given once per ``--model`` (in order) or not at all."""
    values = {"weights": weights, "normalize": normalize, "feature_layer": feature_layer, "name": name}
    specs = {spec.name: spec for spec in EXTERNAL_OPTIONS}
    for field_name, given in values.items():
        if given and len(given) != len(factory):
            raise InputError(
                f"{specs[field_name].flag} is given {len(given)} times for {len(factory)} --model: give it once per "
                f"--model, in the same order ({NONE} for a model without one), or not at all")
    return [ExternalSpec(factory=spec, **{field_name: given[i] if given else None for field_name, given in values.items()})
            for i, spec in enumerate(factory)]


# --- factory ------------------------------------------------------------------------------------

def import_factory(spec: str) -> Callable[[], nn.Module]:
    """The callable named by ``MODULE:FACTORY`` (``FACTORY`` may be dotted, e.g. ``Class.build``).

    ``MODULE`` is a dotted module name importable from ``sys.path`` or a path ending in ``.py``.
    """
    module_name, _, attribute = str(spec).rpartition(":")
    if not module_name or not attribute:
        raise InputError(f"model {spec!r} must be MODULE:FACTORY, e.g. my_models:resnet18 or path/to/models.py:build")
    module = _import_module(module_name, spec)
    factory = module
    for part in attribute.split("."):
        if not hasattr(factory, part):
            available = sorted(name for name in dir(module) if not name.startswith("_"))
            raise InputError(
                f"model {spec!r}: {module_name} has no attribute {attribute!r} "
                f"(it defines: {', '.join(available[:20])}{', ...' if len(available) > 20 else ''})"
            )
        factory = getattr(factory, part)
    if not callable(factory):
        raise InputError(f"model {spec!r}: {attribute} is a {type(factory).__name__}, not a callable factory")
    return factory


def _import_module(module_name: str, spec: str):
    if module_name.endswith(".py"):
        return _import_file(Path(module_name), spec)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (module_name == error.name or module_name.startswith(error.name + ".")):
            raise InputError(
                f"model {spec!r}: no module named {error.name!r} on the Python path "
                f"(give a path ending in .py, or add its folder to PYTHONPATH)"
            ) from None
        raise InputError(f"model {spec!r}: importing {module_name} failed: {error}") from error
    except Exception as error:  # the user's module raised while importing
        raise InputError(f"model {spec!r}: importing {module_name} failed ({type(error).__name__}: {error})") from error


def _import_file(path: Path, spec: str):
    if not path.is_file():
        raise InputError(f"model {spec!r}: the file {path} does not exist")
    resolved = path.resolve()
    # A name unique to the file, so two model files called models.py do not replace each other.
    name = f"_robustgsl_external_{hashlib.sha256(str(resolved).encode()).hexdigest()[:12]}_{resolved.stem}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up while it executes
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise InputError(f"model {spec!r}: running {path} failed ({type(error).__name__}: {error})") from error
    return module


def build_model(spec: str) -> nn.Module:
    """Call the factory named by ``spec`` and check that it returns an ``nn.Module``."""
    factory = import_factory(spec)
    try:
        model = factory()
    except Exception as error:
        raise InputError(f"model {spec!r}: calling the factory raised {type(error).__name__}: {error}") from error
    if not isinstance(model, nn.Module):
        raise InputError(f"model {spec!r}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    return model


# --- weights ------------------------------------------------------------------------------------

def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` into ``model`` (strictly: every key and shape must match) and return it.

    A ``.safetensors`` file is read with safetensors; anything else with ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file {path} does not exist")
    checkpoint = _read_weights_file(path)
    state = _unwrap_state_dict(checkpoint, path)
    state = _match_prefixes(state, set(model.state_dict()))
    _check_keys_and_shapes(model, state, path)
    model.load_state_dict(state, strict=True)
    return model


def _read_weights_file(path: Path):
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as error:
            raise InputError(f"weights file {path} is not a readable safetensors file ({error})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message proposes weights_only=False, which would run whatever the file holds: not repeated.
        unsupported = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f" (it names {unsupported.group(1)})" if unsupported else ""
        raise InputError(
            f"weights file {path} holds pickled Python objects beyond tensors{what}, which robustgsl does not "
            f"unpickle because they can run code; save the weights as a state dict "
            f"(torch.save(model.state_dict(), ...)) or as a safetensors file"
        ) from None
    except Exception as error:  # not a torch file at all: truncated, another format, random bytes
        raise InputError(
            f"weights file {path} is not a readable torch checkpoint ({type(error).__name__}); "
            f"expected a file written by torch.save or a .safetensors file"
        ) from None


def _unwrap_state_dict(checkpoint, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping) and STATE_DICT_KEY in checkpoint:
        checkpoint = checkpoint[STATE_DICT_KEY]
    if not isinstance(checkpoint, Mapping):
        raise InputError(f"weights file {path} holds a {type(checkpoint).__name__}, not a state dict of tensors")
    not_tensors = [str(key) for key, value in checkpoint.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise InputError(
            f"weights file {path} is a dict whose entries {_first(not_tensors)} are not tensors; robustgsl "
            f"unwraps a {STATE_DICT_KEY!r} entry (RobustBench's convention) and nothing else: save the state "
            f"dict itself (kuangliu/pytorch-cifar's ckpt.pth keeps it under 'net')"
        )
    return dict(checkpoint)


def _match_prefixes(state: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """RobustBench's prefix stripping, skipped when the keys already match (a model with a ``model`` child)."""
    if set(state) == model_keys:
        return state
    for prefix in STRIPPED_PREFIXES:
        state = {key.removeprefix(prefix): value for key, value in state.items()}
    return state


def _check_keys_and_shapes(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        raise InputError(
            f"the weights in {path} do not match {type(model).__name__} (after unwrapping {STATE_DICT_KEY!r} and "
            f"stripping {' / '.join(STRIPPED_PREFIXES)} prefixes): {len(missing)} missing keys {_first(missing)}, "
            f"{len(unexpected)} unexpected keys {_first(unexpected)}"
        )
    mismatched = [
        f"{key} {tuple(state[key].shape)} in the file vs {tuple(value.shape)} in the model"
        for key, value in expected.items() if tuple(state[key].shape) != tuple(value.shape)
    ]
    if mismatched:
        raise InputError(
            f"the weights in {path} have {len(mismatched)} tensors whose shape differs from "
            f"{type(model).__name__}'s: {_first(mismatched)}"
        )


def _first(items: Sequence[str]) -> str:
    shown = ", ".join(items[:LISTED_KEYS])
    return f"[{shown}{', ...' if len(items) > LISTED_KEYS else ''}]"


# --- normalisation ------------------------------------------------------------------------------

def parse_normalize(value: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Parse ``MEAN/STD`` (3 comma-separated numbers each, per RGB channel) into (mean, std)."""
    parts = str(value).split("/")
    if len(parts) != 2:
        raise InputError(f"--normalize {value!r} must be {NORMALIZE_FORMAT}")
    try:
        mean, std = (tuple(float(number) for number in part.split(",")) for part in parts)
    except ValueError:
        raise InputError(f"--normalize {value!r} holds a value that is not a number; expected {NORMALIZE_FORMAT}") from None
    if len(mean) != 3 or len(std) != 3:
        raise InputError(f"--normalize {value!r} has {len(mean)} means and {len(std)} stds; expected {NORMALIZE_FORMAT}")
    if not all(math.isfinite(m) for m in mean) or not all(math.isfinite(s) and s > 0 for s in std):
        raise InputError(f"--normalize {value!r}: means must be finite and stds finite and > 0")
    return mean, std


# --- the wrapper --------------------------------------------------------------------------------

class ExternalModel(nn.Module):
    """A model taking [0, 1] NCHW images, with optional normalisation inside and an optional embedding.

    Args:
        model: the wrapped network (its output is the logits).
        normalize: (mean, std) per channel, applied as (x - mean) / std before ``model``.
        feature_layer: a node name of ``model``'s graph whose (flattened) output is the embedding.
        name: shown in reports.
        weights_file: where the weights came from (hashed for ``describe``).
        factory: the ``MODULE:FACTORY`` spec, for ``describe``.
    """

    def __init__(self, model: nn.Module, normalize=None, feature_layer: str | None = None, name: str | None = None,
                 weights_file: str | Path | None = None, factory: str | None = None):
        super().__init__()
        self.model = model
        self.normalize = None if normalize is None else (tuple(normalize[0]), tuple(normalize[1]))
        if self.normalize is not None:
            self.register_buffer("input_mean", torch.tensor(self.normalize[0], dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("input_std", torch.tensor(self.normalize[1], dtype=torch.float32).view(1, 3, 1, 1))
        self.feature_layer = feature_layer
        self.extractor = _feature_extractor(model, feature_layer) if feature_layer is not None else None
        self.name = name or type(model).__name__
        self.weights_file = None if weights_file is None else Path(weights_file)
        self.weights_file_sha256 = None if weights_file is None else sha256_file(weights_file)
        self.factory = factory
        # One mode for the wrapper, its feature extractor and the model: the model's.
        self.train(model.training)

    @property
    def has_embedding(self) -> bool:
        return self.extractor is not None or callable(getattr(self.model, "features", None))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.normalize is None else (x - self.input_mean) / self.input_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self._prepare(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The features the k-NN and SVC heads use, shape (B, D)."""
        return self.forward_with_features(x)[1]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, flattened features); one pass through the network when a feature layer is named."""
        x = self._prepare(x)
        if self.extractor is not None:
            outputs = self.extractor(x)
            logits = outputs["logits"]
            features = outputs.get("features", logits)
            if not isinstance(logits, torch.Tensor) or not isinstance(features, torch.Tensor):
                raise InputError(
                    f"model {self.name!r}: the feature layer {self.feature_layer!r} or the model's last node "
                    f"does not output a tensor; wrap the model so that its forward returns the logits"
                )
            return logits, features.flatten(1)
        if not self.has_embedding:
            raise InputError(
                f"model {self.name!r} has no embedding: name a feature layer (a node of its graph) or give "
                f"it a features() method"
            )
        return self.model(x), self.model.features(x).flatten(1)

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, embedding), the pair robustgsl's inference loop (``robustgsl.device.infer``) reads from every
        model; without an embedding, a (B, 0) one."""
        if not self.has_embedding:
            logits = self(x)
            return logits, logits.new_empty(len(logits), 0)
        return self.forward_with_features(x)

    @property
    def weights_sha256(self) -> str:
        """SHA-256 of the weights file, or, for weights that came with the model object, of its state dict."""
        return self.weights_file_sha256 or state_dict_sha256(self.model)

    def describe(self) -> dict:
        """What a report shows for this model."""
        return {
            "name": self.name,
            "factory": self.factory,
            "architecture": type(self.model).__name__,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "weights_file": None if self.weights_file is None else str(self.weights_file.resolve()),
            "weights_sha256": self.weights_sha256,
            "normalize": None if self.normalize is None else {"mean": list(self.normalize[0]),
                                                              "std": list(self.normalize[1])},
            "feature_layer": self.feature_layer,
            "embedding": "feature layer" if self.extractor is not None
            else "features()" if self.has_embedding else None,
        }


def state_dict_sha256(model: nn.Module) -> str:
    """SHA-256 of a state dict: each entry's key, dtype and shape, then its bytes, in the state dict's order."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _feature_extractor(model: nn.Module, layer: str) -> nn.Module:
    """A graph module returning {"features": output of ``layer``, "logits": output of the last node}."""
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    try:
        train_nodes, eval_nodes = get_graph_node_names(model)
    except Exception as error:
        raise InputError(
            f"feature layer {layer!r}: torch.fx cannot trace {type(model).__name__} ({type(error).__name__}: "
            f"{error}); give the model a features() method instead"
        ) from error
    # Tracing switches the model (and, on success, all its submodules) between train and eval mode.
    modes = {module: module.training for module in model.modules()}
    try:
        # The model's output is its graph's last node: a model whose forward returns a single tensor.
        return create_feature_extractor(
            model, train_return_nodes=_return_nodes(layer, train_nodes[-1]),
            eval_return_nodes=_return_nodes(layer, eval_nodes[-1]),
        )
    except ValueError:  # torchvision: the node is not in the graph (a module name stands for its last node)
        raise InputError(
            f"feature layer {layer!r} is not a node of {type(model).__name__}; its last nodes are "
            f"{', '.join(eval_nodes[-8:])} (all: torchvision.models.feature_extraction.get_graph_node_names)"
        ) from None
    finally:
        for module, training in modes.items():
            module.training = training


def _return_nodes(layer: str, last: str) -> dict[str, str]:
    # The last node itself as the feature layer: the logits are the features.
    return {last: "logits"} if layer == last else {layer: "features", last: "logits"}


def load_external_model(spec: ExternalSpec, device: torch.device | str = "cpu") -> ExternalModel:
    """Build, load and wrap the model ``spec`` names, in eval mode on ``device``."""
    model = build_model(spec.factory)
    if spec.weights is not None:
        load_weights(model, spec.weights)
    attribute = spec.factory.rpartition(":")[2]
    wrapped = ExternalModel(model, normalize=spec.normalize, feature_layer=spec.feature_layer,
                            name=spec.name or attribute, weights_file=spec.weights, factory=spec.factory)
    return wrapped.to(device).eval()
