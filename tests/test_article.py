"""The source article's two examples, run on rnnfast."""

import copy

import torch

import rnnfast
from example_loading import load_example


def test_hand_worked_example_gives_the_article_hidden_states():
    # One input, one hidden unit, W_x = 0.5, W_h = 1.0, biases 0, h_0 = 0, inputs 1, 2, 3.
    rnn = rnnfast.RNN(1, 1).double()
    with torch.no_grad():
        rnn.weight_ih_l0.fill_(0.5)
        rnn.weight_hh_l0.fill_(1.0)
        rnn.bias_ih_l0.zero_()
        rnn.bias_hh_l0.zero_()
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(3, 1)  # unbatched (T, input_size)
    output, h_n = rnn(x)
    h = output.view(3)
    torch.testing.assert_close(h, torch.tensor([0.4621, 0.8981, 0.9836], dtype=torch.float64), rtol=0, atol=5e-5)
    # Exactly the recurrence the article works by hand.
    h1 = torch.tanh(torch.tensor(0.5, dtype=torch.float64))
    h2 = torch.tanh(1.0 + h1)
    h3 = torch.tanh(1.5 + h2)
    torch.testing.assert_close(h, torch.stack([h1, h2, h3]), rtol=0, atol=1e-15)
    assert round(h_n.item(), 3) == 0.984


def test_article_training_script_gives_torch_nn_prediction():
    # The article's script as examples/predict_next_number.py has it: SimpleRNN, 1000 epochs of Adam (lr 0.01) on
    # 1, 2, 3, 4 -> 5, then the number after 2, 3, 4; once with nn.RNN, once with rnnfast.RNN, same initial weights.
    article = load_example("predict_next_number.py")
    torch.manual_seed(42)
    reference = article.SimpleRNN(rnn_class=torch.nn.RNN)
    fast = article.SimpleRNN(rnn_class=rnnfast.RNN)
    fast.load_state_dict(copy.deepcopy(reference.state_dict()))
    _, expected_loss = article.train(reference, 1000)
    _, got_loss = article.train(fast, 1000)
    expected, got = article.predict(reference, [2.0, 3.0, 4.0]), article.predict(fast, [2.0, 3.0, 4.0])
    assert abs(got - expected) <= 1e-4 * abs(expected), (got, expected)
    assert got_loss < 1e-3 and expected_loss < 1e-3  # both actually learned 1, 2, 3, 4 -> 5
