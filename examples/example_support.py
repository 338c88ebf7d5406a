"""Pieces the training examples share: choosing the RNN implementation, seeding, the training loop, and the result
line the tests read.

The examples run from any folder as `python examples/NAME.py`; Python puts this folder on sys.path, so they
import this module as `example_support`.
"""

import argparse
import time

import torch

import rnnfast

# The two implementations an example can run on: rnnfast's fused kernels, or PyTorch's own, for comparison.
RNN_CLASSES = {"rnnfast": rnnfast.RNN, "torch": torch.nn.RNN}


def add_common_arguments(parser, *, default_steps, quick_steps):
    parser.add_argument("--backend", choices=sorted(RNN_CLASSES), default="rnnfast",
                        help="which RNN implementation to train: rnnfast.RNN (default) or torch.nn.RNN")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"training steps (default {default_steps}; {quick_steps} with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="the short smoke run that CI does; it must still reach the target")
    parser.add_argument("--seed", type=int, default=0, help="seed for the data and the initial weights")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads before training (default: PyTorch's choice)")
    return parser


def training_steps(args, *, default_steps, quick_steps):
    if args.steps is not None:
        return args.steps
    return quick_steps if args.quick else default_steps


def apply_common_arguments(args):
    """Seeds torch's generator (the initial weights) and applies --threads; returns the chosen RNN class."""
    torch.manual_seed(args.seed)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    return RNN_CLASSES[args.backend]


def parse_training_arguments(doc, argv, *, default_steps, quick_steps, hidden_size):
    """The training examples' command line: the common options, --hidden-size and --batch-size. Seeds and applies
    --threads; returns the arguments, the chosen RNN class and the number of training steps."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, default_steps=default_steps, quick_steps=quick_steps)
    parser.add_argument("--hidden-size", type=int, default=hidden_size)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    rnn_class = apply_common_arguments(args)
    return args, rnn_class, training_steps(args, default_steps=default_steps, quick_steps=quick_steps)


class Stopwatch:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def train(model, steps, *, lr, batch_loss, metric, evaluate, backend):
    """The training examples' loop: Adam with its step size decayed to zero over the run (a cosine schedule),
    which settles the weights instead of leaving them jumping between minibatches. batch_loss() draws a batch
    and returns its loss; evaluate() gives the held-out metric, printed every 100 steps."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    with Stopwatch() as clock:
        for step in range(1, steps + 1):
            loss = batch_loss()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if step % 100 == 0 or step == steps:
                print(f"step {step:>5}: loss {loss.item():.4g}, held-out {metric} {evaluate():.4g}")
    print(f"{backend}: {steps} steps in {clock.seconds:.1f} s")


def report(metric, value, target, *, higher_is_better):
    """Prints the result line that tests/test_examples.py parses and returns the exit status: 0 when the target
    is reached, 1 otherwise, so that a run that did not learn the task fails visibly."""
    reached = value >= target if higher_is_better else value <= target
    relation = ">=" if higher_is_better else "<="
    print(f"result: {metric} = {value:.4g}, target {relation} {target} -> {'reached' if reached else 'NOT reached'}")
    return 0 if reached else 1
