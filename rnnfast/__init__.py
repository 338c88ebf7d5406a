"""rnnfast: fused recurrent-network kernels for PyTorch, as drop-in torch.nn layers."""

from . import _ops  # noqa: F401  (registers the ops, their fake kernels and autograd)
from . import parallel, scan
from .convert import convert
from .min_gru import MinGRU
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from .parallel import elman_parallel

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "MinGRU", "RNN", "RNNCell", "convert", "elman_parallel", "parallel",
           "scan"]  # fmt: skip
