"""The training stages of tests/test_distributed.py, run the same way by one process (the test itself) and by each
process of a torchrun job (`python -m torch.distributed.run --standalone --nproc-per-node 2 distributed_worker.py
OUT`), which saves what each process got to OUT/result<rank>.pt.

Small on purpose: 8x8 digits, vgg-small (dropout 0.2 before the output layer), 2 epochs each, and a training split
cut so that every epoch ends with a short batch: 3 samples for the ANN (split 2 + 1; the ANN's BatchNorm1d needs 2
in one process), 1 sample for the SNNs: fewer samples than processes (one process runs a stand-in row that must
count for nothing)."""
from __future__ import annotations

import dataclasses
import os
import sys

import torch

BATCH = 32


def digits(last_batch: int):
    """200 digits per split, the training split cut to end with a batch of `last_batch` samples."""
    from toolchain.data import load_dataset
    data = load_dataset("digits", limit=200)
    n = (len(data.train_x) - last_batch) // BATCH * BATCH + last_batch
    return dataclasses.replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n])


def run_stages(out: str, rank: int) -> dict:
    """ANN training (batch norm, dropout, shifted images), conversion (Poisson input; max, and a percentile of a
    subsample), STDB fine-tuning (Poisson input, dropout), quantization-aware fine-tuning (loihi-cuba, 1 epoch), direct training with batch norm (Poisson input): each
    stage's last-epoch weights, output weights, history and thresholds. Outputs go to OUT/rank<rank>/."""
    from toolchain.convert import convert
    from toolchain.finetune import finetune
    import toolchain.training.convert as convert_module
    from toolchain.training import TrainConfig
    from toolchain.training.ann import train_ann
    from toolchain.training.direct import train_snn

    data = digits(last_batch=1)
    where = os.path.join(out, f"rank{rank}")

    def kept(ckpt) -> dict:
        return {"last": ckpt.training["state"]["last_weights"], "best": ckpt.state_dict,
                "history": ckpt.training["state"]["history"], "metrics": ckpt.metrics}

    results = {}
    ann = train_ann(digits(last_batch=3), "vgg-small", TrainConfig(epochs=2, lr=3e-3, batch_size=BATCH, augment=1),
                    os.path.join(where, "ann.pt"), batch_norm=True, progress=False)
    results["ann"] = kept(ann)
    before = convert_module.MAX_QUANTILE_ELEMENTS
    convert_module.MAX_QUANTILE_ELEMENTS = 5000            # percentile of evenly spaced positions, not of all
    try:
        results["percentile"] = convert(ann, data, timesteps=4, coding="poisson", percentile=99.0, scale=0.7,
                                        calib_samples=75).snn.thresholds
    finally:
        convert_module.MAX_QUANTILE_ELEMENTS = before
    snn = convert(ann, data, timesteps=4, coding="poisson", scale=0.7, calib_samples=75)
    results["max"] = dict(snn.snn.thresholds)
    hybrid = finetune(snn, data, TrainConfig(epochs=2, lr=1e-3, batch_size=BATCH), os.path.join(where, "stdb.pt"),
                      surrogate={"name": "stdb", "alpha": 0.3, "beta": 0.01}, progress=False)
    results["stdb"] = kept(hybrid)
    qat = finetune(snn, data, TrainConfig(epochs=1, lr=1e-3, batch_size=BATCH), os.path.join(where, "qat.pt"),
                   neuron="loihi-cuba", surrogate={"name": "linear"}, progress=False)
    results["qat"] = kept(qat)
    direct = train_snn(data, "vgg-small", TrainConfig(epochs=2, lr=3e-3, batch_size=BATCH),
                       os.path.join(where, "direct.pt"), timesteps=3, batch_norm=True, coding="poisson",
                       progress=False)
    results["direct"] = kept(direct)
    return results


def main(out: str) -> None:
    from toolchain.cli.common import write_json
    from toolchain.training import distributed

    rank, size = distributed.world()
    results = run_stages(out, rank)
    results["processes"], results["threads"] = size, torch.get_num_threads()
    write_json(os.path.join(out, f"rank{rank}", "summary.json"), {"rank": rank})
    torch.save(results, os.path.join(out, f"result{rank}.pt"))      # the test's own record of what each got
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
