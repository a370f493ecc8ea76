"""The original study's pipeline as a baseline, leave one tile out on the six contest tiles.

As in the 2020 MathorCup entry (see ``shared/notes/original-study.md``): each whole 600 x 500 tile is letterboxed
to 480 x 480 (resized to 480 x 400 keeping its aspect, black bars of 40 rows above and below; the label likewise,
bars = background) and scaled to 0-1 (no standardisation); three 2-class models are trained from scratch with
cross-entropy + Dice, Adam (lr 1e-3) and a StepLR (gamma 0.9) on the study's augmentations (90/180/270 degree
rotations, horizontal flip, random gamma, 3 x 3 box blur, 200 white salt pixels); each predicts the held-out tile,
the three masks are fused by a per-pixel majority vote, and the vote is un-letterboxed (bars cut, resized back to
600 x 500 by nearest neighbour) and scored with the same metrics as ``bench.accuracy``.

Reduced to fit a 2-core CPU (the defaults; every one is an option):

* widths: FCN-1s SE-ResNet50 and SE-ResNet101 at width 8 (the study: 64, i.e. 1/8 of the channels), Attention U-Net at
  width 8 (channels 8..128 instead of 64..1024);
* training: ``--steps`` optimizer steps of ``--batch-size`` images drawn with random augmentations, instead of
  100 epochs over 2550 offline-augmented images at batch 16-24; the StepLR steps every ``--steps // 10`` steps;
* the last weights are used (the study kept the best epoch on 450 augmented copies of its own training tiles).

Examples::

    nice -n 10 .venv/bin/python -m bench.study_baseline                 # 6 folds x 3 models
    .venv/bin/python -m bench.study_baseline --folds 1 --steps 2 --out runs/bench/tmp/study_smoke.json   # smoke
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from bench.accuracy import read_tile, score, summarise
from bench.common import CONTEST_TILES, RUNS, machine_facts, write_json

SIZE = 480
ARCHS = ("fcn_se_resnet50", "fcn_se_resnet101", "attention_unet")


def letterbox(image: np.ndarray, label: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, tuple]:
    """(3, H, W) raw 0-255 image -> (3, 480, 480) float32 0-1 with bars; label -> (480, 480) uint8; and the box
    (top, left, height, width) of the content inside the 480 x 480 frame."""
    import cv2

    _, h, w = image.shape
    scale = SIZE / max(h, w)
    nh, nw = round(h * scale), round(w * scale)
    top, left = (SIZE - nh) // 2, (SIZE - nw) // 2
    img = np.zeros((3, SIZE, SIZE), np.float32)
    hwc = np.ascontiguousarray(np.transpose(image.astype(np.float32) / 255.0, (1, 2, 0)))
    img[:, top:top + nh, left:left + nw] = np.transpose(cv2.resize(hwc, (nw, nh), interpolation=cv2.INTER_LINEAR),
                                                       (2, 0, 1))
    lab = None
    if label is not None:
        lab = np.zeros((SIZE, SIZE), np.uint8)
        lab[top:top + nh, left:left + nw] = cv2.resize(label, (nw, nh), interpolation=cv2.INTER_NEAREST)
    return img, lab, (top, left, nh, nw)


def unletterbox(mask: np.ndarray, box: tuple, shape: tuple[int, int]) -> np.ndarray:
    """(480, 480) mask -> the content box resized back to ``shape`` (H, W) by nearest neighbour."""
    import cv2

    top, left, nh, nw = box
    return cv2.resize(mask[top:top + nh, left:left + nw].astype(np.uint8), (shape[1], shape[0]),
                      interpolation=cv2.INTER_NEAREST)


def augment(img: np.ndarray, lab: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The study's augmentations, drawn at random: rotation by k * 90 degrees, horizontal flip, gamma, 3 x 3 box
    blur, 200 white salt pixels."""
    import cv2

    k = int(rng.integers(4))
    img, lab = np.rot90(img, k, axes=(1, 2)), np.rot90(lab, k)
    if rng.random() < 0.5:
        img, lab = img[:, :, ::-1], lab[:, ::-1]
    img = np.ascontiguousarray(img)
    if rng.random() < 0.5:
        img = np.power(img, rng.uniform(0.6, 1.6)).astype(np.float32)
    if rng.random() < 0.25:
        img = np.stack([cv2.blur(b, (3, 3)) for b in img])
    if rng.random() < 0.25:
        ys, xs = rng.integers(SIZE, size=(2, 200))
        img[:, ys, xs] = 1.0
    return img, np.ascontiguousarray(lab)


def train_one(arch: str, width: int, images: np.ndarray, labels: np.ndarray, steps: int, batch: int, seed: int,
              device: str = "cpu"):
    """Train ``arch`` from scratch on letterboxed (N, 3, 480, 480) images / (N, 480, 480) labels; returns the model
    and its last loss."""
    import torch

    from training.losses import SegmentationLoss
    from training.models import build_model

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(arch, 3, 2, width=width).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(steps // 10, 1), gamma=0.9)
    loss_fn = SegmentationLoss(ce_weight=1.0, dice_weight=1.0)
    model.train()
    for _ in range(steps):
        pick = rng.integers(len(images), size=batch)
        pairs = [augment(images[i], labels[i], rng) for i in pick]
        x = torch.from_numpy(np.stack([p[0] for p in pairs])).to(device)
        y = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64)).to(device)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval(), float(loss.item())


def predict(model, img: np.ndarray) -> np.ndarray:
    """(3, 480, 480) -> (480, 480) bool: argmax of the two classes."""
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        return model(torch.from_numpy(img[None]).to(device)).argmax(1)[0].cpu().numpy().astype(bool)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.study_baseline", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--folds", type=int, nargs="+", default=None,
                   help="fold numbers 1..6 = held-out Data1, 2, 4, 5, 7, 8 (the order of runs/cv)")
    p.add_argument("--widths", type=int, nargs=3, default=[8, 8, 8],
                   help="widths of fcn_se_resnet50, fcn_se_resnet101, attention_unet (the study: 64 64 64)")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps per model")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = CUDA when usable (the study's full recipe: --widths 64 64 64 --steps 12000 "
                        "--batch-size 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RUNS / "study_baseline.json", help="result JSON")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    tiles = {name: read_tile(name) for name in CONTEST_TILES}
    boxed = {name: letterbox(img, lab) for name, (img, lab) in tiles.items()}
    folds = args.folds or list(range(1, len(CONTEST_TILES) + 1))
    result = {"benchmark": "study_baseline", "command": "python -m bench.study_baseline " + " ".join(argv or
                                                                                                       sys.argv[1:]),
              "machine": machine_facts(), "widths": dict(zip(ARCHS, args.widths, strict=True)), "steps": args.steps,
              "batch_size": args.batch_size, "size": SIZE, "device": device, "rows": [], "training": []}
    for k in folds:
        held = CONTEST_TILES[k - 1]
        train = [n for n in CONTEST_TILES if n != held]
        images = np.stack([boxed[n][0] for n in train])
        labels = np.stack([np.where(boxed[n][1] == 255, 0, boxed[n][1]) for n in train])
        img, _, box = boxed[held]
        label = tiles[held][1]
        masks = []
        for arch, width in zip(ARCHS, args.widths, strict=True):
            t0 = time.perf_counter()
            model, last_loss = train_one(arch, width, images, labels, args.steps, args.batch_size, args.seed + k,
                                         device)
            seconds = time.perf_counter() - t0
            result["training"].append({"fold": k, "model": arch, "width": width, "seconds": seconds,
                                       "last_loss": last_loss})
            mask = predict(model, img)
            masks.append(mask)
            row = {"fold": k, "raster": held, "model": f"study {arch} w{width}", "tta": False,
                   **score(unletterbox(mask, box, label.shape).astype(bool), label)}
            result["rows"].append(row)
            print(f"fold {k} ({held}) {arch} w{width}: {seconds:.0f} s training, loss {last_loss:.3f}, "
                  f"IoU {row['iou']:.4f}", flush=True)
        vote = np.sum(masks, axis=0) >= 2
        row = {"fold": k, "raster": held, "model": "study majority vote", "tta": False,
               **score(unletterbox(vote, box, label.shape).astype(bool), label)}
        result["rows"].append(row)
        print(f"fold {k} ({held}) majority vote: IoU {row['iou']:.4f}, F1 {row['f1']:.4f}, boundary F1 "
              f"{row['boundary_f1']:.4f}, ratio error {row['ratio_error']:+.4f}", flush=True)
        result["summary"] = summarise(result["rows"])
        write_json(args.out, result)
    for s in result["summary"]:
        print(f"mean {s['model']}: IoU {s['iou']:.4f}, F1 {s['f1']:.4f}, boundary F1 {s['boundary_f1']:.4f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
