import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from robustgsl import runs
from robustgsl.config import make_config
from robustgsl.vocabulary import dataset_info
from robustgsl.errors import InputError
from robustgsl.export import SAFETENSORS_METADATA_KEY, export_weights, kuangliu_state_dict
from robustgsl.io import atomic_path, write_json_atomic

# --- kuangliu/pytorch-cifar's PreActResNet18, written here from its description -------------------
# Pre-activation basic blocks (He et al. 2016, "Identity Mappings in Deep Residual Networks"):
# out = conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut, where the shortcut is the identity, or a 1x1
# convolution (no BatchNorm, no bias, held in an nn.Sequential) where the shape changes. kuangliu applies
# that convolution to relu(bn1(x)); RobustBench's PreActBlock applies it to x ("input"). A 3x3 stem
# convolution, four stages of two blocks (stride 2 from stage 2), 4x4 average pooling, a linear layer.
# No input normalisation and no final BatchNorm.


class Block(nn.Module):
    def __init__(self, channels_in, channels_out, stride, shortcut_on):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, kernel_size=3, padding=1, bias=False)
        self.projects = stride != 1 or channels_in != channels_out
        if self.projects:
            self.shortcut = nn.Sequential(nn.Conv2d(channels_in, channels_out, kernel_size=1, stride=stride,
                                                    bias=False))
        self.shortcut_on = shortcut_on

    def forward(self, x):
        activated = torch.relu(self.bn1(x))
        if not self.projects:
            skip = x
        else:
            skip = self.shortcut(activated if self.shortcut_on == "preact" else x)
        return self.conv2(torch.relu(self.bn2(self.conv1(activated)))) + skip


class ReferencePreActResNet18(nn.Module):
    def __init__(self, num_classes, stage_widths=(64, 128, 256, 512), shortcut_on="preact"):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stage_widths[0], kernel_size=3, padding=1, bias=False)
        channels = stage_widths[0]
        for number, width in enumerate(stage_widths, start=1):
            stride = 1 if number == 1 else 2
            setattr(self, f"layer{number}", nn.Sequential(Block(channels, width, stride, shortcut_on),
                                                          Block(width, width, 1, shortcut_on)))
            channels = width
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x):
        out = self.conv1(x)
        for number in range(1, 5):
            out = getattr(self, f"layer{number}")(out)
        return self.linear(F.avg_pool2d(out, 4).flatten(1))


# --- a fake run folder, written with the real writers ------------------------------------------

WIDTH = 0.0625
STAGE_WIDTHS = (4, 8, 16, 32)  # 64 / 128 / 256 / 512 at 1/16 width


def randomise(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name in ("mean", "std") or not tensor.is_floating_point():
                continue
            if name.endswith(("running_var", ".weight")) and tensor.ndim == 1:
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * (0.3 if tensor.ndim == 1 else 0.2))
    return model


def write_run(run_dir, loss, normalization="l2", **options):
    config = make_config(loss, preset="demo", width=WIDTH, normalization=normalization, **options).to_dict()
    config["num_classes"] = dataset_info(config["dataset"]).num_classes
    model = randomise(runs.build_model_from_config(config))
    run_dir.mkdir(parents=True)
    write_json_atomic(run_dir / runs.CONFIG_FILE, config)
    with atomic_path(run_dir / runs.WEIGHTS_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    return runs.load_model(run_dir)[0]


def images(n=6, seed=1):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def reference_outputs(state, metadata, x, shortcut_on="preact"):
    reference = ReferencePreActResNet18(metadata["outputs"], STAGE_WIDTHS, shortcut_on).eval()
    reference.load_state_dict(state, strict=True)
    mean = torch.tensor(metadata["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(metadata["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return reference((x - mean) / std)


@pytest.mark.parametrize("loss, normalization", [("ce", "l2"), ("gsl", "l2"), ("gsl", "batchnorm"), ("gsl", "bn-l2")])
def test_kuangliu_export_computes_the_runs_function(tmp_path, loss, normalization):
    model = write_run(tmp_path / "run", loss, normalization)
    out = export_weights(tmp_path / "run", format="kuangliu", out=tmp_path / "export/model.pt")
    state = torch.load(out, weights_only=True)
    metadata = json.loads((tmp_path / "export/model.pt.json").read_text())
    x = images()
    outputs = reference_outputs(state, metadata, x)
    with torch.no_grad():
        expected = model(x)
    if metadata["output_transform"] == "l2_normalize":
        outputs = F.normalize(outputs, dim=1)
    torch.testing.assert_close(outputs, expected, rtol=1e-5, atol=1e-5)
    l2 = loss == "gsl" and normalization in ("l2", "bn-l2")
    assert metadata["output_transform"] == ("l2_normalize" if l2 else None)
    info = dataset_info("digits")
    torch.testing.assert_close(torch.tensor(metadata["mean"]), torch.tensor(info.mean))
    torch.testing.assert_close(torch.tensor(metadata["std"]), torch.tensor(info.std))
    assert metadata["width"] == WIDTH and metadata["stage_widths"] == list(STAGE_WIDTHS)
    assert metadata["source_weights_sha256"] and metadata["format"] == "kuangliu"


def test_the_key_list_at_width_1_is_kuanglius():
    from robustgsl.models import PreActResNet18

    ours = kuangliu_state_dict(PreActResNet18(out_dim=10, width=1.0))
    reference = ReferencePreActResNet18(10).state_dict()
    assert list(ours) == list(reference)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in reference.items()}
    assert "layer2.0.shortcut.0.weight" in ours and "mean" not in ours


def test_safetensors_out_file_carries_the_metadata(tmp_path):
    model = write_run(tmp_path / "run", "ce")
    out = export_weights(tmp_path / "run", format="kuangliu", out=tmp_path / "ce.safetensors")
    with safe_open(str(out), framework="pt") as handle:
        embedded = json.loads(handle.metadata()[SAFETENSORS_METADATA_KEY])
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    assert embedded == json.loads((tmp_path / "ce.safetensors.json").read_text())
    with torch.no_grad():
        torch.testing.assert_close(reference_outputs(state, embedded, images()), model(images()))


def test_robustbench_is_refused_because_its_block_computes_another_function(tmp_path):
    model = write_run(tmp_path / "run", "ce")
    target = tmp_path / "rb.pt"
    target.write_bytes(b"kept")
    with pytest.raises(InputError) as error:
        export_weights(tmp_path / "run", format="robustbench", out=target)
    assert "relu(bn1(x))" in str(error.value) and "PreActBlockV2" in str(error.value)
    assert target.read_bytes() == b"kept" and not (tmp_path / "rb.pt.json").exists()
    # The evidence: the same state dict loads into a RobustBench-style network with every key matched,
    # which computes something else (the shortcut reads x); the kuangliu-style one computes our logits.
    export_weights(tmp_path / "run", format="kuangliu", out=tmp_path / "k.pt")
    state = torch.load(tmp_path / "k.pt", weights_only=True)
    metadata = json.loads((tmp_path / "k.pt.json").read_text())
    x = images()
    with torch.no_grad():
        ours = model(x)
    robustbench_style = reference_outputs(state, metadata, x, shortcut_on="input")
    assert (robustbench_style - ours).abs().max() > 1e-2
    torch.testing.assert_close(reference_outputs(state, metadata, x, shortcut_on="preact"), ours)


def test_a_final_bn_relu_run_is_refused_with_the_reason(tmp_path):
    write_run(tmp_path / "run", "gsl", final_bn_relu=True)
    with pytest.raises(InputError, match="final-bn-relu"):
        export_weights(tmp_path / "run", format="kuangliu", out=tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_bad_arguments(tmp_path):
    write_run(tmp_path / "run", "ce")
    with pytest.raises(InputError, match="unknown export format 'onnx'"):
        export_weights(tmp_path / "run", format="onnx", out=tmp_path / "x.pt")
    with pytest.raises(InputError, match="is a folder"):
        export_weights(tmp_path / "run", format="kuangliu", out=tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        export_weights(tmp_path / "absent", format="kuangliu", out=tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_export_command(tmp_path):
    from click.testing import CliRunner

    from robustgsl.cli import main

    model = write_run(tmp_path / "run", "ce")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "--format", "kuangliu",
                                       "--out", str(tmp_path / "out/ce.pt")])
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'out/ce.pt'} and {tmp_path / 'out/ce.pt'}.json" in result.output
    state = torch.load(tmp_path / "out/ce.pt", weights_only=True)
    metadata = json.loads((tmp_path / "out/ce.pt.json").read_text())
    with torch.no_grad():
        torch.testing.assert_close(reference_outputs(state, metadata, images()), model(images()))
    refused = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "--format", "robustbench",
                                        "--out", str(tmp_path / "rb.pt")])
    assert refused.exit_code == 2 and "Error: cannot export" in refused.output
    assert "relu(bn1(x))" in " ".join(refused.output.split()) and not (tmp_path / "rb.pt").exists()
    missing = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "x.pt")])
    assert missing.exit_code == 2 and "--format" in missing.output


def test_a_bottleneck_model_is_refused_with_the_reason(tmp_path):
    from robustgsl.models import PreActResNet18

    with pytest.raises(InputError, match="2-wide bottleneck"):
        kuangliu_state_dict(PreActResNet18(out_dim=10, width=WIDTH, bottleneck=2))
