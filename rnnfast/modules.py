"""Drop-in replacements for torch.nn.RNN and torch.nn.RNNCell.

RNN subclasses torch.nn.RNNBase and RNNCell subclasses torch.nn.RNNCell, so parameter creation and
initialisation, names, shapes, state_dicts and the argument errors are torch.nn's own; only forward differs, and
it runs the fused kernels. RNN stops at RNNBase, not torch.nn.RNN, because torch.compile refuses to trace any
instance of torch.nn.RNN/GRU/LSTM (a graph break, or an error under fullgraph=True) whatever its forward does.
"""

import torch
from torch.nn.utils.rnn import PackedSequence

from . import functional
from .parallel import NewtonOptions


def _check_state_matches_input(hx, input, name):
    # torch.nn reports these from deep inside its kernels ("mat1 and mat2 must have the same dtype");
    # name the argument instead.
    if hx.dtype != input.dtype:
        raise RuntimeError(f"Expected {name} to have dtype {input.dtype} (the input's), got {hx.dtype}")
    if hx.device != input.device:
        raise RuntimeError(f"Expected {name} to be on device {input.device} (the input's), got {hx.device}")


def _check_parameters_match_input(module, input):
    weight = module.weight_ih_l0 if isinstance(module, torch.nn.RNNBase) else module.weight_ih
    if weight.device != input.device:
        raise RuntimeError(
            "Input and parameter tensors are not at the same device, found input tensor at "
            f"{input.device} and parameter tensor at {weight.device}"
        )


class RNN(torch.nn.RNNBase):
    """torch.nn.RNN with the fused rnnfast kernels. Same arguments, parameters, inputs and outputs.

    One more keyword, mode: "sequential" (default) runs the loop over time; "parallel" evaluates every layer
    by Newton's method over all steps at once (rnnfast.parallel; the options in the attribute newton_options,
    each forward's NewtonReports in last_newton_reports); "auto" picks per layer by rnnfast.parallel.choose_mode,
    from measurements. All give the same result to the Newton tolerance."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, mode="sequential",
                 **kwargs):  # fmt: skip
        # torch.nn.RNN's own argument handling and messages.
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if kwargs:
            raise TypeError(f"RNN.__init__() got an unexpected keyword argument '{next(iter(kwargs))}'")
        if mode not in functional.MODES:
            raise ValueError(f"rnnfast.RNN: expected mode in {functional.MODES}, got {mode!r}")
        if nonlinearity == "tanh":
            cell = "RNN_TANH"
        elif nonlinearity == "relu":
            cell = "RNN_RELU"
        else:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        # RNNBase's own attribute `mode` names the cell ("RNN_TANH"); the evaluation mode is kept apart.
        self.evaluation_mode = mode
        self.newton_options = NewtonOptions()
        self.last_newton_reports = []
        super().__init__(cell, input_size, hidden_size, num_layers=num_layers, bias=bias, batch_first=batch_first,
                         dropout=dropout, bidirectional=bidirectional, device=device, dtype=dtype)  # fmt: skip

    def extra_repr(self):
        # torch.nn.RNN's description, plus the evaluation mode where it is not the default.
        text = super().extra_repr()
        return text if self.evaluation_mode == "sequential" else f"{text}, mode={self.evaluation_mode!r}"

    def _flat_weight_list(self):
        # Read by name on every call, so torch.func.functional_call and reassigned parameters are honoured.
        return [getattr(self, name) for name in self._flat_weights_names]

    def forward(self, input, hx=None):
        num_directions = 2 if self.bidirectional else 1
        is_packed = isinstance(input, PackedSequence)
        is_batched = True
        if is_packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            batch_sizes = batch_sizes.cpu()
            max_batch_size = int(batch_sizes[0])
            if hx is not None:
                hx = self.permute_hidden(hx, sorted_indices)
            self.check_input(data, batch_sizes)
            positions, T, B = functional.packed_positions(batch_sizes, data.device)
            x = data.new_zeros(T * B, data.size(1)).index_copy(0, positions, data).view(T, B, -1)
        else:
            batch_sizes = sorted_indices = unsorted_indices = None
            if input.dim() not in (2, 3):
                raise ValueError(f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not is_batched:
                input = input.unsqueeze(batch_dim)
                if hx is not None:
                    if hx.dim() != 2:
                        raise RuntimeError(
                            f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor"
                        )
                    hx = hx.unsqueeze(1)
            elif hx is not None and hx.dim() != 3:
                raise RuntimeError(f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")
            self.check_input(input, None)
            x = input.transpose(0, 1) if self.batch_first else input
            if x.size(0) == 0:
                raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
            max_batch_size = x.size(1)
        if hx is None:
            hx = torch.zeros(self.num_layers * num_directions, max_batch_size, self.hidden_size, dtype=x.dtype,
                             device=x.device)  # fmt: skip
        else:
            self.check_hidden_size(hx, (self.num_layers * num_directions, max_batch_size, self.hidden_size))
            _check_state_matches_input(hx, x, "hx")
        _check_parameters_match_input(self, x)

        reports = []
        output, h_n = functional.elman_rnn(
            x, hx, self._flat_weight_list(), num_layers=self.num_layers, bias=self.bias,
            nonlinearity=self.nonlinearity, bidirectional=self.bidirectional, dropout=self.dropout,
            training=self.training, batch_sizes=batch_sizes, mode=self.evaluation_mode,
            newton_options=self.newton_options, reports=reports,
        )  # fmt: skip
        self.last_newton_reports = reports

        if is_packed:
            packed = output.reshape(-1, output.size(-1)).index_select(0, positions)
            return PackedSequence(packed, batch_sizes, sorted_indices, unsorted_indices), self.permute_hidden(
                h_n, unsorted_indices
            )
        if self.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = output.squeeze(0 if self.batch_first else 1)
            h_n = h_n.squeeze(1)
        return output, h_n


class RNNCell(torch.nn.RNNCell):
    """torch.nn.RNNCell with the fused rnnfast kernel. Same arguments, parameters, inputs and outputs."""

    def forward(self, input, hx=None):
        if input.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if hx is None:
            hx = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)
        elif not is_batched:
            hx = hx.unsqueeze(0)
        if not input.is_floating_point() or input.dtype != self.weight_ih.dtype:
            raise ValueError(
                f"RNNCell input dtype ({input.dtype}) does not match weight dtype ({self.weight_ih.dtype}). "
                f"Convert input: input.to({self.weight_ih.dtype}), or convert model: model.to({input.dtype})"
            )
        if input.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected {self.input_size}")
        if hx.dim() != 2 or input.size(0) != hx.size(0):
            raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden0 batch size {hx.size(0)}")
        if hx.size(1) != self.hidden_size:
            raise RuntimeError(
                f"hidden0 has inconsistent hidden_size: got {hx.size(1)}, expected {self.hidden_size}"
            )
        _check_state_matches_input(hx, input, "hx")
        _check_parameters_match_input(self, input)
        h = functional.elman_cell(
            input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity
        )
        return h if is_batched else h.squeeze(0)
