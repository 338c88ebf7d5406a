"""Drop-in replacements for torch.nn.RNN, LSTM, GRU and their cells.

RNN, LSTM and GRU subclass torch.nn.RNNBase and the cells subclass torch.nn.RNNCell, LSTMCell and GRUCell, so
parameter creation and initialisation, names, shapes, state_dicts and the argument errors are torch.nn's own;
only forward differs, and it runs the fused kernels. The layers stop at RNNBase, not torch.nn.RNN/LSTM/GRU,
because torch.compile refuses to trace any instance of those (a graph break, or an error under fullgraph=True)
whatever its forward does.
"""

import torch
from torch.nn.utils.rnn import PackedSequence

from . import functional
from ._torchscript import NotScriptable
from .parallel import NewtonOptions


def _check_state_matches_input(hx, input, name):
    # torch.nn reports these from deep inside its kernels ("mat1 and mat2 must have the same dtype");
    # name the argument instead.
    if hx.dtype != input.dtype:
        raise RuntimeError(f"Expected {name} to have dtype {input.dtype} (the input's), got {hx.dtype}")
    if hx.device != input.device:
        raise RuntimeError(f"Expected {name} to be on device {input.device} (the input's), got {hx.device}")


def _check_parameters_match_input(weight, input):
    if weight.device != input.device:
        raise RuntimeError(
            "Input and parameter tensors are not at the same device, found input tensor at "
            f"{input.device} and parameter tensor at {weight.device}"
        )


class _FusedRNNBase(NotScriptable, torch.nn.RNNBase):
    """The forward shared by RNN, LSTM and GRU: unbatched, batch-first and packed input become one time-major
    padded (T, B, I) tensor for the layer stack in functional, and its output goes back the same way. A subclass
    says how its hidden state is checked and created (_hidden_*) and runs its stack (_run_stack)."""

    def _flat_weight_list(self):
        # Read by name on every call, so torch.func.functional_call, reassigned parameters and parametrizations
        # are honoured. From _parameters where the name is there (about 0.1 us a weight, where getattr's fallback
        # to Module.__getattr__ costs 0.6); by getattr where it is not (a parametrization's property).
        params = self._parameters
        return [params[name] if name in params else getattr(self, name) for name in self._flat_weights_names]

    def _input_dim_error(self, input):
        return ValueError(f"{self.mode}: Expected input to be 2D or 3D, got {input.dim()}D instead")

    def forward(self, input, hx=None):
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
                raise self._input_dim_error(input)
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not is_batched:
                input = input.unsqueeze(batch_dim)
                if hx is not None:
                    hx = self._hidden_of_unbatched(hx)
            elif hx is not None:
                self._check_batched_hidden_dims(hx)
            self.check_input(input, None)
            x = input.transpose(0, 1) if self.batch_first else input
            if x.size(0) == 0:
                raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
            max_batch_size = x.size(1)
        num_states = self.num_layers * (2 if self.bidirectional else 1)
        if hx is None:
            hx = self._zero_hidden(num_states, max_batch_size, x)
        else:
            self._check_hidden(hx, x, num_states, max_batch_size)
        weights = self._flat_weight_list()
        _check_parameters_match_input(weights[0], x)

        output, hidden = self._run_stack(x, hx, batch_sizes, weights)

        if is_packed:
            packed = output.reshape(-1, output.size(-1)).index_select(0, positions)
            return PackedSequence(packed, batch_sizes, sorted_indices, unsorted_indices), self.permute_hidden(
                hidden, unsorted_indices
            )
        if self.batch_first:
            output = output.transpose(0, 1)
        if not is_batched:
            output = output.squeeze(0 if self.batch_first else 1)
            hidden = self._hidden_of_batched(hidden)
        return output, hidden

    # The hidden state of RNN and GRU: one tensor (L*D, B, H). LSTM overrides these for its (h, c) pair.
    def _hidden_of_unbatched(self, hx):
        if hx.dim() != 2:
            raise RuntimeError(f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor")
        return hx.unsqueeze(1)

    def _hidden_of_batched(self, hidden):
        return hidden.squeeze(1)

    def _check_batched_hidden_dims(self, hx):
        if hx.dim() != 3:
            raise RuntimeError(f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")

    def _zero_hidden(self, num_states, batch, x):
        return torch.zeros(num_states, batch, self.hidden_size, dtype=x.dtype, device=x.device)

    def _check_hidden(self, hx, x, num_states, batch):
        self.check_hidden_size(hx, (num_states, batch, self.hidden_size))
        _check_state_matches_input(hx, x, "hx")

    def _stack_options(self):
        # The arguments every stack in functional takes after its weights, in its order: positional, because
        # building and unpacking a keyword dict cost about 2 us a call, a tenth of a call at the article's scale.
        return self.num_layers, self.bias, self.bidirectional, self.dropout, self.training


class RNN(_FusedRNNBase):
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

    def _input_dim_error(self, input):
        return ValueError(f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")

    def _run_stack(self, x, hx, batch_sizes, weights):
        if self.evaluation_mode == "sequential" and not self.last_newton_reports:
            # The common case, kept short: it is most of a call's time at small sizes (RNNBase.__setattr__ alone
            # costs several microseconds).
            return functional.elman_rnn(x, hx, weights, *self._stack_options(), self.nonlinearity, batch_sizes)
        reports = []
        result = functional.elman_rnn(x, hx, weights, *self._stack_options(), self.nonlinearity, batch_sizes,
                                      mode=self.evaluation_mode, newton_options=self.newton_options,
                                      reports=reports)  # fmt: skip
        self.last_newton_reports = reports
        return result


class GRU(_FusedRNNBase):
    """torch.nn.GRU with the fused rnnfast kernels. Same arguments, parameters, inputs and outputs."""

    def __init__(self, *args, **kwargs):
        # torch.nn.GRU's own argument handling, so its errors are torch.nn's.
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)

    def _run_stack(self, x, hx, batch_sizes, weights):
        return functional.gru(x, hx, weights, *self._stack_options(), batch_sizes)


class LSTM(_FusedRNNBase):
    """torch.nn.LSTM with the fused rnnfast kernels, proj_size included. Same arguments, parameters, inputs
    ((h_0, c_0)) and outputs."""

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    def permute_hidden(self, hx, permutation):
        if permutation is None:
            return hx
        return tuple(state.index_select(1, permutation) for state in hx)

    def _hidden_of_unbatched(self, hx):
        if hx[0].dim() != 2 or hx[1].dim() != 2:
            raise RuntimeError(
                "For unbatched 2-D input, hx and cx should also be 2-D but got "
                f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
            )
        return hx[0].unsqueeze(1), hx[1].unsqueeze(1)

    def _hidden_of_batched(self, hidden):
        return hidden[0].squeeze(1), hidden[1].squeeze(1)

    def _check_batched_hidden_dims(self, hx):
        if hx[0].dim() != 3 or hx[1].dim() != 3:
            raise RuntimeError(
                "For batched 3-D input, hx and cx should also be 3-D but got "
                f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
            )

    def _state_width(self):
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    def _zero_hidden(self, num_states, batch, x):
        zeros = lambda width: torch.zeros(num_states, batch, width, dtype=x.dtype, device=x.device)  # noqa: E731
        return zeros(self._state_width()), zeros(self.hidden_size)

    def _check_hidden(self, hx, x, num_states, batch):
        # torch.nn.LSTM.check_forward_args' messages.
        self.check_hidden_size(hx[0], (num_states, batch, self._state_width()), "Expected hidden[0] size {}, got {}")
        self.check_hidden_size(hx[1], (num_states, batch, self.hidden_size), "Expected hidden[1] size {}, got {}")
        _check_state_matches_input(hx[0], x, "hx")
        _check_state_matches_input(hx[1], x, "cx")

    def _run_stack(self, x, hx, batch_sizes, weights):
        return functional.lstm(x, hx, weights, *self._stack_options(), self.proj_size, batch_sizes)


def _batched_cell_arguments(input, states, count, hidden_size):
    """A cell's input as (B, I) and its states as `count` tensors (B, H): zeros when states is None, a batch axis
    added to unbatched (1-D) arguments."""
    if input.dim() == 1:
        input = input.unsqueeze(0)
        states = None if states is None else [state.unsqueeze(0) for state in states]
    if states is None:
        states = [torch.zeros(input.size(0), hidden_size, dtype=input.dtype, device=input.device)] * count
    return input, list(states)


def _check_cell_step(cell, name, input, states):
    """torch.nn's checks of a cell's input (B, I) and states (B, H), with its messages (hidden0, hidden1, ...)."""
    if not input.is_floating_point() or input.dtype != cell.weight_ih.dtype:
        raise ValueError(
            f"{name} input dtype ({input.dtype}) does not match weight dtype ({cell.weight_ih.dtype}). "
            f"Convert input: input.to({cell.weight_ih.dtype}), or convert model: model.to({input.dtype})"
        )
    if input.size(1) != cell.input_size:
        raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected {cell.input_size}")
    for k, state in enumerate(states):
        if state.dim() != 2 or input.size(0) != state.size(0):
            raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden{k} batch size {state.size(0)}")
        if state.size(1) != cell.hidden_size:
            raise RuntimeError(
                f"hidden{k} has inconsistent hidden_size: got {state.size(1)}, expected {cell.hidden_size}"
            )
        _check_state_matches_input(state, input, "hx" if k == 0 else "cx")
    _check_parameters_match_input(cell.weight_ih, input)


def _check_cell_dims(name, input, hx):
    if input.dim() not in (1, 2):
        raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
    if hx is not None and hx.dim() not in (1, 2):
        raise ValueError(f"{name}: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")


class RNNCell(NotScriptable, torch.nn.RNNCell):
    """torch.nn.RNNCell with the fused rnnfast kernel. Same arguments, parameters, inputs and outputs."""

    def forward(self, input, hx=None):
        _check_cell_dims("RNNCell", input, hx)
        is_batched = input.dim() == 2
        input, (hx,) = _batched_cell_arguments(input, None if hx is None else [hx], 1, self.hidden_size)
        _check_cell_step(self, "RNNCell", input, [hx])
        h = functional.elman_cell(
            input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity
        )
        return h if is_batched else h.squeeze(0)


class GRUCell(NotScriptable, torch.nn.GRUCell):
    """torch.nn.GRUCell with the fused rnnfast kernel. Same arguments, parameters, inputs and outputs."""

    def forward(self, input, hx=None):
        _check_cell_dims("GRUCell", input, hx)
        is_batched = input.dim() == 2
        input, (hx,) = _batched_cell_arguments(input, None if hx is None else [hx], 1, self.hidden_size)
        _check_cell_step(self, "GRUCell", input, [hx])
        h = functional.gru_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return h if is_batched else h.squeeze(0)


class LSTMCell(NotScriptable, torch.nn.LSTMCell):
    """torch.nn.LSTMCell with the fused rnnfast kernel. Same arguments, parameters, inputs ((h, c)) and
    outputs."""

    def forward(self, input, hx=None):
        _check_cell_dims("LSTMCell", input, None)
        if hx is not None:
            for idx, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(f"LSTMCell: Expected hx[{idx}] to be 1D or 2D, got {value.dim()}D instead")
            if len(hx) != 2:
                raise RuntimeError("lstm_cell expects two hidden states")
        is_batched = input.dim() == 2
        input, (h, c) = _batched_cell_arguments(input, hx, 2, self.hidden_size)
        _check_cell_step(self, "LSTMCell", input, [h, c])
        h, c = functional.lstm_cell(input, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return (h, c) if is_batched else (h.squeeze(0), c.squeeze(0))
