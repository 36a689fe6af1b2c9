"""PyTorch reference for `cargo xtask bench`: one SimCLR training step (forward, NT-Xent,
backward, SGD with momentum) on the same model, batch and thread count as the Rust side.

Prints one JSON line: {"model", "batch", "threads", "seconds_per_step", "images_per_s"}.
"""
import argparse, json, time
import torch
import torch.nn as nn
import torch.nn.functional as F


def small_cnn(c, w):
    def block(i, o, s):
        return [nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
    return nn.Sequential(*block(c, w, 1), *block(w, 2 * w, 2), *block(2 * w, 4 * w, 2), *block(4 * w, 8 * w, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten()), 8 * w


def resnet18_cifar():
    import torchvision
    m = torchvision.models.resnet18()
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    m.fc = nn.Identity()
    return m, 512


def nt_xent(z0, z1, t):
    n = z0.shape[0]
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    logits = z @ z.T / t
    logits.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, target)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.model == "small-cnn":
        enc, dim = small_cnn(1, 32)
        shape = (a.batch, 1, 28, 28)
    else:
        enc, dim = resnet18_cifar()
        shape = (a.batch, 3, 32, 32)
    head = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(), nn.Linear(dim, 128))
    model = nn.Sequential(enc, head)
    opt = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    x0, x1 = torch.randn(shape), torch.randn(shape)

    def step():
        z = model(torch.cat([x0, x1]))
        loss = nt_xent(z[: a.batch], z[a.batch:], 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    s = (time.perf_counter() - t) / a.steps
    print(json.dumps({"model": a.model, "batch": a.batch, "threads": a.threads,
                      "seconds_per_step": s, "images_per_s": a.batch / s}))


if __name__ == "__main__":
    main()
