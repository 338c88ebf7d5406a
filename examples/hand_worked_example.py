"""The source article's hand-worked Elman RNN, computed by hand, by rnnfast.RNN and by torch.nn.RNN.

One input, one hidden and one output unit; W_x = 0.5, W_h = 1.0, every bias 0, h_0 = 0, inputs 1, 2, 3:
    h_1 = tanh(0.5*1 + 1.0*0)      = 0.4621
    h_2 = tanh(0.5*2 + 1.0*0.4621) = 0.8981
    h_3 = tanh(0.5*3 + 1.0*0.8981) = 0.9836
and the output unit (W_y = 1, b_y = 0) predicts y_3 = h_3, which the article rounds to 0.984.
The run is instant, so the default run is also the smoke run CI does.
"""

import argparse
import itertools
import math
import sys

import torch

import rnnfast


def states_by_hand(inputs, w_x, w_h):
    """The article's arithmetic: h_t = tanh(W_x x_t + W_h h_{t-1}), h_0 = 0."""
    h, states = 0.0, []
    for x in inputs:
        h = math.tanh(w_x * x + w_h * h)
        states.append(h)
    return states


def article_model(rnn_class, w_x, w_h, w_y):
    """A one-unit RNN and its output unit, the article's weights set, every bias 0."""
    rnn = rnn_class(input_size=1, hidden_size=1)
    head = torch.nn.Linear(1, 1)
    with torch.no_grad():
        rnn.weight_ih_l0.fill_(w_x)
        rnn.weight_hh_l0.fill_(w_h)
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.zero_()
        head.weight.fill_(w_y)
        head.bias.zero_()
    return rnn, head


def run_model(rnn_class, inputs, w_x, w_h, w_y):
    """Returns the hidden states h_1..h_T and the prediction y_T = W_y h_T + b_y, as Python floats."""
    rnn, head = article_model(rnn_class, w_x, w_h, w_y)
    x = torch.tensor(inputs, dtype=torch.float32).view(-1, 1, 1)  # (T, B=1, I=1), time-major like nn.RNN
    with torch.no_grad():
        output, h_n = rnn(x)
        prediction = head(h_n[-1])
    return output.view(-1).tolist(), prediction.item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=float, nargs="+", default=[1.0, 2.0, 3.0], help="the sequence x_1..x_T")
    parser.add_argument("--w-x", type=float, default=0.5, help="input-to-hidden weight W_x")
    parser.add_argument("--w-h", type=float, default=1.0, help="hidden-to-hidden weight W_h")
    parser.add_argument("--w-y", type=float, default=1.0, help="hidden-to-output weight W_y")
    args = parser.parse_args(argv)

    by_hand = states_by_hand(args.inputs, args.w_x, args.w_h)
    fast_states, fast_prediction = run_model(rnnfast.RNN, args.inputs, args.w_x, args.w_h, args.w_y)
    torch_states, torch_prediction = run_model(torch.nn.RNN, args.inputs, args.w_x, args.w_h, args.w_y)

    print(f"Elman RNN, W_x = {args.w_x}, W_h = {args.w_h}, biases 0, h_0 = 0")
    print(f"{'t':>2} {'x_t':>6} {'by hand':>9} {'rnnfast':>9} {'torch.nn':>9}")
    for t, (x, hand, fast, ref) in enumerate(zip(args.inputs, by_hand, fast_states, torch_states), start=1):
        print(f"{t:>2} {x:>6g} {hand:>9.4f} {fast:>9.4f} {ref:>9.4f}   h_{t}")
    hand_prediction = args.w_y * by_hand[-1]
    print(f"prediction y_{len(args.inputs)} = W_y h_{len(args.inputs)}: by hand {hand_prediction:.3f}, "
          f"rnnfast {fast_prediction:.3f}, torch.nn.RNN {torch_prediction:.3f}")

    # float32 kernels against float64 arithmetic: agreement to 1e-5 is what float32 rounding allows.
    results = [by_hand + [hand_prediction], fast_states + [fast_prediction], torch_states + [torch_prediction]]
    difference = max(abs(a - b) for one, other in itertools.combinations(results, 2) for a, b in zip(one, other))
    print(f"largest difference between the three: {difference:.1e}")
    return 0 if difference < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
