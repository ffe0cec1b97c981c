"""Training from a labelled folder: augmentation, BCE + Dice loss, AdamW with linear warm-up and cosine
decay, mixed precision, a checkpoint every epoch with resume, the best-by-validation-IoU kept, a CSV log."""

from __future__ import annotations

import csv
import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .. import checkpoint as ckpt
from ..labelled import DEFAULT_HOLDOUT, labelled_pairs, split_pairs
from ..nets import build
from ..wrappers.normalised import IMAGENET_MEAN, IMAGENET_STD, Segmenter
from ..zoo import default_device
from .backbone import load_backbone
from .data import PortraitDataset, augmentation
from .losses import segmentation_loss
from .metrics import iou

LOG_FIELDS = ["epoch", "train_loss", "val_loss", "val_iou", "lr", "seconds"]


@dataclass
class TrainOptions:
    arch: str
    data: Path
    out: Path
    val: Path | None = None  # a separate labelled folder; else a held-out part of `data`
    holdout: float = DEFAULT_HOLDOUT
    epochs: int = 30
    batch_size: int = 16
    size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    amp: bool = False
    device: str | None = None
    seed: int = 0
    resume: bool = False
    init: Path | None = None  # local backbone weights (e.g. torchvision ImageNet); nothing is downloaded
    workers: int = 0
    max_steps: int | None = None  # stop each epoch after this many steps (smoke runs, tests)
    progress: bool = True
    name: str | None = None  # stored in the checkpoints; default: the --out folder's name


def warmup_cosine(total_steps: int, warmup: float = 0.05):
    """LR factor per step: linear warm-up over the first 5% of steps, then cosine decay to 1%."""
    warm = max(1, round(total_steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _autocast(device: torch.device, amp: bool):
    if not amp:
        return nullcontext()
    # fp16 with loss scaling on CUDA; bf16 on CPU, where fp16 kernels are slow and bf16 needs no scaler.
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def _batches(dataset: PortraitDataset, batch_size: int, shuffle: bool, seed: int, workers: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=workers,
        drop_last=shuffle and len(dataset) > batch_size,
    )


@torch.no_grad()
def validate(
    model: Segmenter, dataset: PortraitDataset, batch_size: int, device: torch.device, amp: bool
) -> tuple[float, float]:
    """(mean loss, mean per-image IoU at the model's size) over `dataset`."""
    model.eval()
    losses: list[float] = []
    ious: list[float] = []
    for images, masks in _batches(dataset, batch_size, False, 0, 0):
        x = images.to(device).float().div_(255.0)
        t = masks.to(device).float()
        with _autocast(device, amp):
            logits = model.logits(x)
        logits = logits.float()
        losses.append(segmentation_loss(logits, t).item() * len(x))
        pred, truth = logits >= 0, t >= 0.5
        ious.extend(iou(p[0], q[0]) for p, q in zip(pred, truth, strict=True))
    return sum(losses) / len(dataset), sum(ious) / len(ious)


def train(options: TrainOptions) -> dict:
    """Train; returns a summary: architecture, parameters, best validation IoU, epochs and the files written."""
    device = torch.device(options.device) if options.device else default_device()
    seed_everything(options.seed)
    size = (options.size, options.size)
    pairs = labelled_pairs(options.data)
    if options.val is not None:
        train_pairs, val_pairs = pairs, labelled_pairs(options.val)
    else:
        train_pairs, val_pairs = split_pairs(pairs, options.holdout)
    # A 15% margin around the crop size lets RandomResizedCrop zoom in without upscaling much.
    train_set = PortraitDataset(train_pairs, size, margin=1.15)
    val_set = PortraitDataset(val_pairs, size)
    augment = augmentation(size).to(device)

    net = build(options.arch)
    if options.init is not None:
        copied, in_file = load_backbone(net, options.arch, options.init)
        print(f"init: copied {copied} of {in_file} tensors from {options.init}")
    model = Segmenter(net, IMAGENET_MEAN, IMAGENET_STD).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    steps_per_epoch = len(_batches(train_set, options.batch_size, True, 0, 0))
    if options.max_steps:
        steps_per_epoch = min(steps_per_epoch, options.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(options.epochs * steps_per_epoch))
    scaler = torch.amp.GradScaler(device.type, enabled=options.amp and device.type == "cuda")

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path, log_path = out / "last.pt", out / "best.pt", out / "metrics.csv"
    start_epoch, best_iou = 0, -1.0
    if options.resume and last_path.is_file():
        state = ckpt.load(last_path)
        if state.arch != options.arch or state.training is None:
            raise ValueError(
                f"{last_path} is a {state.arch} checkpoint without training state; cannot resume {options.arch}"
            )
        model.load_state_dict(state.state_dict)
        optimizer.load_state_dict(state.training["optimizer"])
        scheduler.load_state_dict(state.training["scheduler"])
        scaler.load_state_dict(state.training["scaler"])
        torch.set_rng_state(state.training["rng"])
        start_epoch, best_iou = state.meta["epoch"], state.meta.get("best_val_iou", -1.0)
        print(f"resuming {options.arch} after epoch {start_epoch} (best val IoU {best_iou:.4f})")
    elif not options.resume and log_path.exists():
        log_path.unlink()  # a fresh run starts a fresh log

    params = sum(p.numel() for p in model.parameters())
    name = options.name or out.name  # the name a server or command selects the model by
    config = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()}
    for epoch in range(start_epoch, options.epochs):
        model.train()
        started, total, seen = time.perf_counter(), 0.0, 0
        loader = _batches(train_set, options.batch_size, True, options.seed * 1000 + epoch, options.workers)
        bar = tqdm(
            loader,
            total=steps_per_epoch,
            desc=f"{options.arch} {epoch + 1}/{options.epochs}",
            unit="batch",
            disable=not options.progress,
            leave=False,
        )
        for step, (images, masks) in enumerate(bar):
            if step >= steps_per_epoch:
                break
            x, t = augment(images.to(device).float().div_(255.0), masks.to(device).float())
            with _autocast(device, options.amp):
                logits = model.logits(x)
            loss = segmentation_loss(logits.float(), t)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total += loss.item() * len(x)
            seen += len(x)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        val_loss, val_iou = validate(model, val_set, options.batch_size, device, options.amp)
        row = {
            "epoch": epoch + 1,
            "train_loss": total / max(seen, 1),
            "val_loss": val_loss,
            "val_iou": val_iou,
            "lr": scheduler.get_last_lr()[0],
            "seconds": time.perf_counter() - started,
        }
        _log(log_path, row)
        best_iou = max(best_iou, val_iou)
        meta = {
            "epoch": epoch + 1,
            "val_iou": val_iou,
            "best_val_iou": best_iou,
            "parameters": params,
            "train_images": len(train_set),
            "val_images": len(val_set),
            "options": config,
        }
        state_dict = model.state_dict()
        if val_iou >= best_iou:
            ckpt.save(
                ckpt.Checkpoint(options.arch, size, IMAGENET_MEAN, IMAGENET_STD, state_dict, name, meta), best_path
            )
        training = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": torch.get_rng_state(),
        }
        ckpt.save(
            ckpt.Checkpoint(options.arch, size, IMAGENET_MEAN, IMAGENET_STD, state_dict, name, meta, training),
            last_path,
        )
        if options.progress:
            print(
                f"epoch {epoch + 1}/{options.epochs}: train loss {row['train_loss']:.4f}, val loss {val_loss:.4f}, "
                f"val IoU {val_iou:.4f} ({row['seconds']:.0f} s)",
                flush=True,
            )
    return {
        "arch": options.arch,
        "parameters": params,
        "best_val_iou": best_iou,
        "epochs": options.epochs,
        "best": str(best_path),
        "last": str(last_path),
        "log": str(log_path),
    }


def _log(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
