"""Swaps torch.nn.RNN / RNNCell modules inside a model for rnnfast's, keeping the very same parameters."""

import torch

from .modules import RNN, RNNCell


def _replacement(module):
    if type(module) is torch.nn.RNN:
        new = RNN(module.input_size, module.hidden_size, num_layers=module.num_layers,
                  nonlinearity=module.nonlinearity, bias=module.bias, batch_first=module.batch_first,
                  dropout=module.dropout, bidirectional=module.bidirectional, device="meta")  # fmt: skip
    elif type(module) is torch.nn.RNNCell:
        new = RNNCell(module.input_size, module.hidden_size, bias=module.bias, nonlinearity=module.nonlinearity,
                      device="meta")  # fmt: skip
    else:
        return None
    # The same Parameter objects, not copies: an optimizer built before the conversion still updates them.
    for name, param in module.named_parameters(recurse=False):
        setattr(new, name, param)
    new.train(module.training)
    return new


def convert(model):
    """Returns model with every torch.nn.RNN and torch.nn.RNNCell in it replaced by the rnnfast module,
    parameters shared. The model is changed in place; a bare RNN or RNNCell is returned replaced."""
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
