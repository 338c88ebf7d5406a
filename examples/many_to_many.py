"""Many-to-many, aligned: one answer per input step (sequence tagging).

The task: tag every step of a sequence of numbers drawn from [-1, 1] with whether the running sum up to and
including that step is positive. The RNN's output at step t, through a Linear head, is the tag of step t, so
each answer may only use the steps seen so far. Trains, then prints the held-out per-step accuracy and checks
it against TARGET_ACCURACY; --quick is the short smoke run CI does.
"""

import sys

import torch
from torch import nn

from example_support import parse_training_arguments, report, train

SEQUENCE_LENGTH = 20
TARGET_ACCURACY = 0.95
DEFAULT_STEPS, QUICK_STEPS = 1000, 300


def make_batch(batch_size, generator):
    """Returns sequences (batch, SEQUENCE_LENGTH, 1) and per-step tags (batch, SEQUENCE_LENGTH)."""
    values = torch.rand(batch_size, SEQUENCE_LENGTH, generator=generator) * 2 - 1
    tags = (values.cumsum(1) > 0).long()
    return values.unsqueeze(2), tags


class StepTagger(nn.Module):
    def __init__(self, rnn_class, hidden_size, num_tags=2):
        super().__init__()
        self.rnn = rnn_class(1, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, num_tags)

    def forward(self, x):
        output, _ = self.rnn(x)  # (batch, steps, hidden): h_t at every step
        return self.head(output)  # (batch, steps, num_tags)


def per_step_accuracy(model, data):
    x, tags = data
    with torch.no_grad():
        return (model(x).argmax(2) == tags).float().mean().item()


def main(argv=None):
    args, rnn_class, steps = parse_training_arguments(__doc__, argv, default_steps=DEFAULT_STEPS,
                                                      quick_steps=QUICK_STEPS, hidden_size=16)

    generator = torch.Generator().manual_seed(args.seed)
    held_out = make_batch(1000, generator)
    model = StepTagger(rnn_class, args.hidden_size)

    def batch_loss():
        x, tags = make_batch(args.batch_size, generator)
        logits = model(x)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), tags.reshape(-1))

    train(model, steps, lr=0.01, batch_loss=batch_loss, metric="per-step accuracy",
          evaluate=lambda: per_step_accuracy(model, held_out), backend=args.backend)
    return report("held-out per-step accuracy", per_step_accuracy(model, held_out), TARGET_ACCURACY,
                  higher_is_better=True)


if __name__ == "__main__":
    sys.exit(main())
