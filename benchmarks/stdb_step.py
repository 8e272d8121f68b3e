"""Seconds per STDB training step and peak memory of the spiking VGG5 (CIFAR-10 shapes), against the
reference implementation of Rathi et al. measured on a 2-core CPU (torch 2.3.1, 2 threads).

    python benchmarks/stdb_step.py [--timesteps 20,100] [--batch-size 32] [--steps 3] [--warmup 1]
                                   [--threads 2] [--device auto|cpu|cuda] [--step-after-backward] [--json FILE]

Each configuration (each T) runs in a fresh Python process, so its peak resident memory (VmHWM) is
its own. A step is exactly what `snntc finetune` does per batch (toolchain/finetune.py +
toolchain/training.py): SnnModel forward with Poisson input coding, cross-entropy on the logits,
backward with the Adam update of each parameter as soon as its gradient is ready (toolchain/optim.py;
the "adam" column is then the empty opt.step(); --step-after-backward times the classic order), and the
allocator set as training sets it (toolchain/allocator.py; SNNTC_MALLOC_TUNE=0 leaves it alone).
The conv layers run block of time steps by block (toolchain/neurons/kernels/stack.py) on the compiled neuron kernels
(toolchain/neurons/kernels/native) where a C compiler is available; SNNTC_NATIVE=0 in the environment times the layer-by-layer
torch-op implementation instead.

The network is `models.build_model("vgg5", (3, 32, 32), 10)`: conv 3->64, avg-pool 2, conv 64->128,
dropout 0.2, conv 128->128, avg-pool 2, linear 8192->4096, dropout 0.5, 4096->4096, dropout 0.5,
4096->10, no bias; IF neurons (leak 1, threshold 1, reset by subtraction); STDB surrogate (alpha 0.3,
beta 0.01). Input: random normal images (normalized-CIFAR-like), batch 32.

Timings on 2 cores are only meaningful on an otherwise idle machine: the load average before and after
each run is recorded with it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The reference implementation (Rathi et al.'s code) on this kind of machine: s/step, peak resident MB.
REFERENCE = {20: {"seconds": 5.0, "peak_mb": 3500.0},
             100: {"seconds": 24.7, "peak_mb": 9700.0, "forward": 8.5, "backward": 16.0}}


def vgg5_flops(T: int, B: int) -> dict:
    """Multiply-adds x 2 of the synaptic layers over T*B samples: forward, and backward (input grads + weight
    grads; the first conv needs no input grad)."""
    n = T * B
    layers = {  # name: (forward flops per sample, needs input grad)
        "conv0": (2 * 64 * 32 * 32 * 3 * 9, False),
        "conv2": (2 * 128 * 16 * 16 * 64 * 9, True),
        "conv3": (2 * 128 * 16 * 16 * 128 * 9, True),
        "fc0": (2 * 8192 * 4096, True),
        "fc1": (2 * 4096 * 4096, True),
        "out": (2 * 4096 * 10, True),
    }
    fwd = sum(f for f, _ in layers.values()) * n
    bwd = sum(f * (2 if g else 1) for f, g in layers.values()) * n
    return {"forward_gflop": fwd / 1e9, "backward_gflop": bwd / 1e9, "total_gflop": (fwd + bwd) / 1e9}


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM), MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 2 ** 20


def check_vgg5(net) -> None:
    """The toolchain's vgg5 is the reference network, layer by layer."""
    from toolchain.ir import AvgPool2d, Conv2d, Dropout, Flatten, Linear, Spike
    expected = [(Conv2d, (3, 64)), (Spike, None), (AvgPool2d, 2), (Conv2d, (64, 128)), (Spike, None), (Dropout, 0.2),
                (Conv2d, (128, 128)), (Spike, None), (AvgPool2d, 2), (Flatten, None),
                (Linear, (8192, 4096)), (Spike, None), (Dropout, 0.5), (Linear, (4096, 4096)), (Spike, None),
                (Dropout, 0.5), (Linear, (4096, 10))]
    got = list(net.layers)
    assert len(got) == len(expected), [type(l).__name__ for l in got]
    for layer, (kind, spec) in zip(got, expected):
        assert isinstance(layer, kind), (layer, kind)
        if kind is Conv2d:
            assert (layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding, layer.bias) \
                == spec + (3, 1, 1, False), layer
        elif kind is Linear:
            assert (layer.in_features, layer.out_features, layer.bias) == spec + (False,), layer
        elif kind is AvgPool2d:
            assert layer.kernel_size == spec, layer
        elif kind is Dropout:
            assert layer.p == spec, layer


def training_step(model, opt, x, y, enc, T: int, sync=lambda: None) -> tuple:
    """One step as `snntc finetune` runs it (toolchain/training.py `train`): zero_grad(set_to_none), SnnModel
    forward, cross-entropy on the logits, backward (which runs the Adam update of each parameter as soon as its
    gradient is ready when the optimizer was made with step_in_backward), opt.step(). Returns ({seconds, forward,
    backward, optimizer, cpu_seconds, sys_seconds, page_faults}, the model's output)."""
    import resource

    import torch.nn.functional as F

    sync()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = time.process_time()
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    out = model(x, T, enc)
    loss = F.cross_entropy(out.logits, y)
    sync()
    t1 = time.perf_counter()
    loss.backward()
    sync()
    t2 = time.perf_counter()
    opt.step()
    sync()
    t3 = time.perf_counter()
    c3 = time.process_time()
    r3 = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": t3 - t0, "forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2,
            "cpu_seconds": c3 - c0, "sys_seconds": r3.ru_stime - r0.ru_stime,
            "page_faults": r3.ru_minflt - r0.ru_minflt}, out    # faults: fresh pages the step touched


def spike_rates(out, B: int, T: int) -> dict:
    """Spikes per neuron and step of each spiking layer of one forward pass."""
    return {k: round(float(c.sum()) / (B * T * out.neurons[k]), 4) for k, c in out.spike_counts.items()}


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def worker(args) -> dict:
    import torch

    from models import build_model
    from toolchain.coding import InputEncoder
    from toolchain.snn import SnnConfig, SnnModel
    from toolchain.neurons.kernels import native
    from toolchain.training.allocator import tune_for_training
    from toolchain.training import TrainConfig, make_optimizer, resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    malloc_tuned = tune_for_training() if device.type == "cpu" else False    # as toolchain.training.train does
    T, B = args.timesteps_one, args.batch_size
    torch.manual_seed(0)
    net = build_model("vgg5", (3, 32, 32), 10)
    check_vgg5(net)
    cfg = SnnConfig(thresholds={s.name: 1.0 for s in net.spiking_layers}, neuron="if", leak=1.0, coding="poisson",
                    timesteps=T, surrogate=_surrogate(args.surrogate))
    model = SnnModel(net, cfg).to(device).train()
    # as toolchain.training.train: Adam over the trainable parameters, updated in the backward pass as each
    # gradient is ready (--step-after-backward: the classic opt.step()), zero_grad(set_to_none), loss as in finetune
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], TrainConfig(optimizer="adam", lr=1e-4),
                         step_in_backward=not args.step_after_backward, device=device)
    enc = InputEncoder("poisson", seed=1)
    x = torch.randn(B, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (B,), device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    rec = {key: [] for key in ("seconds", "forward", "backward", "optimizer", "cpu_seconds", "sys_seconds",
                               "page_faults")}
    rates = None
    for i in range(args.warmup + args.steps):
        timing, out = training_step(model, opt, x, y, enc, T, sync)
        if rates is None:
            rates = spike_rates(out, B, T)
        del out
        if i >= args.warmup:
            for key, value in timing.items():
                rec[key].append(value)
    times = rec["seconds"]

    res = {"timesteps": T, "batch_size": B, "threads": args.threads, "device": str(device), "surrogate": args.surrogate,
           **{key: median(values) for key, values in rec.items()},
           "native_kernels": native.library() is not None,
           "openmp_kernels": native.torch_openmp() is not None, "malloc_tuned": malloc_tuned, "all_seconds": times, "peak_mb": peak_rss_mb(), "spike_rates": rates,
           "torch": torch.__version__}
    if device.type == "cuda":
        res["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return res


def _surrogate(name: str) -> dict:
    """The reference's STDB surrogate (alpha 0.3, beta 0.01), or another one with its defaults."""
    return {"name": "stdb", "alpha": 0.3, "beta": 0.01} if name == "stdb" else {"name": name}


def _fmt(x) -> str:
    return "?" if x is None else f"{x:.1f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--timesteps", default="20,100", help="comma-separated T values (default 20,100)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="timed steps per T (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu (the reference's setting), cuda or auto")
    p.add_argument("--step-after-backward", action="store_true",
                   help="update after the backward pass (opt.step()), not in it as `snntc finetune` does")
    p.add_argument("--surrogate", default="stdb",
                   help="spike function's surrogate gradient (default stdb, the reference's; e.g. linear, arctan: "
                        "these keep x = v / theta - 1, 4 bytes per neuron and step, for the backward)")
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--timesteps-one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0

    results = []
    for T in [int(t) for t in args.timesteps.split(",") if t.strip()]:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--timesteps-one", str(T),
               "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--threads", str(args.threads), "--device", args.device, "--surrogate", args.surrogate] \
            + (["--step-after-backward"] if args.step_after_backward else [])
        load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        proc = subprocess.run(cmd, capture_output=True, text=True)
        load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(f"T={T}: the worker failed (exit {proc.returncode})")
        res = json.loads(lines[-1][len("RESULT "):])
        res["load_average_1min"] = [load_before, load_after]       # other work on the machine skews the timings
        res["flops"] = vgg5_flops(T, args.batch_size)
        res["gflops_per_s"] = res["flops"]["total_gflop"] / res["seconds"]
        ref = REFERENCE.get(T)
        if ref and args.batch_size == 32:
            res["reference"] = ref
            res["speedup"] = ref["seconds"] / res["seconds"]
            res["memory_ratio"] = res["peak_mb"] / ref["peak_mb"]
        results.append(res)
        print(f"T={T:4d} B={args.batch_size}: {res['seconds']:.2f} s/step (fwd {res['forward']:.2f}, bwd "
              f"{res['backward']:.2f}, adam {res['optimizer']:.2f}; cpu {res['cpu_seconds']:.2f}, of which kernel "
              f"{res['sys_seconds']:.2f} for {res['page_faults'] / 1e3:.0f}k page faults; "
              f"{'compiled' if res['native_kernels'] else 'torch-op'} neurons; "
              f"malloc {'tuned' if res['malloc_tuned'] else 'default'}; {res['surrogate']} surrogate; "
              f"runs {', '.join(f'{t:.2f}' for t in res['all_seconds'])}; "
              f"load {_fmt(load_before)}->{_fmt(load_after)}), peak {res['peak_mb']:.0f} MB, "
              f"{res['gflops_per_s']:.0f} GFLOP/s of {res['flops']['total_gflop']:.0f} GFLOP"
              + (f"; vs reference {ref['seconds']} s / {ref['peak_mb']:.0f} MB: {res['speedup']:.2f}x faster, "
                 f"{res['memory_ratio']:.2f} of the memory" if "reference" in res else ""), flush=True)
    write_results(args.json, results)
    return 0


def write_results(path, results) -> None:
    """The results and the command line, as JSON, to `path` (nothing if None)."""
    if path:
        with open(path, "w") as f:
            json.dump({"results": results, "argv": sys.argv[1:]}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
