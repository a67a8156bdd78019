import io
import pickle

import pytest
import torch

from pipeline.models.registry import create_model
from pipeline.registry.mlflow_models import bake_parametrizations
from tests.conftest import tiny_arch_kwargs


@pytest.mark.parametrize("name", ["sa-unet", "sn-patchgan"])
def test_spectral_norm_networks_can_be_pickled_for_the_registry_and_compute_the_same(name):
    torch.manual_seed(0)
    net = create_model(name, **tiny_arch_kwargs(name))
    net.train()(torch.rand(2, 3, 64, 64))   # a training step moves spectral norm's power-iteration state
    net.eval()
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = net(image)
    with pytest.raises(RuntimeError, match="parametrized modules"):
        pickle.dumps(net)
    baked = bake_parametrizations(net)
    with torch.no_grad():
        torch.testing.assert_close(baked(image), expected)
    buffer = io.BytesIO()
    torch.save(baked, buffer)                # what mlflow.pytorch.log_model does with serialization_format="pickle"
    assert buffer.tell() > 0
