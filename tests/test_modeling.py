"""The detector: empty targets, resampling by physical resolution, anchors, embeddings, local weights, no downloads."""

from __future__ import annotations

import pytest
import torch

from wsi_pipeline.config import ModelConfig
from wsi_pipeline.modeling import build_detector
from wsi_pipeline.modeling.detector import anchor_sizes_px

TINY = ModelConfig(backbone="tiny", fpn_channels=64, box_batch_size_per_image=64)


def _target(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def test_empty_targets_give_finite_losses_and_no_box_regression():
    torch.manual_seed(0)
    model = build_detector(TINY).train()
    losses = model([torch.rand(3, 256, 256), torch.rand(3, 256, 256)], [_target([], []), _target([], [])])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box_reg"].item() == 0.0 and losses["loss_rpn_box_reg"].item() == 0.0
    sum(losses.values()).backward()  # and they backpropagate


def test_images_keep_their_size_at_the_working_resolution():
    model = build_detector(ModelConfig(backbone="tiny", fpn_channels=64)).eval()
    batch, _ = model.transform([torch.rand(3, 1200, 1200), torch.rand(3, 600, 900)])
    assert batch.image_sizes == [(1200, 1200), (600, 900)]  # torchvision's default would resize both to 800


def test_images_are_resampled_from_input_mpp_to_mpp_and_boxes_follow():
    model = build_detector(ModelConfig(backbone="tiny", fpn_channels=64, mpp=0.5, input_mpp=0.25)).train()
    images = [torch.rand(3, 1200, 1200), torch.rand(3, 600, 900)]
    targets = [_target([[100, 200, 300, 500]], [1]), _target([], [])]
    batch, scaled = model.transform(images, targets)
    assert batch.image_sizes == [(600, 600), (300, 450)]
    assert scaled is not None and scaled[0]["boxes"].tolist() == [[50, 100, 150, 250]]
    # in eval, detections come back in the input's pixels: postprocess undoes the scale
    out = model.eval().transform.postprocess(
        [{"boxes": torch.tensor([[50.0, 100.0, 150.0, 250.0]]), "labels": torch.tensor([1]), "scores": torch.ones(1)}],
        batch.image_sizes[:1],
        [(1200, 1200)],
    )
    assert out[0]["boxes"].tolist() == [[100, 200, 300, 500]]


def test_proposal_counts_are_settings():
    cfg = ModelConfig(backbone="tiny", fpn_channels=64, rpn_pre_nms_top_n=(600, 300), rpn_post_nms_top_n=(500, 200))
    model = build_detector(cfg)
    assert (model.rpn.pre_nms_top_n(), model.rpn.post_nms_top_n()) == (600, 500)
    model.eval()
    assert (model.rpn.pre_nms_top_n(), model.rpn.post_nms_top_n()) == (300, 200)
    assert ModelConfig().rpn_post_nms_top_n == (2000, 1000)  # torchvision's defaults


def test_anchor_sizes_follow_the_resolution():
    assert anchor_sizes_px(ModelConfig()) == ((32,), (64,), (128,), (256,), (512,))
    assert anchor_sizes_px(ModelConfig(mpp=0.5)) == ((16,), (32,), (64,), (128,), (256,))


def test_stages_give_box_head_outputs_of_sampled_proposals_and_of_any_boxes():
    torch.manual_seed(0)
    model = build_detector(TINY).train()
    images = [torch.rand(3, 256, 256), torch.rand(3, 256, 256)]
    targets = [_target([[10, 20, 80, 90], [100, 100, 160, 150]], [2, 4]), _target([], [])]
    out = model.supervised(images, targets)
    head, n = out.head, out.head.features.shape[0]
    assert head.features.shape == (n, 1024) and head.class_logits.shape == (n, 5)
    assert head.box_regression.shape == (n, 20) and out.labels.shape == (n,)
    assert set(out.labels.unique().tolist()) <= {0, 2, 4} and (out.labels > 0).any()  # ground truth joins
    assert head.image_index.bincount().tolist() == [64, 64]
    sum(out.losses.values()).backward()
    # unlabeled images: proposals without targets (no losses, nothing fake), then embeddings of chosen boxes
    batch, _ = model.preprocess(images)
    features = model.features(batch)
    proposals, losses = model.proposals(batch, features)
    assert losses == {} and len(proposals) == 2 and proposals[0].shape[1] == 4
    boxes = [torch.tensor([[0.0, 0.0, 32.0, 32.0]]), torch.zeros(0, 4)]
    embedded = model.box_head(features, boxes, batch.image_sizes)
    assert embedded.features.shape == (1, 1024) and embedded.image_index.tolist() == [0]
    with pytest.raises(ValueError, match="needs targets"):
        model(images)


def test_the_classifier_loss_is_a_swappable_stage():
    from wsi_pipeline.losses.detection import CLASSIFIER_LOSSES

    class Doubled(torch.nn.Module):
        def forward(self, logits, labels):
            return 2 * torch.nn.functional.cross_entropy(logits, labels)

    images, targets = [torch.rand(3, 128, 128)], [_target([[10, 20, 60, 70]], [1])]
    torch.manual_seed(0)
    plain = build_detector(TINY).train()(images, targets)
    CLASSIFIER_LOSSES["doubled"] = Doubled
    try:
        torch.manual_seed(0)
        doubled = build_detector(ModelConfig(**{**TINY.__dict__, "classifier_loss": "doubled"})).train()(
            images, targets
        )
    finally:
        del CLASSIFIER_LOSSES["doubled"]
    assert doubled["loss_classifier"].item() == pytest.approx(2 * plain["loss_classifier"].item())
    assert doubled["loss_box_reg"].item() == pytest.approx(plain["loss_box_reg"].item())
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        build_detector(ModelConfig(backbone="tiny", classifier_loss="nope"))


def test_local_backbone_weights_load_and_bad_files_are_clear(tmp_path):
    from torchvision.models import resnet18

    source = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = build_detector(ModelConfig(backbone="resnet18", norm="frozen_batch", backbone_weights=str(path)))
    body = model.backbone.body
    assert torch.equal(body.conv1.weight, source.conv1.weight)
    assert torch.equal(body.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    with pytest.raises(ValueError, match="weights file not found"):
        build_detector(ModelConfig(backbone="resnet18", backbone_weights=str(tmp_path / "missing.pth")))
    torch.save({"unrelated": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no tensor matches"):
        build_detector(ModelConfig(backbone="resnet18", backbone_weights=str(tmp_path / "other.pth")))


def test_nothing_is_downloaded(monkeypatch):
    import torch.hub

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    model = build_detector(ModelConfig(backbone="resnet50"))
    assert isinstance(model.backbone.body.layer1[0].bn1, torch.nn.GroupNorm)  # trains from scratch


def test_detections_carry_class_probabilities_and_equal_torchvisions_selection():
    torch.manual_seed(0)
    model = build_detector(ModelConfig(backbone="tiny", fpn_channels=16, box_score_thresh=0.0)).eval()
    images = [torch.rand(3, 200, 240), torch.rand(3, 160, 160)]
    with torch.no_grad():
        batch, _ = model.preprocess(images)
        features = model.features(batch)
        proposals, _ = model.proposals(batch, features)
        head = model.box_head(features, proposals, batch.image_sizes)
        head.class_logits = torch.randn_like(head.class_logits) * 3  # varied classes, not a near-uniform softmax
        ours = model.detect(head, proposals, batch.image_sizes, batch.image_sizes)
        boxes, scores, labels = model.roi_heads.postprocess_detections(
            head.class_logits, head.box_regression, proposals, batch.image_sizes
        )
    for mine, b, s, c in zip(ours, boxes, scores, labels, strict=True):
        assert torch.equal(mine["boxes"], b) and torch.equal(mine["scores"], s) and torch.equal(mine["labels"], c)
        assert mine["probs"].shape == (len(b), 5) and torch.allclose(mine["probs"].sum(1), torch.ones(len(b)))
        assert torch.equal(mine["probs"].gather(1, c[:, None])[:, 0], s)  # the score is its class's probability
