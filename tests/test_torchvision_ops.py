"""The installed torchvision must ship working compiled ops (the CPU-only local torch wheel breaks them)."""

import torch
from torchvision.ops import box_iou, nms, roi_align


def test_nms_keeps_highest_and_suppresses_overlap():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    # IoU of the first two is 81 / 119 = 0.68 > 0.5
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes, scores, 0.7).tolist() == [0, 1, 2]
    assert box_iou(boxes[:1], boxes[1:2]).item() == torch.tensor(81 / 119).item()


def test_roi_align_averages_a_constant_region():
    feat = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    # whole 2x2 top-left block (values 0, 1, 4, 5) pooled to one bin, sampled at pixel centres
    out = roi_align(
        feat,
        [torch.tensor([[0.0, 0.0, 2.0, 2.0]])],
        output_size=1,
        spatial_scale=1.0,
        sampling_ratio=2,
        aligned=True,
    )
    assert torch.allclose(out, torch.tensor([[[[2.5]]]]))
