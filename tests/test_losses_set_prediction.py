"""HemaX losses and matcher against hand values and torchvision."""
import numpy as np
import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou
from torchvision.ops import sigmoid_focal_loss as tv_focal

from wbcstudy.losses.set_prediction import (
    Targets,
    dice_loss,
    giou_cxcywh,
    hemax_loss,
    hungarian_match,
    matching_cost,
    sigmoid_focal_loss,
)


def test_hungarian_2x2():
    rows, cols = hungarian_match(np.array([[1.0, 2.0], [0.0, 5.0]]))  # best: q0→t1, q1→t0, cost 2
    assert rows.tolist() == [1, 0] and cols.tolist() == [0, 1]


def test_hungarian_3x2_more_queries_than_targets():
    cost = torch.tensor([[4.0, 1.0], [2.0, 0.5], [0.1, 3.0]])  # q2→t0 (0.1), q1→t1 (0.5): total 0.6
    rows, cols = hungarian_match(cost)
    assert rows.tolist() == [2, 1] and cols.tolist() == [0, 1]


def test_giou_hand_value_and_torchvision():
    a = torch.tensor([[0.5, 0.5, 0.2, 0.2]])  # [0.4, 0.6]²
    b = torch.tensor([[0.6, 0.5, 0.2, 0.2]])  # [0.5, 0.7]×[0.4, 0.6]
    # inter 0.1*0.2=0.02, union 0.06, IoU 1/3; hull 0.3*0.2=0.06 → GIoU = IoU
    assert giou_cxcywh(a, b).item() == pytest.approx(1 / 3, abs=1e-6)
    c = torch.tensor([[0.2, 0.2, 0.2, 0.2]])  # [0.1, 0.3]², disjoint from a: hull 0.5², union 0.08
    assert giou_cxcywh(a, c).item() == pytest.approx(0 - (0.25 - 0.08) / 0.25, abs=1e-6)
    x, y = torch.rand(4, 4) * 0.4 + 0.1, torch.rand(3, 4) * 0.4 + 0.1
    ref = generalized_box_iou(box_convert(x, "cxcywh", "xyxy"), box_convert(y, "cxcywh", "xyxy"))
    assert torch.allclose(giou_cxcywh(x, y), ref)


def test_focal_matches_torchvision():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 2, 8, 8), (torch.rand(2, 2, 8, 8) > 0.5).float()
    ref = tv_focal(logits, targets, alpha=0.25, gamma=2.0, reduction="none")
    assert torch.allclose(sigmoid_focal_loss(logits, targets), ref, atol=1e-6)
    # hand value: logit 0, target 1 → p_t = 0.5, BCE = ln 2, loss = 0.25 · 0.25 · ln 2
    assert sigmoid_focal_loss(torch.zeros(1), torch.ones(1)).item() == pytest.approx(0.0625 * np.log(2), rel=1e-6)


def test_dice_hand_value():
    big = 50.0  # sigmoid ≈ 1 / 0
    logits = torch.tensor([[big, big], [-big, -big]])  # p = 1 on the top row
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # 2 pixels, one overlap
    assert dice_loss(logits, target).item() == pytest.approx(1 - (2 * 1 + 1) / (2 + 2 + 1), abs=1e-6)


def test_matching_cost_weights():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    cost = matching_cost(logits, boxes, torch.tensor([0]), torch.tensor([[0.6, 0.5, 0.2, 0.2]]))
    assert cost.item() == pytest.approx(-0.7 + 5 * 0.1 - 2 / 3, abs=1e-5)
    only_class = matching_cost(logits, boxes, torch.tensor([1]), boxes, use_box=False)
    assert only_class.item() == pytest.approx(-0.2, abs=1e-6)


def _outputs(b=2, n=3, c=5, s=8, requires_grad=False):
    torch.manual_seed(1)
    out = {"pred_logits": torch.randn(b, n, c + 1), "pred_boxes": torch.rand(b, n, 4) * 0.5 + 0.25,
           "pred_masks": torch.randn(b, n, 2, s // 2, s // 2),
           "pred_attributes": [torch.randn(b, n, k) for k in (2, 2, 3, 2)]}
    if requires_grad:
        for v in out.values():
            for t in (v if isinstance(v, list) else [v]):
                t.requires_grad_(True)
    return out


def _targets(b=2, s=8, has_mask=False, attrs=-1):
    return Targets(labels=torch.tensor([[1], [3]])[:b], boxes=torch.full((b, 1, 4), 0.4),
                   masks=torch.ones(b, 1, 2, s, s),
                   attributes=torch.full((b, 1, 4), attrs, dtype=torch.long),
                   present=torch.ones(b, 1, dtype=torch.bool),
                   has_class=torch.ones(b, dtype=torch.bool), has_box=torch.ones(b, dtype=torch.bool),
                   has_mask=torch.full((b,), has_mask))


def test_missing_labels_give_zero_loss_and_no_gradient():
    out = _outputs(requires_grad=True)
    terms = hemax_loss(out, _targets(has_mask=False, attrs=-1))
    assert terms["focal"].item() == 0 and terms["dice"].item() == 0 and terms["attribute"].item() == 0
    terms["loss"].backward()
    assert out["pred_masks"].grad is None and all(a.grad is None for a in out["pred_attributes"])
    assert out["pred_logits"].grad is not None and out["pred_boxes"].grad is not None


def test_mask_and_attribute_terms_present_when_labelled():
    out = _outputs(requires_grad=True)
    terms = hemax_loss(out, _targets(has_mask=True, attrs=0))
    assert terms["focal"].item() > 0 and terms["dice"].item() > 0 and terms["attribute"].item() > 0
    terms["loss"].backward()
    assert out["pred_masks"].grad.abs().sum() > 0


def test_no_object_weighting():
    # one image, 2 queries, target class 0 matched to query 0; the other query is no-object with weight 0.1
    out = {"pred_logits": torch.zeros(1, 2, 3),
           "pred_boxes": torch.tensor([[[0.4, 0.4, 0.4, 0.4], [0.9, 0.9, 0.1, 0.1]]]),
           "pred_masks": torch.zeros(1, 2, 2, 2, 2), "pred_attributes": [torch.zeros(1, 2, 2)]}
    tg = Targets(labels=torch.tensor([[0]]), boxes=torch.full((1, 1, 4), 0.4), masks=torch.zeros(1, 1, 2, 2, 2),
                 attributes=torch.full((1, 1, 1), -1), present=torch.ones(1, 1, dtype=torch.bool),
                 has_class=torch.ones(1, dtype=torch.bool), has_box=torch.ones(1, dtype=torch.bool),
                 has_mask=torch.zeros(1, dtype=torch.bool))
    terms = hemax_loss(out, tg)
    assert terms["ce"].item() == pytest.approx(np.log(3), abs=1e-6)  # uniform logits: weighted mean of ln 3
    assert terms["l1"].item() == pytest.approx(0.0, abs=1e-6) and terms["giou"].item() == pytest.approx(0.0, abs=1e-6)
