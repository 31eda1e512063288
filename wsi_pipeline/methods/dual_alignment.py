"""Deep semi-supervised metric learning with dual alignment (Chai et al.; ``shared/method.md``).

Per step, besides Faster R-CNN's supervised losses:

- labeled proposals: the box-head features of the RoI sampler's foreground proposals, classes from the
  ground-truth assignment, scores ``q`` = the detector's probability of that class;
- unlabeled proposals: pseudo-labels from a separate ``no_grad`` pass of the model itself in eval mode
  (or of an EMA teacher, ``dual_alignment.pseudo_labels: ema``) at score >= ``threshold``, or the boxes a
  COCO pool gives (``given``: offline pseudo-labels, or the hidden truth in an oracle experiment), score 1;
  the student's box head embeds those boxes with gradient;
- both go through the projection head (Eq. 1) into the metric space, L2-normalised as are the proxies
  (Proxy-NCA's practice: distances stay within [0, 2], so L_pml is bounded below and margin 1.0 is
  meaningful; the paper leaves the scale open);
- proposal alignment (Eq. 2-3): L_pml on labeled rows (the proxies learn from these only, with their own
  learning rate) and L'_pml on unlabeled rows against detached proxies;
- prototype alignment (Eq. 4-8): confidence-guided prototypes of each side against the memory bank's
  class means (ground-truth-guided labeled prototypes of previous steps), L_intra + 2 L_inter;
- lambda(t) ramps the four terms up (Eq. 9).

``background_rows`` (not in the paper) adds a background proxy and prototype: the RoI sampler's
background proposals become rows too, on labeled images and, sampled against the pseudo-boxes, on
unlabeled ones, so the metric space can also pull a mimic towards background.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsi_pipeline.config import DualAlignmentConfig, PipelineConfig, SemiSupervisedConfig
from wsi_pipeline.data.batch import TrainBatch
from wsi_pipeline.losses.memory_bank import MemoryBank
from wsi_pipeline.losses.metric import class_prototypes, prototype_alignment, proxy_loss
from wsi_pipeline.methods.semi import SemiSupervised, pseudo_labels
from wsi_pipeline.modeling import CytologyDetector
from wsi_pipeline.modeling.detector import SupervisedOutputs
from wsi_pipeline.modeling.heads import ProjectionHead
from wsi_pipeline.taxonomy import NUM_CLASSES

Rows = tuple[Tensor, Tensor, Tensor]  # embeddings (N, D), row classes (N,) in 0 .. K - 1, scores (N,)


class AlignmentTerms(nn.Module):
    """The metric space of dual alignment: the projection head (Eq. 1), the class proxies (Eq. 2-3) and
    the memory bank (Eq. 7-8), with the four terms ``sup_pml``, ``unsup_pml``, ``sup_pmb``, ``unsup_pmb``
    (each pair switchable for the paper's ablations). The method that owns it supplies the rows: labeled
    proposals and pseudo-labelled unlabeled ones, each as (embeddings, row classes, scores). Row classes
    are the lesion classes 0 .. C - 1 (detector label - 1), or with ``background_rows`` 0 .. C with 0 the
    background (the detector's labels as they are)."""

    def __init__(self, in_dim: int, da: DualAlignmentConfig):
        super().__init__()
        self.da = da
        self.projection = ProjectionHead(in_dim, da.hidden_dim, da.embed_dim)
        self.offset = 0 if da.background_rows else 1  # row class = detector label - offset
        self.num_classes = NUM_CLASSES + 1 - self.offset
        # on the unit sphere from the start: a random 128-d proxy has norm ~11, and lr 0.01 would barely turn it
        proxies = F.normalize(torch.randn(self.num_classes, da.embed_dim), dim=1)
        self.proxies = nn.Parameter(proxies) if da.proposal_alignment else None
        use_bank = da.prototype_alignment and da.memory_bank
        self.bank = MemoryBank(da.bank_size, da.embed_dim) if use_bank else None
        names = []
        if da.proposal_alignment:
            names += ["sup_pml", "unsup_pml"]
        if da.prototype_alignment:
            names += ["sup_pmb", "unsup_pmb"]
        if not names:
            raise ValueError("train.ssl.dual_alignment: switch on proposal_alignment or prototype_alignment")
        self.loss_names = tuple(names)

    def parameter_groups(self, params: list[nn.Parameter], lr: float) -> list[dict]:
        """``params`` (the owning method's) in two groups: the proxies at ``proxy_lr`` (0.01 in the paper),
        everything else at ``lr``."""
        proxies = [self.proxies] if self.proxies is not None else []
        rest = [p for p in params if p.requires_grad and all(p is not q for q in proxies)]
        groups: list[dict] = [{"params": rest, "lr": lr}]
        if proxies:
            groups.append({"params": proxies, "lr": self.da.proxy_lr})
        return groups

    def embed(self, features: Tensor) -> Tensor:
        """Box-head features ``(N, 1024)`` -> unit-length embeddings ``(N, embed_dim)``."""
        return F.normalize(self.projection(features), dim=1)

    def proposal_rows(self, sup: SupervisedOutputs) -> Rows:
        """Rows of a supervised pass's sampled proposals: the foreground ones (all of them with
        ``background_rows``), classes as the sampler assigned them, scores the detector's probability of
        that class."""
        keep = torch.where(sup.labels >= self.offset)[0]
        probs = torch.softmax(sup.head.class_logits[keep].detach(), dim=1)
        scores = probs.gather(1, sup.labels[keep][:, None]).squeeze(1)
        return self.embed(sup.head.features[keep]), sup.labels[keep] - self.offset, scores

    def box_rows(self, features: Tensor, labels: Tensor, scores: Tensor) -> Rows:
        """Rows of pseudo-labelled boxes from the student's box-head ``features`` ``(N, 1024)``, their
        pseudo-classes ``labels`` (1 .. C) and scores."""
        if not len(labels):
            return features.new_zeros(0, self.da.embed_dim), labels.new_zeros(0), scores.new_zeros(0)
        return self.embed(features), labels - self.offset, scores

    def bank_prototypes(self, x: Tensor, classes: Tensor) -> tuple[Tensor, Tensor]:
        """P^M (C, D) and which classes it has: the bank's class means, or without a bank the batch's
        ground-truth-guided labeled prototypes (the "without memory bank" ablation)."""
        if self.bank is not None:
            return self.bank.class_means(self.num_classes)
        return class_prototypes(x.detach(), classes, self.num_classes)

    def forward(self, labeled: Rows, unlabeled: Rows, diagnostics: dict[str, float]) -> dict[str, Tensor]:
        """The switched-on terms (unweighted); proxy and prototype distances and the bank's fill go to
        ``diagnostics``. This step's ground-truth-guided labeled prototypes join the bank afterwards."""
        (x_l, c_l, q_l), (x_u, c_u, q_u) = labeled, unlabeled
        losses: dict[str, Tensor] = {}
        if self.proxies is not None:
            proxies = F.normalize(self.proxies, dim=1)
            losses["sup_pml"] = proxy_loss(x_l, c_l, proxies)
            losses["unsup_pml"] = proxy_loss(x_u, c_u, proxies.detach())  # proxies learn from labeled data only
            d = torch.cdist(proxies.detach(), proxies.detach())
            diagnostics["proxy_distance_min"] = float(d[~torch.eye(self.num_classes, dtype=torch.bool)].min())
        if self.da.prototype_alignment:
            bank, bank_present = self.bank_prototypes(x_l, c_l)
            m = self.da.margin
            cg_l, present_l = class_prototypes(x_l, c_l, self.num_classes, q_l)
            cg_u, present_u = class_prototypes(x_u, c_u, self.num_classes, q_u)
            losses["sup_pmb"] = sum(prototype_alignment(bank, bank_present, cg_l, present_l, m))  # type: ignore[assignment]
            losses["unsup_pmb"] = sum(prototype_alignment(bank, bank_present, cg_u, present_u, m))  # type: ignore[assignment]
            self._log_prototypes(bank, bank_present, diagnostics)
            if self.bank is not None:
                gg, present = class_prototypes(x_l.detach(), c_l, self.num_classes)
                self.bank.push(gg[present], torch.where(present)[0])
        return losses

    def _log_prototypes(self, protos: Tensor, present: Tensor, diagnostics: dict[str, float]) -> None:
        if self.bank is not None:
            for c, n in enumerate(self.bank.counts(self.num_classes).tolist()):
                diagnostics[f"bank_fill_{c + self.offset}"] = float(n)
        idx = torch.where(present)[0]
        if len(idx) > 1:
            d = torch.cdist(protos[idx], protos[idx])
            diagnostics["prototype_distance_min"] = float(
                d[~torch.eye(len(idx), dtype=torch.bool, device=d.device)].min()
            )


class DualAlignment(SemiSupervised):
    """``sup_pml``, ``unsup_pml`` (proposal alignment) and ``sup_pmb``, ``unsup_pmb`` (prototype alignment),
    each switchable (``train.ssl.dual_alignment``) for the paper's ablations."""

    name = "dual_alignment"

    def __init__(self, detector: CytologyDetector, cfg: SemiSupervisedConfig, seed: int = 0):
        da = cfg.dual_alignment
        super().__init__(detector, cfg, seed, teacher=da.pseudo_labels == "ema")
        self.da = da
        self.alignment = AlignmentTerms(detector.roi_heads.box_predictor.cls_score.in_features, da)
        self.loss_names = self.alignment.loss_names
        self.term_scale = dict.fromkeys(self.loss_names, da.weight)

    @classmethod
    def needs_pool_boxes(cls, config: PipelineConfig) -> bool:
        return config.train.ssl.dual_alignment.pseudo_labels == "given"

    def parameter_groups(self, lr: float) -> list[dict]:
        return self.alignment.parameter_groups(list(self.parameters()), lr)

    def pseudo_boxes(self, batch: TrainBatch) -> list[dict[str, Tensor]]:
        """The unlabeled images' pseudo-boxes (``boxes``, ``labels`` 1 .. C, ``scores``): from a no-grad
        pass of the model itself or its EMA teacher at ``threshold``, or given with the pool (score 1)."""
        images = batch.unlabeled
        if self.da.pseudo_labels == "given":
            if len(batch.unlabeled_targets) != len(images):
                raise ValueError(
                    "train.ssl.dual_alignment.pseudo_labels=given: the unlabeled pool gives no boxes; set "
                    "train.unlabeled to a COCO file of the pool's patches with their boxes"
                )
            device = images[0].device
            found = [{**t, "scores": torch.ones(len(t["labels"]), device=device)} for t in batch.unlabeled_targets]
        else:
            source = self.teacher.model if self.teacher is not None else self.detector
            found = pseudo_labels(source, images, self.da.threshold)  # type: ignore[arg-type]
        self.count_pseudo(found)
        return found

    def pseudo_labelled_features(self, batch: TrainBatch) -> tuple[Tensor, Tensor, Tensor]:
        """The pseudo-boxes' labels (1 .. C) and scores, with their box-head features ``(N, 1024)`` from the
        student (with gradient)."""
        images, found = batch.unlabeled, self.pseudo_boxes(batch)
        keep = [k for k, d in enumerate(found) if len(d["boxes"])]
        if not keep:
            empty = torch.zeros(0, dtype=torch.long, device=images[0].device)
            return images[0].new_zeros(0, 1), empty, images[0].new_zeros(0)
        targets = [{"boxes": found[k]["boxes"], "labels": found[k]["labels"]} for k in keep]
        prepared, targets = self.detector.preprocess([images[k] for k in keep], targets)
        features = self.detector.features(prepared)
        head = self.detector.box_head(features, [t["boxes"] for t in targets], prepared.image_sizes)
        return head.features, torch.cat([t["labels"] for t in targets]), torch.cat([found[k]["scores"] for k in keep])

    def semi_supervised_losses(self, batch: TrainBatch, sup: SupervisedOutputs) -> dict[str, Tensor]:
        if self.da.background_rows:  # the student's proposals sampled against the pseudo-boxes (losses unused)
            targets = [{"boxes": d["boxes"], "labels": d["labels"]} for d in self.pseudo_boxes(batch)]
            unlabeled = self.alignment.proposal_rows(self.detector.supervised(batch.unlabeled, targets))
        else:
            unlabeled = self.alignment.box_rows(*self.pseudo_labelled_features(batch))
        return self.alignment(self.alignment.proposal_rows(sup), unlabeled, self.diagnostics)
