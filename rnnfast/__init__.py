"""rnnfast: fused recurrent-network kernels for PyTorch, as drop-in torch.nn layers."""

from . import _ops  # noqa: F401  (registers the ops, their fake kernels and autograd)
from .convert import convert
from .modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell", "convert"]
