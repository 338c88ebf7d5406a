"""One-to-many: one input, a whole sequence out (sequence generation).

The task: continue a sine wave. The one input is the wave's starting point, given as (sin p, cos p) for a
random phase p so that it says both where the wave is and which way it is heading. It is fed at the first
step only; every later step gets zeros, so the RNN must carry the wave forward in its hidden state. A Linear
head reads the generated values sin(p + k * PHASE_STEP), k = 1..GENERATED_STEPS, off the hidden states.
Trains, then prints the held-out mean squared error and checks it against TARGET_MSE; --quick is the short
smoke run CI does.
"""

import math
import sys

import torch
from torch import nn

from example_support import parse_training_arguments, report, train

GENERATED_STEPS = 20
PHASE_STEP = 0.3  # radians between generated values: a period is about 21 steps
TARGET_MSE = 1e-3  # an RMS error of about 0.03 on a wave whose own RMS is 0.71
DEFAULT_STEPS, QUICK_STEPS = 1000, 300


def make_batch(batch_size, generator):
    """Returns the inputs (batch, GENERATED_STEPS, 2), zero past the first step, and the wave to generate
    (batch, GENERATED_STEPS)."""
    phase = torch.rand(batch_size, 1, generator=generator) * 2 * math.pi
    inputs = torch.zeros(batch_size, GENERATED_STEPS, 2)
    inputs[:, 0, 0], inputs[:, 0, 1] = phase[:, 0].sin(), phase[:, 0].cos()
    wave = torch.sin(phase + PHASE_STEP * torch.arange(1, GENERATED_STEPS + 1))
    return inputs, wave


class WaveGenerator(nn.Module):
    def __init__(self, rnn_class, hidden_size):
        super().__init__()
        self.rnn = rnn_class(2, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, inputs):
        output, _ = self.rnn(inputs)  # (batch, steps, hidden)
        return self.head(output).squeeze(2)  # (batch, steps): one generated value per step


def mean_squared_error(model, data):
    inputs, wave = data
    with torch.no_grad():
        return nn.functional.mse_loss(model(inputs), wave).item()


def main(argv=None):
    args, rnn_class, steps = parse_training_arguments(__doc__, argv, default_steps=DEFAULT_STEPS,
                                                      quick_steps=QUICK_STEPS, hidden_size=32)

    generator = torch.Generator().manual_seed(args.seed)
    held_out = make_batch(1000, generator)
    model = WaveGenerator(rnn_class, args.hidden_size)

    def batch_loss():
        inputs, wave = make_batch(args.batch_size, generator)
        return nn.functional.mse_loss(model(inputs), wave)

    train(model, steps, lr=0.01, batch_loss=batch_loss, metric="mean squared error",
          evaluate=lambda: mean_squared_error(model, held_out), backend=args.backend)

    inputs, wave = held_out
    with torch.no_grad():
        generated = model(inputs[:1])[0]
    print("one held-out wave, generated vs true:")
    print("  " + " ".join(f"{v:+.2f}" for v in generated[:10].tolist()) + " ...")
    print("  " + " ".join(f"{v:+.2f}" for v in wave[0, :10].tolist()) + " ...")
    return report("held-out mean squared error", mean_squared_error(model, held_out), TARGET_MSE,
                  higher_is_better=False)


if __name__ == "__main__":
    sys.exit(main())
