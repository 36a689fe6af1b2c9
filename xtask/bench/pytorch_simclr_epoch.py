"""PyTorch reference for `cargo xtask bench --epoch`: SimCLR on Fashion-MNIST end to end,
data pipeline included, as a torchvision user would write it.

- data: the same IDX file the Rust loader reads (raw or .gz), held as uint8 in memory; a
  `Dataset` turns each image into two views with torchvision transforms (v1, on float
  tensors in [0, 1], the fastest torchvision path we measured on 28x28 images) mirroring
  selfsup's `SimclrViews` for Fashion-MNIST: RandomResizedCrop(28, scale=(0.2, 1),
  ratio=(3/4, 4/3)), RandomHorizontalFlip(0.5), RandomApply([ColorJitter(0.4, 0.4, 0.4,
  0.1)], p=0.8) (saturation and hue are no-ops on one channel, on both sides),
  RandomGrayscale(0.2) (a no-op on one channel), no blur, no solarisation, then
  Normalize(0.2860, 0.3530);
- `DataLoader(batch_size, shuffle=True, drop_last=True, num_workers=--workers)`;
- model, loss and optimizer as `pytorch_simclr_step.py` (small-cnn w = 32, projection
  head Linear-BN-ReLU-Linear to 128, NT-Xent), with the settings of selfsup's trainer:
  one forward pass per view, temperature 0.2, SGD lr 0.06 with momentum 0.9 on a cosine
  schedule, weight decay 5e-4 on weights only (not on BN parameters or biases), and the
  loss read back every step.

Timed from creating the DataLoader iterator (worker start included) to the last
optimizer step of `--steps` steps. Prints one JSON line: {"steps", "batch", "threads",
"workers", "seconds", "images_per_s", "final_loss"}.
"""
import argparse, gzip, json, math, os, struct, sys, time
import numpy as np
import torch
import torch.nn as nn
from torchvision import transforms as T

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_simclr_step import nt_xent, small_cnn  # noqa: E402

MEAN, STD = 0.2860, 0.3530  # selfsup_data::dataset::normalization("fashion-mnist")


def read_idx_images(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":  # gzip magic, as selfsup_data::idx::read_maybe_gz checks
        data = gzip.decompress(data)
    magic, n, h, w = struct.unpack(">IIII", data[:16])
    if magic != 2051:
        raise SystemExit(f"{path}: not an IDX image file (magic {magic})")
    return torch.from_numpy(np.frombuffer(data, np.uint8, n * h * w, 16).reshape(n, 1, h, w).copy())


class TwoViews(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = images
        size = images.shape[-1]
        self.transform = T.Compose([
            T.RandomResizedCrop(size, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)),
            T.RandomHorizontalFlip(0.5),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(0.2),
            T.Normalize((MEAN,), (STD,)),
        ])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i].float().div_(255)
        return self.transform(img), self.transform(img)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", required=True, help="train-images-idx3-ubyte[.gz]")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = TwoViews(read_idx_images(a.images))
    per_epoch = len(data) // a.batch
    if not 1 <= a.steps <= per_epoch:
        raise SystemExit(f"--steps {a.steps} is not in 1..={per_epoch} (one epoch)")
    enc, dim = small_cnn(1, 32)
    head = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(), nn.Linear(dim, 128))
    model = nn.Sequential(enc, head)
    decay = [q for q in model.parameters() if q.ndim > 1]
    no_decay = [q for q in model.parameters() if q.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                           {"params": no_decay, "weight_decay": 0.0}], lr=0.06, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / a.steps)))
    loader = torch.utils.data.DataLoader(data, batch_size=a.batch, shuffle=True, drop_last=True,
                                         num_workers=a.workers)
    model.train()
    t = time.perf_counter()
    batches = iter(loader)  # kept alive until the clock stops: worker shutdown is not timed
    step, loss_value = 0, float("nan")
    for x0, x1 in batches:
        loss = nt_xent(model(x0), model(x1), 0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        loss_value = loss.item()
        step += 1
        if step == a.steps:
            break
    s = time.perf_counter() - t
    del batches
    print(json.dumps({"steps": step, "batch": a.batch, "threads": a.threads, "workers": a.workers,
                      "seconds": s, "images_per_s": step * a.batch / s, "final_loss": loss_value}))


if __name__ == "__main__":
    main()
