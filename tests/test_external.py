import hashlib
import os
import pickle

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from robustgsl.errors import InputError
from robustgsl.external import (
    ExternalModel, ExternalSpec, build_model, import_factory, load_external_model, load_weights, parse_normalize,
)

from external_helpers import MODEL_FILE, trained_like


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "ext_models.py"
    path.write_text(MODEL_FILE)
    return path


def images(n=2, seed=1):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# --- factory ------------------------------------------------------------------------------------

def test_factory_from_a_file_path_and_from_the_python_path(model_file, monkeypatch):
    model = build_model(f"{model_file}:resnet18_cifar")
    assert isinstance(model, torchvision.models.ResNet) and model.fc.out_features == 10
    monkeypatch.syspath_prepend(str(model_file.parent))
    assert import_factory("ext_models:TinyNet")().fc.out_features == 10


@pytest.mark.parametrize("spec, words", [
    ("no_colon_here", "MODULE:FACTORY"),
    ("surely_not_a_module_xyz:build", "no module named 'surely_not_a_module_xyz'"),
    ("{file}:missing_factory", "no attribute 'missing_factory'"),
    ("{file}:NOT_CALLABLE", "not a callable"),
    ("{file}:not_a_module", "returned a str, not a torch.nn.Module"),
    ("{dir}/absent.py:build", "does not exist"),
])
def test_factory_errors_name_the_spec(model_file, spec, words):
    spec = spec.format(file=model_file, dir=model_file.parent)
    with pytest.raises(InputError) as error:
        build_model(spec)
    assert spec in str(error.value) and words in str(error.value)


def test_a_failing_import_inside_the_users_module_is_reported_as_such(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("import a_dependency_that_is_missing_xyz\n")
    with pytest.raises(InputError, match="running .*broken.py failed .*ModuleNotFoundError"):
        build_model(f"{path}:build")


# --- weights ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """A torchvision resnet18 with random weights, saved once as safetensors and as a torch file."""
    folder = tmp_path_factory.mktemp("resnet")
    (folder / "ext_models.py").write_text(MODEL_FILE)
    factory = f"{folder / 'ext_models.py'}:resnet18_cifar"
    model = trained_like(build_model(factory))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "w.safetensors"))
    torch.save(state, folder / "w.pt")
    return factory, model, folder


@pytest.fixture
def source_model(resnet):
    return resnet[1]


@pytest.fixture
def tiny(model_file):
    return trained_like(build_model(f"{model_file}:TinyNet"))


def fresh_tiny(model_file):
    return build_model(f"{model_file}:TinyNet").eval()


def assert_same_function(loaded, source):
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)


def test_safetensors_and_torch_weights_load(resnet):
    factory, source, folder = resnet
    for name in ("w.safetensors", "w.pt"):
        assert_same_function(load_weights(build_model(factory).eval(), folder / name), source)


@pytest.mark.parametrize("wrap", [
    lambda sd: {"state_dict": sd, "epoch": 200, "best_acc": 0.95},      # RobustBench / Carmon2019-style
    lambda sd: {f"module.{k}": v for k, v in sd.items()},               # nn.DataParallel
    lambda sd: {"state_dict": {f"module.model.{k}": v for k, v in sd.items()}},
])
def test_robustbench_conventions_unwrap_and_strip(model_file, tiny, tmp_path, wrap):
    torch.save(wrap(tiny.state_dict()), tmp_path / "w.pt")
    assert_same_function(load_weights(fresh_tiny(model_file), tmp_path / "w.pt"), tiny)


def test_a_model_whose_own_keys_start_with_model_loads_unchanged(tmp_path):
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Linear(3, 2)

    source = Wrapper()
    torch.save(source.state_dict(), tmp_path / "w.pt")
    loaded = load_weights(Wrapper(), tmp_path / "w.pt")
    assert torch.equal(loaded.model.weight, source.model.weight)


def test_key_mismatch_lists_missing_and_unexpected_keys(model_file, tiny, tmp_path):
    state = dict(tiny.state_dict())
    state["head.weight"] = state.pop("fc.weight")
    state["extra.bias"] = torch.zeros(3)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(InputError) as error:
        load_weights(fresh_tiny(model_file), tmp_path / "w.pt")
    message = str(error.value)
    assert "w.pt" in message and "1 missing keys [fc.weight]" in message
    assert "2 unexpected keys [head.weight, extra.bias]" in message


def test_shape_mismatch_names_the_tensor(model_file, tmp_path):
    torch.save(build_model(f"{model_file}:tiny_100").state_dict(), tmp_path / "w100.pt")
    with pytest.raises(InputError) as error:
        load_weights(fresh_tiny(model_file), tmp_path / "w100.pt")
    assert "2 tensors" in str(error.value)
    assert "fc.weight (100, 4) in the file vs (10, 4) in the model, fc.bias (100,)" in str(error.value)


class RunsCode:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_malicious_pickle_is_refused_without_running_it(model_file, tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"conv1.weight": RunsCode(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    with pytest.raises(InputError) as error:
        load_weights(fresh_tiny(model_file), path)
    assert not marker.exists()
    message = str(error.value)
    assert str(path) in message and "system" in message and "can run code" in message
    assert "weights_only" not in message


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"", bytes(range(256)) * 8])
def test_garbage_is_a_clean_error(model_file, tmp_path, content):
    (tmp_path / "junk.pt").write_bytes(content)
    (tmp_path / "junk.safetensors").write_bytes(content)
    for name in ("junk.pt", "junk.safetensors"):
        with pytest.raises(InputError) as error:
            load_weights(fresh_tiny(model_file), tmp_path / name)
        assert name in str(error.value) and "weights_only" not in str(error.value)


def test_whole_pickled_module_and_foreign_dicts_are_refused(model_file, tmp_path):
    torch.save(nn.Linear(4, 10), tmp_path / "whole.pt")
    with pytest.raises(InputError, match="whole.pt holds pickled Python objects .*torch.nn.modules.linear.Linear"):
        load_weights(fresh_tiny(model_file), tmp_path / "whole.pt")
    torch.save({"net": nn.Linear(4, 10).state_dict(), "acc": 95.0}, tmp_path / "ckpt.pth")
    with pytest.raises(InputError, match=r"ckpt.pth is a dict whose entries \[net, acc\] are not tensors"):
        load_weights(fresh_tiny(model_file), tmp_path / "ckpt.pth")
    with pytest.raises(InputError, match="missing.pt does not exist"):
        load_weights(fresh_tiny(model_file), tmp_path / "missing.pt")


# --- normalisation and features -----------------------------------------------------------------

def test_parse_normalize():
    assert parse_normalize("0.49,0.48,0.45/0.25,0.24,0.26") == ((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    for bad in ["0.49,0.48,0.45,0.25,0.24,0.26", "0.5,0.5/0.2,0.2,0.2", "a,b,c/1,1,1", "0,0,0/1,0,1",
                "0,0,0/1,1,nan", "0,0,0/1,1,1/2"]:
        with pytest.raises(InputError) as error:
            parse_normalize(bad)
        assert repr(bad) in str(error.value)


def test_feature_layer_equals_a_forward_hook_and_normalisation_is_applied(source_model):
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    wrapped = ExternalModel(source_model, normalize=(mean, std), feature_layer="flatten").eval()
    x = images(3)
    normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    captured = []
    handle = source_model.avgpool.register_forward_hook(lambda module, inputs, output: captured.append(output))
    with torch.no_grad():
        expected_logits = source_model(normalised)
    handle.remove()
    with torch.no_grad():
        logits, features = wrapped.forward_with_features(x)
        torch.testing.assert_close(wrapped(x), expected_logits)
        torch.testing.assert_close(wrapped.embed(x), captured[0].flatten(1))
    torch.testing.assert_close(logits, expected_logits)
    torch.testing.assert_close(features, captured[0].flatten(1))
    assert wrapped.has_embedding and features.shape == (3, 512)


def test_a_four_dimensional_node_is_flattened(source_model):
    wrapped = ExternalModel(source_model, feature_layer="layer4").eval()
    with torch.no_grad():
        features = wrapped.embed(images())
        expected = source_model.layer4(source_model.layer3(source_model.layer2(source_model.layer1(
            source_model.maxpool(source_model.relu(source_model.bn1(source_model.conv1(images()))))))))
    torch.testing.assert_close(features, expected.flatten(1))


def test_features_method_and_no_embedding(tiny):
    wrapped = ExternalModel(tiny, normalize=((0.5,) * 3, (0.5,) * 3)).eval()
    x = images()
    with torch.no_grad():
        expected = torch.relu(tiny.bn(tiny.conv((x - 0.5) / 0.5))).mean(dim=(2, 3))
        torch.testing.assert_close(wrapped.embed(x), expected)
        torch.testing.assert_close(wrapped(x), tiny.fc(expected))
    assert wrapped.has_embedding
    plain = ExternalModel(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)))
    assert not plain.has_embedding
    with pytest.raises(InputError, match="has no embedding"):
        plain.embed(x)


def test_unknown_feature_layer_names_it(source_model):
    with pytest.raises(InputError, match="feature layer 'layer9' is not a node of ResNet.*avgpool, flatten, fc"):
        ExternalModel(source_model, feature_layer="layer9")


def test_load_external_model_and_describe(resnet):
    factory, source_model, folder = resnet
    weights = folder / "w.safetensors"
    spec = ExternalSpec(factory, weights=weights, normalize=parse_normalize("0,0,0/1,1,1"),
                        feature_layer="avgpool")
    model = load_external_model(spec)
    assert not model.training
    assert_same_function(model, source_model)
    description = model.describe()
    assert description["name"] == "resnet18_cifar" and description["architecture"] == "ResNet"
    # torchvision's resnet18 has 11,689,512 parameters with 1000 classes; 10 classes drop 990 * (512 + 1).
    assert description["parameters"] == 11_689_512 - 990 * 513
    assert description["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert description["normalize"] == {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    assert description["embedding"] == "feature layer"


def test_wrapping_keeps_the_models_mode(tiny):
    tiny.eval()
    with pytest.raises(InputError):
        ExternalModel(tiny, feature_layer="nope")
    assert not any(module.training for module in tiny.modules())
    wrapped = ExternalModel(tiny, feature_layer="bn")
    assert not any(module.training for module in wrapped.modules())
    wrapped.train()
    assert all(module.training for module in tiny.modules())
