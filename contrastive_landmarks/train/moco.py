"""Momentum Contrast (He et al. 2020) on a :class:`~contrastive_landmarks.backbone.Backbone`.

The paper learns its landmark representation with MoCo's instance discrimination (Eq. 5): an image
``x`` and its transformation ``x'`` are a positive pair, keys of other images held in a FIFO queue are
the negatives. The authors' settings (reference notes §4) are the defaults: a linear 128-d head with
L2 normalisation on the globally pooled ``conv5_x``, queue 4096, temperature 0.07, key encoder an
EMA (0.999) of the query encoder's *parameters* (BN buffers are not averaged; the key encoder's BN
stays in train mode). MoCo v2's MLP head is an option.

Under ``torch.distributed`` the keys are gathered from every process before entering the queue,
and shuffle-BN (``shuffle_bn=True``) runs the key encoder on a batch permuted across processes so
BatchNorm statistics cannot leak the positive pair. In one process the permutation would not change
the statistics, so it is skipped.

``equivariance=λ > 0`` adds the paper's spatially contrastive loss (Eq. 3 with Eq. 4,
:func:`~contrastive_landmarks.losses.spatial_contrastive_loss`) to the query encoder's intermediate maps:
between each query view and a geometric warp of it (``warped=(images, grid)``, e.g. from
:func:`~contrastive_landmarks.tps.make_pair`), every location of the warp must match its source location.
MoCo's instance discrimination needs images that differ; footage of one animal in one rig hardly does,
while the spatial term contrasts locations *within* an image (§3.1, "a single image may contain enough
variety"). The total is ``moco + λ · equivariance``; :attr:`MoCo.terms` holds both of the last call.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbone import Backbone
from ..losses import spatial_contrastive_loss
from ..preprocessing import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["EQUIVARIANCE_STAGES", "MoCo", "MoCoEncoder", "MoCoHead", "dense_descriptors", "moco_loss"]

#: Stages whose maps the equivariance term reads: the paper's best single layer (Tab. 3, ``conv4_x``) and the
#: one before it, whose stride-8 grid keeps locations apart (16 x 16 cells at 128 px).
EQUIVARIANCE_STAGES = ("conv3_x", "conv4_x")


class MoCoHead(nn.Module):
    """Projection of the pooled ``conv5_x`` features: linear (MoCo v1, the authors') or MLP (v2).

    Shape:
        ``(B, C)`` -> ``(B, dim)``, L2-normalised.
    """

    def __init__(self, in_channels: int, dim: int = 128, *, mlp: bool = False, hidden: int | None = None) -> None:
        super().__init__()
        if mlp:
            hidden = hidden or in_channels
            self.fc = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
        else:
            self.fc = nn.Linear(in_channels, dim)

    def forward(self, features: Tensor) -> Tensor:
        return F.normalize(self.fc(features), dim=1)


class MoCoEncoder(nn.Module):
    """A backbone (its last stage ``conv5_x``), global average pooling and a :class:`MoCoHead`.

    Shape:
        ``(B, 3, H, W)`` normalised images -> ``(B, dim)`` unit vectors.
    """

    def __init__(self, backbone: Backbone, head: MoCoHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_with_maps(images)[0]

    def forward_with_maps(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(embedding (B, dim), [maps of the backbone's stages before the last])``."""
        *maps, features = self.backbone(images)
        return self.head(features.mean(dim=(2, 3))), maps


def dense_descriptors(maps: Sequence[Tensor]) -> Tensor:
    """Stage maps as one descriptor per cell of the finest: each L2-normalised over its channels, bilinearly
    upsampled (``align_corners=False``) to the first map's grid and concatenated.

    Shape:
        ``[(B, C_s, h_s, w_s)]`` -> ``(B, sum C_s, h_0, w_0)``.
    """
    size = maps[0].shape[-2:]
    parts = [F.normalize(m.float(), dim=1) for m in maps]
    parts = [p if p.shape[-2:] == size else F.interpolate(p, size=size, mode="bilinear") for p in parts]
    return torch.cat(parts, 1)


def moco_loss(query: Tensor, key: Tensor, queue: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """InfoNCE with one positive and a queue of negatives (Eq. 5), and the top-1 accuracy.

    Args:
        query: ``(B, D)`` unit vectors.
        key: ``(B, D)`` unit vectors (the positives; no gradient needed).
        queue: ``(D, K)`` negatives.
        temperature: logits are ``cos / temperature``.

    Returns:
        ``(loss, accuracy)``: cross-entropy with the positive at index 0, and how often it wins.
    """
    if query.shape != key.shape or query.ndim != 2 or queue.ndim != 2 or queue.shape[0] != query.shape[1]:
        raise ValueError(
            f"expected query/key (B, D) and queue (D, K); got {tuple(query.shape)}, "
            f"{tuple(key.shape)}, {tuple(queue.shape)}"
        )
    positive = (query * key).sum(1, keepdim=True)
    negative = query @ queue.to(query.dtype)
    logits = torch.cat([positive, negative], 1).float() / temperature
    labels = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    loss = F.cross_entropy(logits, labels)
    accuracy = (logits.argmax(1) == 0).float().mean()
    return loss, accuracy


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def _all_gather(tensor: Tensor) -> Tensor:
    if not _distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, 0)


class MoCo(nn.Module):
    """Query and key encoders, the key queue and the MoCo loss.

    Args:
        arch: timm ResNet name (``resnet18``, ``resnet50``, ``test_resnet`` ...).
        dim: embedding size (128).
        queue_size: number of negatives K (4096).
        temperature: softmax temperature (0.07).
        momentum: key-encoder EMA momentum over parameters (0.999).
        mlp: MoCo v2's 2-layer MLP head instead of the linear one.
        shuffle_bn: shuffle the keys across processes for the key encoder (distributed only).
        mean, std, input_size: recorded on the backbone (exported with it).
        equivariance: weight ``λ`` of the spatially contrastive term (0: MoCo alone, the authors' recipe).
        equivariance_stages: the query backbone's stages it reads (:func:`dense_descriptors` of them).
        equivariance_temperature: ``τ`` of Eq. 4 on cosine similarities (the projector's 1/7).

    ``forward(im_q, im_k, warped=None)`` updates the key encoder, computes the loss, and enqueues the
    keys; it returns ``(loss, accuracy)``. ``generator`` seeds the shuffle-BN permutation (identical on
    every process, so nothing needs broadcasting). ``warped = (images (B, 3, H, W), grid (B, H, W, 2))``:
    a warp of ``im_q`` and, for each of its pixels, the source location in ``im_q`` (normalised
    ``align_corners=False`` coordinates, :class:`~contrastive_landmarks.tps.TPSPair`'s ``grid``); it is
    required when ``equivariance > 0`` and refused otherwise. The query encoder then runs once on both
    views (its BatchNorm sees both). :attr:`terms` holds the detached ``moco`` and ``equivariance``
    values of the last call.
    """

    def __init__(
        self,
        arch: str = "resnet50",
        *,
        dim: int = 128,
        queue_size: int = 4096,
        temperature: float = 0.07,
        momentum: float = 0.999,
        mlp: bool = False,
        shuffle_bn: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        input_size: tuple[int, int] | None = None,
        equivariance: float = 0.0,
        equivariance_stages: Sequence[str] = EQUIVARIANCE_STAGES,
        equivariance_temperature: float = 1 / 7,
    ) -> None:
        super().__init__()
        if queue_size < 1 or dim < 1:
            raise ValueError(f"queue_size and dim must be positive, got {queue_size}, {dim}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not equivariance >= 0:
            raise ValueError(f"equivariance must be >= 0, got {equivariance}")
        stages = (*equivariance_stages, "conv5_x") if equivariance else ("conv5_x",)
        if equivariance and (not equivariance_stages or "conv5_x" in equivariance_stages):
            raise ValueError(f"equivariance_stages must name stages before conv5_x, got {list(equivariance_stages)}")
        backbone = Backbone(arch, stages, mean=mean, std=std, input_size=input_size)
        self.encoder_q = MoCoEncoder(backbone, MoCoHead(backbone.channels[-1], dim, mlp=mlp))
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.shuffle_bn = shuffle_bn
        self.equivariance = float(equivariance)
        self.equivariance_temperature = float(equivariance_temperature)
        self.terms: dict[str, Tensor] = {}
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.train()

    @property
    def backbone(self) -> Backbone:
        """The query encoder's backbone (what is exported)."""
        return self.encoder_q.backbone

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``key = m key + (1 - m) query`` over parameters."""
        q_params = list(self.encoder_q.parameters())
        k_params = list(self.encoder_k.parameters())
        torch._foreach_lerp_(k_params, q_params, 1.0 - self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``(N, D)`` keys (all processes' keys when distributed) into the FIFO queue."""
        keys = _all_gather(keys)
        size = self.queue.shape[1]
        if keys.shape[0] > size:
            keys = keys[-size:]
        index = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[:, index] = keys.T.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    @torch.no_grad()
    def _keys(self, im_k: Tensor, generator: torch.Generator | None) -> Tensor:
        if not (self.shuffle_bn and _distributed()):
            return self.encoder_k(im_k)
        local = im_k.shape[0]
        gathered = _all_gather(im_k)
        perm = torch.randperm(gathered.shape[0], generator=generator).to(im_k.device)
        rank = dist.get_rank()
        mine = perm[rank * local : (rank + 1) * local]
        keys = _all_gather(self.encoder_k(gathered[mine]))
        inverse = torch.argsort(perm)
        return keys[inverse[rank * local : (rank + 1) * local]]

    def forward(
        self,
        im_q: Tensor,
        im_k: Tensor,
        generator: torch.Generator | None = None,
        warped: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        if im_q.shape != im_k.shape:
            raise ValueError(
                f"query and key views must have the same shape, got {tuple(im_q.shape)} and {tuple(im_k.shape)}"
            )
        if (warped is None) != (self.equivariance == 0):
            raise ValueError(
                "warped views are needed exactly when equivariance > 0 "
                f"(equivariance={self.equivariance}, warped {'given' if warped is not None else 'missing'})"
            )
        equivariance = None
        if warped is None:
            query = self.encoder_q(im_q)
        else:
            images, grid = warped
            if images.shape != im_q.shape or tuple(grid.shape) != (im_q.shape[0], *im_q.shape[-2:], 2):
                raise ValueError(
                    f"warped must be images {tuple(im_q.shape)} and a grid {(im_q.shape[0], *im_q.shape[-2:], 2)}, "
                    f"got {tuple(images.shape)} and {tuple(grid.shape)}"
                )
            batch = im_q.shape[0]
            embedding, maps = self.encoder_q.forward_with_maps(torch.cat([im_q, images]))
            query, descriptors = embedding[:batch], dense_descriptors(maps)
            with torch.autocast(im_q.device.type, enabled=False):  # a softmax over locations: in float32
                equivariance = spatial_contrastive_loss(
                    descriptors[batch:],
                    descriptors[:batch],
                    grid.float(),
                    temperature=self.equivariance_temperature,
                    image_size=tuple(im_q.shape[-2:]),
                )
        with torch.no_grad():
            self.momentum_update()
            key = self._keys(im_k, generator).to(query.dtype)
        loss, accuracy = moco_loss(query, key, self.queue.clone(), self.temperature)
        self.enqueue(key.float())
        self.terms = {"moco": loss.detach()}
        if equivariance is not None:
            self.terms["equivariance"] = equivariance.detach()
            loss = loss + self.equivariance * equivariance
        return loss, accuracy
