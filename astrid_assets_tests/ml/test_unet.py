"""U-Net shapes, the mask-derived real probability, weight files."""

from __future__ import annotations

import torch

from astrid_assets.ml.unet import UNet, load_weights, real_bogus_logit, real_bogus_probability, save_weights


def test_unet_maps_stamps_to_mask_logits_of_the_same_size():
    model = UNet(base_channels=4, depth=3)
    for size in (63, 64, 50):
        out = model(torch.randn(2, 3, size, size))
        assert out.shape == (2, 1, size, size)


def test_real_probability_is_a_smooth_maximum_of_the_central_mask_and_trains_end_to_end():
    logits = torch.full((3, 1, 63, 63), -8.0)
    logits[1, 0, 31, 31] = 6.0  # a confident transient at the centre
    logits[2, 0, 2, 2] = 6.0  # the same far from the centre does not count
    probability = real_bogus_probability(logits)
    assert probability.shape == (3,)
    assert probability[0] < 0.01 and probability[2] == probability[0]
    assert probability[1] > probability[0] + 0.1
    flat = torch.full((1, 63, 63), 1.5)
    assert torch.allclose(real_bogus_logit(flat), torch.tensor([1.5]))  # a flat map gives its value

    model = UNet(base_channels=4)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        real_bogus_logit(model(torch.randn(2, 3, 63, 63))), torch.tensor([1.0, 0.0])
    )
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.encoders[0][0].weight.grad.abs().sum() > 0


def test_weights_round_trip(tmp_path):
    model = UNet(base_channels=4, depth=2).eval()
    x = torch.randn(2, 3, 63, 63)
    path = save_weights(model, tmp_path / "w" / "model.pt", metadata={"run": "abc"})
    loaded = load_weights(path)
    assert loaded.config() == {"in_channels": 3, "base_channels": 4, "depth": 2}
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
