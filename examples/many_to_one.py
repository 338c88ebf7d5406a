"""Many-to-one: read a whole sequence, give one answer at the end (sequence classification).

The task: is the sum of a sequence of numbers drawn from [-1, 1] positive? Sequences have different lengths
(MIN_LENGTH to MAX_LENGTH steps), so they go through the RNN as one PackedSequence (unsorted lengths), and each
sequence is classified from its own last hidden state h_n. Trains, then prints the held-out accuracy and checks
it against TARGET_ACCURACY; --quick is the short smoke run CI does.
"""

import sys

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from example_support import parse_training_arguments, report, train

MIN_LENGTH, MAX_LENGTH = 5, 20
TARGET_ACCURACY = 0.94
DEFAULT_STEPS, QUICK_STEPS = 1000, 300


def make_batch(batch_size, generator):
    """Returns padded sequences (batch, MAX_LENGTH, 1), their lengths (batch,) and labels (batch,): 1 where
    the sum over the sequence's own length is positive."""
    lengths = torch.randint(MIN_LENGTH, MAX_LENGTH + 1, (batch_size,), generator=generator)
    values = torch.rand(batch_size, MAX_LENGTH, generator=generator) * 2 - 1
    values = values * (torch.arange(MAX_LENGTH) < lengths.unsqueeze(1))  # zero the padding
    labels = (values.sum(1) > 0).long()
    return values.unsqueeze(2), lengths, labels


class SequenceClassifier(nn.Module):
    def __init__(self, rnn_class, hidden_size, num_classes=2):
        super().__init__()
        self.rnn = rnn_class(1, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, padded, lengths):
        packed = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
        _, h_n = self.rnn(packed)  # (1, batch, hidden): each sequence's state after its own last step
        return self.head(h_n[-1])


def accuracy(model, data):
    padded, lengths, labels = data
    with torch.no_grad():
        return (model(padded, lengths).argmax(1) == labels).float().mean().item()


def main(argv=None):
    args, rnn_class, steps = parse_training_arguments(__doc__, argv, default_steps=DEFAULT_STEPS,
                                                      quick_steps=QUICK_STEPS, hidden_size=16)

    generator = torch.Generator().manual_seed(args.seed)
    held_out = make_batch(1000, generator)
    model = SequenceClassifier(rnn_class, args.hidden_size)

    def batch_loss():
        padded, lengths, labels = make_batch(args.batch_size, generator)
        return nn.functional.cross_entropy(model(padded, lengths), labels)

    train(model, steps, lr=0.01, batch_loss=batch_loss, metric="accuracy",
          evaluate=lambda: accuracy(model, held_out), backend=args.backend)
    return report("held-out accuracy", accuracy(model, held_out), TARGET_ACCURACY, higher_is_better=True)


if __name__ == "__main__":
    sys.exit(main())
