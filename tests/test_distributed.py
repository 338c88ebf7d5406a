"""DistributedDataParallel (gloo, two processes on loopback) trains rnnfast.RNN, LSTM (with a projection) and GRU
exactly as one process training on the whole batch does: DDP averages the two halves' gradients, which is the full
batch's mean-loss gradient."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import rnnfast

STEPS, WORLD_SIZE, BATCH = 4, 2, 8


# Each cell's layer options: two bidirectional layers, and for the LSTM a projection, so W_hr trains too.
CELLS = {"RNN": {}, "LSTM": {"proj_size": 4}, "GRU": {}}


class Regressor(torch.nn.Module):
    def __init__(self, cell):
        super().__init__()
        options = CELLS[cell]
        self.rnn = getattr(rnnfast, cell)(3, 6, num_layers=2, bidirectional=True, batch_first=True, **options)
        self.head = torch.nn.Linear(2 * options.get("proj_size", 6), 1)

    def forward(self, x):
        output, _ = self.rnn(x)
        return self.head(output.mean(1))  # every step, so every weight gets a gradient


def make_model_and_data(cell):
    torch.manual_seed(0)
    model = Regressor(cell).double()
    x = torch.randn(BATCH, 7, 3, dtype=torch.float64)
    y = torch.randn(BATCH, 1, dtype=torch.float64)
    return model, x, y


def train(model, x, y):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(STEPS):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def ddp_worker(rank, cell, init_file, result_file):
    torch.set_num_threads(1)
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        model, x, y = make_model_and_data(cell)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        half = BATCH // WORLD_SIZE
        train(ddp, x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half])
        if rank == 0:
            torch.save(model.state_dict(), result_file)
    finally:
        dist.destroy_process_group()


def ddp_process(rank, cell, init_file, result_file):
    """ddp_worker, then the process's end without the interpreter's finalization.

    Why: every backward() stashes a Python object (a contextvars.Context) in the thread-local state that gloo's
    work objects capture, and a worker thread of the process group (which DDP keeps alive past
    destroy_process_group) drops the last work of the last backward only after the main thread has seen it
    complete. When that drop falls inside the interpreter's finalization, its GIL acquire ends the thread from
    inside a noexcept destructor: "terminate called without an active exception", SIGABRT (pytorch/pytorch#190489).
    Measured on a 2-core machine, interleaved: 17 of 88 runs aborted so, 0 of 88 with this exit. A failure still
    raises out of ddp_worker, and mp.spawn reports it."""
    ddp_worker(rank, cell, init_file, result_file)
    os._exit(0)


@pytest.mark.parametrize("cell", CELLS)
def test_ddp_with_gloo_on_two_processes_equals_one_process_on_the_whole_batch(cell, tmp_path):
    result_file = tmp_path / "ddp_state.pt"
    mp.spawn(ddp_process, args=(cell, str(tmp_path / "rendezvous"), str(result_file)), nprocs=WORLD_SIZE, join=True)
    distributed = torch.load(result_file)

    model, x, y = make_model_and_data(cell)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, x, y)
    for name, expected in model.state_dict().items():
        assert not torch.equal(expected, initial[name]), f"{name} did not train"
        torch.testing.assert_close(distributed[name], expected, rtol=1e-12, atol=1e-12, msg=name)
