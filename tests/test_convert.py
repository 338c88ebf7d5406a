"""rnnfast.convert swaps torch.nn.RNN / RNNCell inside a model for rnnfast's, sharing the same parameters."""

import torch

import rnnfast


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(3, 4))
        self.rnn = torch.nn.RNN(4, 5, num_layers=2, bidirectional=True, nonlinearity="relu", batch_first=True)
        self.blocks = torch.nn.ModuleList([torch.nn.RNNCell(10, 6)])
        self.head = torch.nn.Linear(6, 1)

    def forward(self, x):
        out, _ = self.rnn(self.encoder(x))
        return self.head(self.blocks[0](out[:, -1]))


def test_convert_replaces_every_rnn_and_keeps_outputs_and_parameters():
    model = Model().double().eval()
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    expected = model(x)
    params_before = list(model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    converted = rnnfast.convert(model)
    assert converted is model
    assert type(model.rnn) is rnnfast.RNN and type(model.blocks[0]) is rnnfast.RNNCell
    assert all(a is b for a, b in zip(model.parameters(), params_before, strict=True))
    assert not model.rnn.training
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)
    # The optimizer built before the conversion still trains the converted model.
    model(x).sum().backward()
    before = model.rnn.weight_hh_l1.detach().clone()
    optimizer.step()
    assert not torch.equal(model.rnn.weight_hh_l1, before)


def test_convert_of_a_bare_module_returns_the_rnnfast_module_and_state_dicts_load_both_ways():
    rnn = torch.nn.RNN(3, 4, num_layers=2, bias=False)
    fast = rnnfast.convert(rnn)
    assert type(fast) is rnnfast.RNN and fast.bias is False and fast.num_layers == 2
    back = torch.nn.RNN(3, 4, num_layers=2, bias=False)
    back.load_state_dict(fast.state_dict())
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(fast(x), back(x))
    assert isinstance(fast, torch.nn.RNNBase)


class GatedModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, batch_first=True)
        self.gru = torch.nn.GRU(4, 4, bias=False)
        self.cells = torch.nn.ModuleList([torch.nn.LSTMCell(4, 3), torch.nn.GRUCell(3, 2)])

    def forward(self, x):
        out, _ = self.lstm(x)
        out, _ = self.gru(out.transpose(0, 1))
        h, _ = self.cells[0](out[-1])
        return self.cells[1](h)


def test_convert_replaces_lstm_gru_and_their_cells_keeping_outputs_and_parameters():
    model = GatedModel().double()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    expected = model(x)
    params_before = list(model.parameters())
    rnnfast.convert(model)
    assert [type(m) for m in (model.lstm, model.gru, *model.cells)] == [rnnfast.LSTM, rnnfast.GRU, rnnfast.LSTMCell,
                                                                        rnnfast.GRUCell]  # fmt: skip
    assert model.lstm.proj_size == 2 and model.lstm.batch_first and model.gru.bias is False
    assert all(a is b for a, b in zip(model.parameters(), params_before, strict=True))
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)


def test_convert_leaves_subclasses_of_torch_nn_lstm_alone():
    class MyLSTM(torch.nn.LSTM):
        pass

    module = MyLSTM(3, 4)
    assert rnnfast.convert(module) is module
