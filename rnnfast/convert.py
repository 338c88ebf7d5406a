"""Swaps torch.nn.RNN / LSTM / GRU and their cells inside a model for rnnfast's, keeping the very same
parameters."""

import torch

from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell


def _layer_options(module):
    return dict(num_layers=module.num_layers, bias=module.bias, batch_first=module.batch_first,
                dropout=module.dropout, bidirectional=module.bidirectional)  # fmt: skip


def _empty_twin(module):
    """The rnnfast module of the same configuration, its own parameters on the meta device (replaced next), or
    None when module is not one of the exact torch.nn classes (a subclass may have a forward of its own)."""
    kind = type(module)
    if kind is torch.nn.RNN:
        return RNN(module.input_size, module.hidden_size, nonlinearity=module.nonlinearity, device="meta",
                   **_layer_options(module))  # fmt: skip
    if kind is torch.nn.LSTM:
        return LSTM(module.input_size, module.hidden_size, proj_size=module.proj_size, device="meta",
                    **_layer_options(module))  # fmt: skip
    if kind is torch.nn.GRU:
        return GRU(module.input_size, module.hidden_size, device="meta", **_layer_options(module))
    if kind is torch.nn.RNNCell:
        return RNNCell(module.input_size, module.hidden_size, bias=module.bias, nonlinearity=module.nonlinearity,
                       device="meta")  # fmt: skip
    if kind in (torch.nn.LSTMCell, torch.nn.GRUCell):
        cell = LSTMCell if kind is torch.nn.LSTMCell else GRUCell
        return cell(module.input_size, module.hidden_size, bias=module.bias, device="meta")
    return None


def _replacement(module):
    new = _empty_twin(module)
    if new is None:
        return None
    # The same Parameter objects, not copies: an optimizer built before the conversion still updates them.
    for name, param in module.named_parameters(recurse=False):
        setattr(new, name, param)
    new.train(module.training)
    return new


def convert(model):
    """Returns model with every torch.nn.RNN, LSTM, GRU, RNNCell, LSTMCell and GRUCell in it replaced by the
    rnnfast module, parameters shared. The model is changed in place; a bare module of those is returned
    replaced."""
    replaced = _replacement(model)
    if replaced is not None:
        return replaced
    for name, child in list(model.named_children()):
        replaced = _replacement(child)
        if replaced is not None:
            setattr(model, name, replaced)
        else:
            convert(child)
    return model
