"""Encoder-decoder: read a whole sequence, then write another one (sequence to sequence).

The task: reverse a sequence of SEQUENCE_LENGTH digits. An encoder RNN reads the digits; its final hidden
state, the whole sequence in one vector, is the decoder RNN's initial state. The decoder writes the reversed
digits one at a time, each step fed the digit written before it (a start token first). Training feeds it the
true previous digit (teacher forcing); evaluation feeds back its own guesses (greedy decoding), one step per
call with the hidden state carried between calls. Trains, then prints the held-out accuracy of whole
sequences and checks it against TARGET_SEQUENCE_ACCURACY; --quick is the short smoke run CI does.
"""

import sys

import torch
from torch import nn

from example_support import parse_training_arguments, report, train

SEQUENCE_LENGTH = 8
NUM_DIGITS = 10
START = NUM_DIGITS  # the decoder's first input, a token that is no digit
TARGET_SEQUENCE_ACCURACY = 0.9  # every digit of the sequence right
DEFAULT_STEPS, QUICK_STEPS = 1000, 500


def make_batch(batch_size, generator):
    """Returns digit sequences (batch, SEQUENCE_LENGTH) and their reversals."""
    digits = torch.randint(0, NUM_DIGITS, (batch_size, SEQUENCE_LENGTH), generator=generator)
    return digits, digits.flip(1)


class Reverser(nn.Module):
    def __init__(self, rnn_class, hidden_size, embedding_size=16):
        super().__init__()
        self.embed = nn.Embedding(NUM_DIGITS + 1, embedding_size)  # the digits and START
        self.encoder = rnn_class(embedding_size, hidden_size, batch_first=True)
        self.decoder = rnn_class(embedding_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, NUM_DIGITS)

    def encode(self, digits):
        _, h_n = self.encoder(self.embed(digits))  # (1, batch, hidden)
        return h_n

    def forward(self, digits, targets):
        """Teacher-forced logits (batch, SEQUENCE_LENGTH, NUM_DIGITS): step t is fed the true digit t-1."""
        start = torch.full_like(targets[:, :1], START)
        decoder_inputs = torch.cat([start, targets[:, :-1]], 1)
        output, _ = self.decoder(self.embed(decoder_inputs), self.encode(digits))
        return self.head(output)

    @torch.no_grad()
    def generate(self, digits):
        """Greedy decoding: each step is fed the digit the decoder itself wrote before."""
        state = self.encode(digits)
        previous = torch.full_like(digits[:, :1], START)
        written = []
        for _ in range(SEQUENCE_LENGTH):
            output, state = self.decoder(self.embed(previous), state)  # one step, state carried over
            previous = self.head(output).argmax(2)
            written.append(previous)
        return torch.cat(written, 1)


def sequence_accuracy(model, data):
    digits, reversed_digits = data
    return (model.generate(digits) == reversed_digits).all(1).float().mean().item()


def main(argv=None):
    args, rnn_class, steps = parse_training_arguments(__doc__, argv, default_steps=DEFAULT_STEPS,
                                                      quick_steps=QUICK_STEPS, hidden_size=128)

    generator = torch.Generator().manual_seed(args.seed)
    held_out = make_batch(1000, generator)
    model = Reverser(rnn_class, args.hidden_size)

    def batch_loss():
        digits, reversed_digits = make_batch(args.batch_size, generator)
        logits = model(digits, reversed_digits)
        return nn.functional.cross_entropy(logits.reshape(-1, NUM_DIGITS), reversed_digits.reshape(-1))

    train(model, steps, lr=0.003, batch_loss=batch_loss, metric="sequence accuracy",
          evaluate=lambda: sequence_accuracy(model, held_out), backend=args.backend)

    digits, _ = held_out
    for row in digits[:3]:
        print(f"  {''.join(map(str, row.tolist()))} -> {''.join(map(str, model.generate(row[None])[0].tolist()))}")
    return report("held-out sequence accuracy", sequence_accuracy(model, held_out), TARGET_SEQUENCE_ACCURACY,
                  higher_is_better=True)


if __name__ == "__main__":
    sys.exit(main())
