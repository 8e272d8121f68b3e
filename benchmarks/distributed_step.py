"""Seconds per data-parallel STDB training step: 1 process against N processes (torch.distributed, gloo on the CPU,
NCCL on GPUs), the same global batch, and the toolchain's gradient reduction against DistributedDataParallel.

    python benchmarks/distributed_step.py [--processes 1,2] [--modes sync,ddp] [--model vgg5] [--timesteps 10]
                                          [--batch-size 32] [--steps 3] [--warmup 1] [--repeats 1]
                                          [--one-process-threads all,1] [--device cpu|cuda] [--json FILE]

Each configuration runs as its own job (one process: a plain Python process; N: a torchrun job of N processes on
this machine), `--repeats` times, interleaved (1, N, 1, N, ...) so that the sides see the same load. A step is what
`snntc finetune` does per batch under torchrun (toolchain/training/loop.py `_epochs`): each process takes its rows
of the global batch (toolchain.sharding: the Poisson input drawn for the global batch and sliced), SnnModel forward,
cross-entropy times its share of the batch, backward, and the update:

- `sync` (the toolchain's, toolchain.training.distributed.GradientSync): each parameter's gradient all-reduced
  asynchronously as soon as the backward pass has accumulated it, and the Adam update of that parameter run during
  the backward pass once its reduction has finished; in one process the update in the backward pass as each
  gradient is ready (what `snntc finetune` does);
- `ddp`: torch's DistributedDataParallel (25 MB buckets, reductions overlapping the backward pass) and the Adam
  update after the backward pass (opt.step()); in one process the plain model and opt.step().

The time of a step is the slowest process's (each process times its step between two barriers). Threads: cores /
processes per process on the CPU (as `snntc ... --nproc N`); the one-process job runs once per entry of
`--one-process-threads` (default: all cores, as `snntc` runs, and 1: the same threads per process as each of the N
processes, which separates what data parallelism gains from what fewer OpenMP threads per process gain). The network: VGG5 on CIFAR-10 shapes (benchmarks/
stdb_step.py; `--model` another registered network, at the input it suits), IF neurons, STDB surrogate,
random normal images. The load average before and after each job is
recorded: on a machine whose cores other work shares, no process gets its cores' worth and N processes cannot be
faster than one.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def _setup(args):
    """The model, its optimizer and the update's form for `args.mode`, and the global batch."""
    import torch

    from toolchain.ir.models import MODELS, build_model
    from toolchain.coding import InputEncoder
    from toolchain.snn import SnnConfig, SnnModel
    from toolchain.training import TrainConfig, distributed, make_optimizer, resolve_device

    rank, size = distributed.world()
    device = resolve_device(args.device)
    if size == 1 and device.type == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count() or 1)      # default as configure_threads: every core
    torch.manual_seed(0)
    shape = MODELS.get(args.model).input_shape                 # vgg5: CIFAR-10's 3x32x32
    net = build_model(args.model, shape, 10)
    cfg = SnnConfig(thresholds={s.name: 1.0 for s in net.spiking_layers}, neuron="if", leak=1.0, coding="poisson",
                    timesteps=args.timesteps, surrogate={"name": "stdb", "alpha": 0.3, "beta": 0.01})
    model = SnnModel(net, cfg).to(device).train()
    distributed.broadcast_module(model)
    params = [p for p in model.parameters() if p.requires_grad]
    in_backward = args.mode == "sync"
    opt = make_optimizer(params, TrainConfig(optimizer="adam", lr=1e-4), step_in_backward=in_backward and size == 1,
                         device=device)
    sync, forward = None, model
    if size > 1 and args.mode == "sync":
        sync = distributed.GradientSync(params, getattr(opt, "update_param", None))   # torch's Adam on CUDA: opt.step()
    elif size > 1:
        forward = torch.nn.parallel.DistributedDataParallel(model)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((args.batch_size,) + tuple(shape), generator=g)
    y = torch.randint(0, 10, (args.batch_size,), generator=g)
    return model, forward, opt, sync, x, y, InputEncoder("poisson", seed=1), device


def worker(args) -> dict:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from toolchain import sharding
    from toolchain.training import distributed
    from toolchain.training.allocator import training_allocator

    rank, size = distributed.world()
    model, forward, opt, sync, x, y, enc, device = _setup(args)
    shard = distributed.batch_shard(args.batch_size)
    rows = slice(None) if shard is None else slice(shard.start, shard.stop)
    xb, yb = x[rows].to(device), y[rows].to(device)
    share = distributed.loss_share(shard)
    ddp = args.mode == "ddp" and size > 1

    def barrier():
        if device.type == "cuda":
            torch.cuda.synchronize()
        if size > 1:
            dist.barrier()

    times = []
    with training_allocator(device.type == "cpu"):
        for i in range(args.warmup + args.steps):
            barrier()
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with sharding.shard_of_batch(shard):
                loss = F.cross_entropy(forward(xb, args.timesteps, enc).logits, yb)
            # DDP averages the processes' gradients: its loss is each process's mean (equal shares)
            (loss if share is None or ddp else loss * share).backward()
            if sync is not None:
                sync.wait()
            opt.step()
            barrier()
            if i >= args.warmup:
                times.append(distributed.all_max(time.perf_counter() - t0))
    return {"processes": size, "mode": args.mode, "model": args.model, "timesteps": args.timesteps,
            "batch_size": args.batch_size, "device": str(device), "threads_per_process": torch.get_num_threads(),
            "seconds": _median(times), "all_seconds": times, "torch": torch.__version__}


def _job(args, processes: int, mode: str, threads: int = 0) -> dict:
    script = [os.path.abspath(__file__), "--worker", "--mode", mode, "--model", args.model, "--timesteps",
              str(args.timesteps), "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup",
              str(args.warmup), "--device", args.device, "--threads", str(threads)]
    if processes == 1:
        cmd = [sys.executable] + script
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)] \
            + script
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    proc = subprocess.run(cmd, capture_output=True, text=True)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{processes} processes, {mode}: the job failed (exit {proc.returncode})")
    res = json.loads(lines[0][len("RESULT "):])
    res["load_average_1min"] = [load_before, load_after]
    return res


def _jobs(args):
    """(processes, threads) of each job of a round: threads 0 is cores / processes."""
    for n in [int(n) for n in args.processes.split(",") if n.strip()]:
        if n > 1:
            yield n, 0
            continue
        for t in [t.strip() for t in args.one_process_threads.split(",") if t.strip()]:
            yield 1, 0 if t == "all" else int(t)


def summarize(results: list) -> list:
    """Per mode and number of processes: the median over repeats, and the speed-up over one process (its
    seconds / these seconds) and over the other mode's."""
    rows = {}
    for r in results:
        rows.setdefault((r["mode"], r["processes"], r["threads_per_process"]), []).append(r["seconds"])
    table = [{"mode": m, "processes": n, "threads_per_process": t, "seconds": _median(v), "runs": len(v)}
             for (m, n, t), v in sorted(rows.items())]
    for row in table:
        row["speedup_vs_one_process"] = {f"{t['threads_per_process']} threads": t["seconds"] / row["seconds"]
                                         for t in table if t["mode"] == row["mode"] and t["processes"] == 1}
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", default="1,2", help="comma-separated numbers of processes (default 1,2)")
    p.add_argument("--modes", default="sync,ddp", help="sync (the toolchain's), ddp, or both (default)")
    p.add_argument("--model", default="vgg5")
    p.add_argument("--timesteps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32, help="the global batch, the same for every job")
    p.add_argument("--steps", type=int, default=3, help="timed steps per job (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="jobs per configuration, interleaved")
    p.add_argument("--one-process-threads", default="all,1",
                   help="threads of the one-process job, one job each: 'all' (every core) or a number (default all,1)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU per process)")
    p.add_argument("--json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="sync", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        res = worker(args)
        from toolchain.training import distributed
        if distributed.is_main():
            print("RESULT " + json.dumps(res), flush=True)
        distributed.shutdown()
        return 0

    results = []
    for _ in range(args.repeats):
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            for n, threads in _jobs(args):
                res = _job(args, n, mode, threads)
                results.append(res)
                print(f"{mode:4s} {n} process{'es' if n > 1 else '  '} x {res['threads_per_process']} threads, "
                      f"{args.model} T={args.timesteps} global batch {args.batch_size}: {res['seconds']:.3f} s/step "
                      f"(runs {', '.join(f'{t:.3f}' for t in res['all_seconds'])}; load "
                      f"{res['load_average_1min'][0]:.1f}->{res['load_average_1min'][1]:.1f})", flush=True)
    table = summarize(results)
    for row in table:
        if row["processes"] > 1:
            print(f"{row['mode']}: {row['processes']} processes x {row['threads_per_process']} threads "
                  f"{row['seconds']:.3f} s/step: " + ", ".join(f"{x:.2f}x one process of {k}"
                                                               for k, x in row["speedup_vs_one_process"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "summary": table, "argv": sys.argv[1:],
                       "cores": os.cpu_count()}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
