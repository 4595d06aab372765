"""Device resolution and the one batched inference loop (training's validation and evaluation)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from robustgsl.device import infer, resolve_device
from robustgsl.errors import InputError
from robustgsl.models import PreActResNet18


@pytest.mark.parametrize("normalization", [None, "l2"])
def test_infer_gives_the_model_outputs_and_embedding_in_batches(normalization):
    torch.manual_seed(0)
    model = PreActResNet18(out_dim=10, normalization=normalization, width=0.0625).eval()
    images = np.random.default_rng(0).integers(0, 256, size=(7, 32, 32, 3), dtype=np.uint8)
    floats = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():  # the whole batch at once, straight through the modules
        features = model.features(floats)
        outputs = model(floats)
    embedding = features if normalization is None else outputs
    assert embedding.shape[1] == (4 * 8 if normalization is None else 10)
    for given in (images, torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()):
        out, embedded = infer(model, given, torch.device("cpu"), batch_size=3)
        torch.testing.assert_close(out, outputs)
        torch.testing.assert_close(embedded, embedding)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(floats), embedding)


def test_bad_devices_are_refused_by_name():
    with pytest.raises(InputError, match="tpu"):
        resolve_device("tpu")
    with pytest.raises(InputError, match="nonsense"):
        resolve_device("nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")
        assert resolve_device(None, local_rank=1) == torch.device("cpu")  # torchrun on CPUs: gloo, no GPU
    assert resolve_device("cpu") == torch.device("cpu")


def test_evaluation_does_not_import_training():
    code = "import sys, robustgsl.evaluate; assert 'robustgsl.train' not in sys.modules, 'train imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
