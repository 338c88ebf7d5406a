"""The source article's two examples, run on rnnfast."""

import copy

import torch

import rnnfast


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


class SimpleRNN(torch.nn.Module):
    """The article's model: an RNN over the sequence and a Linear head on its last step."""

    def __init__(self, rnn_class, input_size=1, hidden_size=10, output_size=1):
        super().__init__()
        self.rnn = rnn_class(input_size, hidden_size, batch_first=True)
        self.fc = torch.nn.Linear(hidden_size, output_size)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, -1, :])


def train_and_predict(model, dtype):
    x = torch.tensor([[[1.0], [2.0], [3.0], [4.0]]], dtype=dtype)
    y = torch.tensor([[5.0]], dtype=dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(1000):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return model(torch.tensor([[[2.0], [3.0], [4.0]]], dtype=dtype)).item(), loss.item()


def test_article_training_script_gives_torch_nn_prediction():
    for dtype, tolerance in [(torch.float64, 1e-8), (torch.float32, 1e-4)]:
        torch.manual_seed(42)
        reference = SimpleRNN(torch.nn.RNN).to(dtype)
        fast = SimpleRNN(rnnfast.RNN).to(dtype)
        fast.load_state_dict(copy.deepcopy(reference.state_dict()))
        expected, expected_loss = train_and_predict(reference, dtype)
        got, got_loss = train_and_predict(fast, dtype)
        assert abs(got - expected) <= tolerance * abs(expected), (dtype, got, expected)
        assert got_loss < 1e-3 and expected_loss < 1e-3  # both actually learned 1,2,3,4 -> 5
