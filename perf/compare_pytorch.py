#!/usr/bin/env python3
"""The same ResNet-20 training step in PyTorch and in ghostnn, on one machine, side by side.

For each norm (bn, gbn:N, gni:N) both engines train ResNet-20 (CIFAR layout, 3x3 stem, 1x1
projection shortcuts, global average pool, 10 classes) on one synthetic batch already on the
device, with SGD (lr 0.1, momentum 0.9, nesterov, weight decay 2e-4) and softmax cross-entropy,
same batch and thread count. PyTorch's gbn and gni are the computations of the paper's own
modules (GhostBatchNorm2d; BatchNorm2d(affine=False) -> GhostNoiseInjectorR -> gain/bias),
restated below op for op, so their cost is what a user of the paper's code pays.

Each figure is the median of --steps single-step timings after --warmup steps (the device is
synchronized after every step). ghostnn is timed by perf/bench_train_step (built with
`make build`), run once per norm; the engines alternate norm by norm so machine noise hits both.
With --rounds R the whole alternation runs R times and each figure is the median of its R
medians (a shared machine drifts over minutes; rounds spread that drift over both engines).

Without PyTorch it creates perf/.venv and installs PyTorch there from PyPI, then reruns itself.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venv"
IN_VENV_MARK = "GHOSTNN_COMPARE_PYTORCH_VENV"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where both engines run")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="CPU threads for both engines (intra-op threads in PyTorch)")
    p.add_argument("--batch", type=int, default=256, help="batch size")
    p.add_argument("--norms", default="bn,gbn:16,gni:16",
                   help="comma-separated norm specs: bn, gbn:N, gni:N")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per engine and norm (default 7 on the CPU, 50 on the GPU)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps first (default 2 on the CPU, 10 on the GPU)")
    p.add_argument("--conv-math", choices=["fp32", "tf32", "bf16"], default="fp32",
                   help="convolutions in both engines: plain fp32, TF32 tensor cores (GPU only; "
                        "PyTorch's own default, torch.backends.cudnn.allow_tf32; ghostnn --tf32), "
                        "or bf16 mixed precision (PyTorch: torch.autocast to bfloat16 around the "
                        "forward and loss; ghostnn --conv-math=bf16: bf16 at each convolution, "
                        "on the CPU where it has AVX-512 BF16 or AMX)")
    p.add_argument("--channels-last", action="store_true",
                   help="GPU activations channels last in both engines (PyTorch: the model and "
                        "batch in torch.channels_last; ghostnn: --gpu-layouts=nhwc), the layout "
                        "cuDNN's tensor-core convolutions compute in")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat the engine-by-engine alternation this many times; report medians")
    p.add_argument("--json", metavar="FILE", help="also write the results to FILE as a JSON list")
    p.add_argument("--ghostnn-bench", type=Path, default=ROOT / "build" / "perf" / "bench_train_step",
                   help="the ghostnn training-step benchmark binary")
    a = p.parse_args()
    if a.threads < 1:
        p.error(f"--threads must be at least 1, got {a.threads}")
    if a.batch < 2:
        p.error(f"--batch must be at least 2 (batch statistics), got {a.batch}")
    a.norms = [n.strip() for n in a.norms.split(",") if n.strip()]
    for n in a.norms:
        kind, _, size = n.partition(":")
        if kind == "bn" and not size:
            continue
        if kind in ("gbn", "gni") and size.isdigit() and int(size) >= 1:
            continue
        p.error(f"--norms: '{n}' is not one of bn, gbn:N, gni:N (N a positive integer)")
    gpu = a.device == "cuda"
    if a.channels_last and not gpu:
        p.error("--channels-last sets the GPU activation layout; use it with --device cuda")
    a.steps = a.steps if a.steps is not None else (50 if gpu else 7)
    a.warmup = a.warmup if a.warmup is not None else (10 if gpu else 2)
    if a.steps < 1 or a.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    if a.rounds < 1:
        p.error(f"--rounds must be at least 1, got {a.rounds}")
    return a


def ensure_torch():
    """Imports torch, or installs it into perf/.venv and reruns this script with that Python."""
    try:
        import torch  # noqa: F401
        return
    except ImportError:
        pass
    if os.environ.get(IN_VENV_MARK):
        sys.exit(f"compare_pytorch: PyTorch is still missing in {VENV} after installing it")
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"compare_pytorch: creating {VENV}", file=sys.stderr)
        venv.create(VENV, with_pip=True)
    if subprocess.run([py, "-c", "import torch"], capture_output=True).returncode != 0:
        print("compare_pytorch: installing PyTorch from PyPI into it (several GB, minutes)",
              file=sys.stderr)
        subprocess.run([py, "-m", "pip", "install", "--quiet", "torch", "numpy"], check=True)
    env = dict(os.environ, **{IN_VENV_MARK: "1"})
    os.execve(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]], env)


# --- the PyTorch side ----------------------------------------------------------------------------

def torch_modules():
    import torch
    import torch.nn as nn

    class GhostBatchNorm2d(nn.Module):
        """The paper's GBN: batch folded to [G, N, C, H, W], per-group mean and E[x^2]-mean^2,
        running statistics from the average of group statistics, in-place gain and bias."""

        def __init__(self, channels, ghost, eps=1e-5, momentum=0.1):
            super().__init__()
            self.ghost, self.eps, self.momentum = ghost, eps, momentum
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
            self.register_buffer("running_mean", torch.zeros(channels))
            self.register_buffer("running_var", torch.ones(channels))

        def forward(self, x):
            if self.training:
                g = x.view(-1, self.ghost, *x.shape[1:])
                mu = g.mean(dim=(1, 3, 4), keepdim=True)
                var = (g * g).mean(dim=(1, 3, 4), keepdim=True) - mu * mu
                x = ((g - mu) / torch.sqrt(var + self.eps)).view(-1, *x.shape[1:])
                with torch.no_grad():
                    m = self.momentum
                    self.running_mean.copy_(self.running_mean * (1 - m) + m * mu.mean(0).flatten())
                    self.running_var.copy_(self.running_var * (1 - m) + m * var.mean(0).flatten())
            else:
                x = (x - self.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
                    self.running_var.view(1, -1, 1, 1) + self.eps)
            x *= self.weight.view(1, -1, 1, 1)
            x += self.bias.view(1, -1, 1, 1)
            return x

    class GhostNoiseInjectorR(nn.Module):
        """The paper's GNI with replacement: per-sample moments in fp32, N indices per sample drawn
        with torch.randint (on the host, as the paper's code does), ghost moments by gather,
        shift and scale without gradient."""

        def __init__(self, ghost, eps=1e-3):
            super().__init__()
            self.ghost, self.eps = ghost, eps

        def forward(self, x):
            if not self.training:
                return x
            with torch.no_grad():
                idx = torch.randint(x.shape[0], (x.shape[0], self.ghost))
                flat = x.float().reshape(*x.shape[:2], -1)
                m1 = flat.mean(dim=2)
                m2 = (flat ** 2).mean(dim=2)
                full_mean = m1.mean(dim=0)
                full_var = m2.mean(dim=0) - full_mean ** 2
                g1 = m1[idx].mean(dim=1)
                g2 = m2[idx].mean(dim=1)
                gvar = g2 - g1 ** 2
                shift = (g1 - full_mean.view(1, -1)).to(x.dtype)
                scale = torch.sqrt((gvar + self.eps) / (full_var.view(1, -1) + self.eps)).to(x.dtype)
            x = x - shift.view(*x.shape[:2], 1, 1)
            return x / scale.view(*x.shape[:2], 1, 1)

    class Affine(nn.Module):
        """The paper's per-channel gain and bias after GNI (in place, as there)."""

        def __init__(self, channels):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))

        def forward(self, x):
            x *= self.weight.view(1, -1, 1, 1)
            x += self.bias.view(1, -1, 1, 1)
            return x

    def norm(spec, c):
        kind, _, size = spec.partition(":")
        if kind == "bn":
            return nn.BatchNorm2d(c)
        if kind == "gbn":
            return GhostBatchNorm2d(c, int(size))
        return nn.Sequential(nn.BatchNorm2d(c, affine=False), GhostNoiseInjectorR(int(size)),
                             Affine(c))

    class Block(nn.Module):
        def __init__(self, spec, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.n1 = norm(spec, cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.n2 = norm(spec, cout)
            self.short = None
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                           norm(spec, cout))

        def forward(self, x):
            out = self.n2(self.conv2(torch.relu(self.n1(self.conv1(x)))))
            return torch.relu(out + (x if self.short is None else self.short(x)))

    def resnet20(spec, classes=10):
        layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), norm(spec, 16), nn.ReLU()]
        cin = 16
        for stage, width in enumerate((16, 32, 64)):
            for b in range(3):
                layers.append(Block(spec, cin, width, 2 if stage > 0 and b == 0 else 1))
                cin = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
        model = nn.Sequential(*layers)
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        return model

    return resnet20


def pytorch_step(args, spec):
    import torch
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.allow_tf32 = args.conv_math == "tf32"
    torch.manual_seed(0)
    dev = torch.device(args.device)
    model = torch_modules()(spec).to(dev).train()
    x = torch.randn(args.batch, 3, 32, 32, device=dev)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                          weight_decay=2e-4)
    y = torch.randint(0, 10, (args.batch,), device=dev)
    loss_fn = torch.nn.CrossEntropyLoss()
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.conv_math == "bf16"):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        sync()

    for _ in range(args.warmup):
        step()
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None
    return args.batch / statistics.median(times), peak


# --- the ghostnn side ----------------------------------------------------------------------------

def ghostnn_step(args, spec):
    exe = args.ghostnn_bench
    if not exe.exists():
        sys.exit(f"compare_pytorch: {exe} not found; build it first (make build)")
    cmd = [str(exe), "--models=resnet20", f"--norms={spec}", f"--devices={args.device}",
           f"--threads={args.threads}", f"--batch={args.batch}", f"--steps={args.steps}",
           f"--warmup={args.warmup}", "--benchmark_format=json"]
    if args.conv_math != "fp32":
        cmd.append(f"--conv-math={args.conv_math}")
    if args.channels_last:
        cmd.append("--gpu-layouts=nhwc")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"compare_pytorch: {' '.join(cmd)} failed:\n{r.stderr}")
    rows = json.loads(r.stdout)["benchmarks"]
    if len(rows) != 1:
        sys.exit(f"compare_pytorch: expected one result from {exe}, got {len(rows)}")
    return rows[0]["images_per_s"], (rows[0]["peak_MiB"] if args.device == "cuda" else None)


def main():
    args = parse_args()
    ensure_torch()
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("compare_pytorch: --device cuda, but PyTorch sees no CUDA device")
    print(f"ResNet-20 training step, batch {args.batch}, {args.device}, {args.threads} threads, "
          f"{args.conv_math} convolutions{', channels last' if args.channels_last else ''}, "
          f"median of {args.steps} steps"
          f"{f', median of {args.rounds} rounds' if args.rounds > 1 else ''}; "
          f"PyTorch {torch.__version__}", file=sys.stderr)
    runs = {}  # (engine, norm) -> [(img/s, peak MiB)] per round
    for r in range(args.rounds):
        for spec in args.norms:
            for engine, fn in (("ghostnn", ghostnn_step), ("pytorch", pytorch_step)):
                rate, peak = fn(args, spec)
                label = f"round {r + 1}: " if args.rounds > 1 else ""
                print(f"  {label}{engine:8} {spec:8} {rate:10.1f} img/s", file=sys.stderr)
                runs.setdefault((engine, spec), []).append((rate, peak))
    results = []
    for (engine, spec), got in runs.items():
        rates = [g[0] for g in got]
        peaks = [g[1] for g in got if g[1] is not None]
        results.append({"engine": engine, "norm": spec, "device": args.device,
                        "threads": args.threads, "batch": args.batch,
                        "images_per_s": statistics.median(rates), "conv_math": args.conv_math,
                        "channels_last": args.channels_last,
                        "peak_memory_mib": max(peaks) if peaks else None, "model": "resnet20",
                        "steps": args.steps, "rounds": args.rounds,
                        "images_per_s_per_round": rates})

    def rate(engine, spec):
        return next((r["images_per_s"] for r in results
                     if r["engine"] == engine and r["norm"] == spec), None)

    mem = args.device == "cuda"
    head = f"{'norm':10} {'ghostnn img/s':>14} {'pytorch img/s':>14} {'ghostnn/pytorch':>16}"
    print(head + (f" {'ghostnn MiB':>12} {'pytorch MiB':>12}" if mem else ""))
    for spec in args.norms:
        g, p = rate("ghostnn", spec), rate("pytorch", spec)
        line = f"{spec:10} {g:14.1f} {p:14.1f} {g / p:15.2f}x"
        if mem:
            pk = {r["engine"]: r["peak_memory_mib"] for r in results if r["norm"] == spec}
            line += f" {pk['ghostnn']:12.1f} {pk['pytorch']:12.1f}"
        print(line)
    noisy = [n for n in args.norms if n.startswith("gni:")]
    if "bn" in args.norms:
        for n in noisy:
            print(f"ghostnn {n} / PyTorch bn throughput: "
                  f"{rate('ghostnn', n) / rate('pytorch', 'bn'):.2f}x")
            print(f"ghostnn {n} step time / ghostnn bn step time: "
                  f"{rate('ghostnn', 'bn') / rate('ghostnn', n):.3f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
