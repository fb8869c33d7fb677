"""HemaX model: output shapes, attribute-head depth, positional encoding and N:C from masks."""
import math

import pytest
import torch

from wbcstudy.models.hemax import HemaX, nc_ratio, nucleus_fraction, sine_position_encoding


def test_nc_ratio_from_hand_masks():
    cyto = torch.zeros(6, 6, dtype=torch.bool)
    cyto[0:4, 0:4] = True  # 16-pixel cell outline
    nuc = torch.zeros(6, 6, dtype=torch.bool)
    nuc[1:3, 1:3] = True  # 4 nucleus pixels inside it → cytoplasm = 12
    assert nc_ratio(nuc, cyto).item() == pytest.approx(4 / 12)
    assert nucleus_fraction(nuc, cyto).item() == pytest.approx(4 / 16)
    nuc2 = torch.zeros(6, 6, dtype=torch.bool)
    nuc2[4:6, 4:6] = True  # nucleus outside the cytoplasm mask: 4 nucleus, 16 cytoplasm
    assert nc_ratio(nuc2, cyto).item() == pytest.approx(4 / 16)
    assert nucleus_fraction(nuc2, cyto).item() == pytest.approx(4 / 20)
    assert math.isnan(nucleus_fraction(torch.zeros(2, 2), torch.zeros(2, 2)).item())


def test_sine_position_encoding():
    pe = sine_position_encoding(3, 4, 8)
    assert pe.shape == (8, 3, 4)
    # first y channel: sin(2π·(row+1)/3); first x channel (index 4): sin(2π·(col+1)/4)
    assert pe[0, 1, 0].item() == pytest.approx(math.sin(2 * math.pi * 2 / 3), abs=1e-4)
    assert pe[4, 0, 2].item() == pytest.approx(math.sin(2 * math.pi * 3 / 4), abs=1e-4)


@pytest.mark.parametrize("hidden", [0, 2, 4])
def test_outputs_and_attribute_depth(hidden):
    torch.manual_seed(0)
    model = HemaX(5, attribute_hidden_layers=hidden, pretrained=False, d_model=32, nheads=4, encoder_layers=1,
                  decoder_layers=1, ffn_dim=64, num_queries=3, mask_dim=8, fpn_dim=16).eval()
    out = model(torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8))
    assert out["pred_logits"].shape == (2, 3, 6)
    assert out["pred_boxes"].shape == (2, 3, 4) and 0 <= out["pred_boxes"].min() and out["pred_boxes"].max() <= 1
    assert out["pred_masks"].shape == (2, 3, 2, 8, 8)  # stride 4
    assert [a.shape[-1] for a in out["pred_attributes"]] == [2, 2, 3, 2]
    linears = [m for m in model.attribute_head if isinstance(m, torch.nn.Linear)]
    assert len(linears) == hidden + 1 and linears[-1].out_features == 9


def test_pretrained_backbone_frozen_stem_and_bn():
    model = HemaX(5, pretrained=True, d_model=32, nheads=4, encoder_layers=1, decoder_layers=1, ffn_dim=64,
                  num_queries=2, mask_dim=8, fpn_dim=16).train()
    assert not any(p.requires_grad for p in model.backbone.stem.parameters())
    assert all(p.requires_grad for p in model.backbone.blocks[-1].parameters())
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)


def test_frozen_backbone_trains_only_the_rest():
    torch.manual_seed(0)
    model = HemaX(5, pretrained=True, d_model=32, nheads=4, encoder_layers=1, decoder_layers=1, ffn_dim=64,
                  num_queries=2, mask_dim=8, fpn_dim=16)
    model.freeze_backbone()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    out = model.train()(torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8))
    loss = out["pred_logits"].sum() + out["pred_masks"].sum()
    loss.backward()
    optimizer.step()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.class_head.weight.grad is not None and model.lateral4.weight.grad is not None  # the rest learns
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics unchanged


def test_forward_from_cached_features_equals_forward_from_images():
    """A frozen backbone stays in eval mode under train(), so its features can be computed once and passed in."""
    torch.manual_seed(0)
    model = HemaX(5, pretrained=True, d_model=32, nheads=4, encoder_layers=1, decoder_layers=1, ffn_dim=64,
                  num_queries=2, mask_dim=8, fpn_dim=16, dropout=0.0)
    model.freeze_backbone()
    model.train()
    assert not any(m.training for m in model.backbone.modules())  # no stochastic depth, no BatchNorm updates
    assert model.transformer.training  # the rest trains
    x = torch.randint(0, 255, (3, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        feats = model.backbone_features(x)
        a, b = model(x), model(features=feats)
    assert [f.shape[-1] for f in feats] == [8, 4, 2]  # strides 4, 8, 16
    for key in ("pred_logits", "pred_boxes", "pred_masks"):
        assert torch.equal(a[key], b[key])
    with pytest.raises(ValueError, match="images or their backbone features"):
        model()
