import pytest
import torch

from robustgsl.errors import InputError
from robustgsl.models import PreActResNet18, backbone_parameter_count


@pytest.mark.parametrize("out_dim", [10, 100, 2])
def test_parameter_count_is_kuangliu_preactresnet18(out_dim):
    model = PreActResNet18(out_dim=out_dim)
    assert backbone_parameter_count(model) == 11_166_016
    assert sum(p.numel() for p in model.parameters()) == 11_166_016 + (512 + 1) * out_dim


def test_layout_of_blocks_and_shortcuts():
    model = PreActResNet18(out_dim=10)
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    assert [len(stage) for stage in stages] == [2, 2, 2, 2]
    assert [stage[0].conv1.out_channels for stage in stages] == [64, 128, 256, 512]
    # 1x1 conv shortcuts without BatchNorm exactly where the shape changes.
    assert [stage[0].shortcut is not None for stage in stages] == [False, True, True, True]
    assert all(isinstance(stage[0].shortcut, torch.nn.Conv2d) for stage in stages[1:])
    assert all(stage[0].shortcut.kernel_size == (1, 1) for stage in stages[1:])


def test_l2_output_is_unit_norm_and_embedding_choice():
    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 32)
    gsl = PreActResNet18(out_dim=10, normalization="l2", width=0.125).eval()
    outputs = gsl(images)
    torch.testing.assert_close(outputs.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(gsl.embed(images), outputs)
    ce = PreActResNet18(out_dim=10, width=0.125).eval()
    assert ce.embed(images).shape == (4, 64)  # penultimate features at 1/8 width


def test_normalisation_buffers_are_applied_inside_the_model():
    torch.manual_seed(0)
    model = PreActResNet18(out_dim=3, width=0.125, mean=(0.2, 0.3, 0.4), std=(0.5, 0.5, 0.5)).eval()
    images = torch.rand(2, 3, 32, 32)
    reference = PreActResNet18(out_dim=3, width=0.125, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)).eval()
    reference.load_state_dict({k: v for k, v in model.state_dict().items() if k not in ("mean", "std")}, strict=False)
    normalised = (images - torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1)) / 0.5
    torch.testing.assert_close(model(images), reference(normalised))
    assert {"mean", "std"} <= set(model.state_dict())


def test_batchnorm_output_option():
    model = PreActResNet18(out_dim=2, normalization="batchnorm", width=0.125)
    assert isinstance(model.output_norm, torch.nn.BatchNorm1d)
    assert model(torch.rand(5, 3, 32, 32)).shape == (5, 2)


@pytest.mark.parametrize("kwargs", [dict(normalization="softmax"), dict(width=0), dict(out_dim=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(InputError):
        PreActResNet18(**kwargs)


def test_bn_l2_output_is_batch_standardised_then_unit_norm():
    torch.manual_seed(0)
    model = PreActResNet18(out_dim=10, normalization="bn-l2", width=0.125).train()
    assert isinstance(model.output_norm, torch.nn.BatchNorm1d) and not model.output_norm.affine
    images = torch.rand(8, 3, 32, 32)
    raw = model.linear(model.features(images))
    # Independent formula: per-coordinate batch mean / biased variance (BatchNorm's training statistics).
    standardised = (raw - raw.mean(0)) / torch.sqrt(raw.var(0, unbiased=False) + 1e-5)
    expected = standardised / standardised.norm(dim=1, keepdim=True)
    torch.manual_seed(0)
    outputs = model(images)
    torch.testing.assert_close(outputs, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs.norm(dim=1), torch.ones(8))


def test_final_bn_relu_is_off_by_default_and_applies_before_pooling():
    torch.manual_seed(0)
    plain = PreActResNet18(out_dim=10, width=0.125)
    assert plain.final_norm is None and not any(k.startswith("final_norm") for k in plain.state_dict())
    torch.manual_seed(0)
    model = PreActResNet18(out_dim=10, width=0.125, final_bn_relu=True).eval()
    assert backbone_parameter_count(model) == backbone_parameter_count(plain) + 2 * model.feature_dim
    images = torch.rand(3, 3, 32, 32)
    x = (images - model.mean) / model.std
    stream = model.layer4(model.layer3(model.layer2(model.layer1(model.conv1(x)))))
    norm = model.final_norm
    activated = torch.relu((stream - norm.running_mean[None, :, None, None])
                           / torch.sqrt(norm.running_var[None, :, None, None] + norm.eps)
                           * norm.weight[None, :, None, None] + norm.bias[None, :, None, None])
    torch.testing.assert_close(model.features(images), activated.mean(dim=(2, 3)))
    assert (model.features(images) >= 0).all()


def test_a_bottleneck_sits_between_the_features_and_the_classifier():
    torch.manual_seed(0)
    plain = PreActResNet18(out_dim=10, width=0.125)
    torch.manual_seed(0)
    narrow = PreActResNet18(out_dim=10, width=0.125, bottleneck=2).eval()
    # the backbone draws the same initial weights; only the head differs
    shared = {k: v for k, v in plain.state_dict().items() if not k.startswith("linear.")}
    for key, value in shared.items():
        assert torch.equal(narrow.state_dict()[key], value), key
    assert set(narrow.state_dict()) - set(plain.state_dict()) == {"bottleneck.weight", "bottleneck.bias"}
    assert narrow.linear.in_features == 2 and backbone_parameter_count(narrow) == backbone_parameter_count(plain)
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        features = narrow.features(images)
        middle = features @ narrow.bottleneck.weight.T + narrow.bottleneck.bias
        outputs, embedding = narrow.forward_with_embedding(images)
        torch.testing.assert_close(embedding, middle)
        torch.testing.assert_close(outputs, middle @ narrow.linear.weight.T + narrow.linear.bias)
    assert "bottleneck" not in dict(plain.named_children())  # no module, no parameters without one


@pytest.mark.parametrize("bottleneck", [0, 1.5])
def test_bad_bottleneck(bottleneck):
    with pytest.raises(InputError, match="bottleneck"):
        PreActResNet18(bottleneck=bottleneck)
