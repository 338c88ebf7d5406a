"""The source article's training script, with rnnfast.RNN dropped in for torch.nn.RNN.

A SimpleRNN (an RNN with one input and a Linear head on the last step) learns the sequence 1, 2, 3, 4 -> 5
(1000 epochs of Adam, lr 0.01, MSE loss) and is then asked for the number after 2, 3, 4. The same model is
trained twice from the same initial weights, once on torch.nn.RNN and once on rnnfast.RNN; the script prints
both models' predictions, before and after training, and the time per epoch of each. --epochs 100 is the
short smoke run CI does.
"""

import argparse
import copy
import sys

import torch
from torch import nn

import rnnfast
from example_support import Stopwatch

# The same weights and gradients, computed in another order in float32, give predictions within 1e-7 of each
# other here; 1e-4 leaves room for other CPUs' rounding. Both models reach about 5 even with a wrong weight or
# gradient, so it is this difference, not the answer, that checks rnnfast.
PREDICTION_TOLERANCE = 1e-4
WARMUP_EPOCHS = 20


class SimpleRNN(nn.Module):
    """The article's model. Pass rnn_class=rnnfast.RNN to drop the fused kernels in; nothing else changes."""

    def __init__(self, input_size=1, hidden_size=10, output_size=1, rnn_class=nn.RNN):
        super().__init__()
        self.rnn = rnn_class(input_size, hidden_size, batch_first=True)
        self.fc = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        out, _ = self.rnn(x)  # (batch, steps, hidden)
        return self.fc(out[:, -1, :])  # the prediction is read from the last step


def as_sequence(numbers):
    return torch.tensor(numbers, dtype=torch.float32).view(1, -1, 1)  # (batch 1, steps, 1 feature)


def train(model, epochs, lr=0.01):
    """The article's loop; returns the seconds it took."""
    x, y = as_sequence([1.0, 2.0, 3.0, 4.0]), torch.tensor([[5.0]])
    criterion = nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    with Stopwatch() as clock:
        for _ in range(epochs):
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
    return clock.seconds, loss.item()


def predict(model, numbers):
    with torch.no_grad():
        return model(as_sequence(numbers)).item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1000, help="training epochs (the article's 1000 by default)")
    parser.add_argument("--hidden-size", type=int, default=10, help="hidden units of the RNN")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before training")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    reference = SimpleRNN(hidden_size=args.hidden_size, rnn_class=nn.RNN)
    fast = SimpleRNN(hidden_size=args.hidden_size, rnn_class=rnnfast.RNN)
    fast.load_state_dict(reference.state_dict())  # the same parameter names, so the same initial weights load

    query = [2.0, 3.0, 4.0]
    print(f"{'':>12}  {'prediction after 2, 3, 4':^29}  {'ms per':>7}  {'final':>8}")
    print(f"{'':>12}  {'before training':>15}  {'trained':>11}  {'epoch':>7}  {'loss':>8}")
    untrained, trained = {}, {}
    for name, model in (("torch.nn.RNN", reference), ("rnnfast.RNN", fast)):
        untrained[name] = predict(model, query)
        train(copy.deepcopy(model), WARMUP_EPOCHS)  # first calls pay one-time costs; keep them out of the timing
        seconds, loss = train(model, args.epochs)
        trained[name] = predict(model, query)
        print(f"{name:>12}  {untrained[name]:>15.5f}  {trained[name]:>11.5f}  {1000 * seconds / args.epochs:>7.3f}  "
              f"{loss:>8.1e}")
    # Before training the predictions show that the same weights give the same answer; after it, that the
    # gradients agree too: a wrong gradient reaches about 5 by another path, which shows most within the first
    # hundred epochs, before both settle on 5.
    difference = max(abs(untrained["rnnfast.RNN"] - untrained["torch.nn.RNN"]),
                     abs(trained["rnnfast.RNN"] - trained["torch.nn.RNN"]))
    print(f"{args.epochs} epochs (Adam, lr 0.01) on {torch.get_num_threads()} thread(s); "
          f"largest difference between the two: {difference:.1e}")
    return 0 if difference <= PREDICTION_TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
