"""What each run measures: the shapes, the sweeps and how long to time each comparison.

Shapes are (batch, seq_len, input_size, hidden_size[, num_layers, bidirectional]): one layer and one direction
unless said, tanh, with bias.
"""

from dataclasses import dataclass, field
from typing import Optional, Tuple

from .timing import TimingConfig


@dataclass(frozen=True, order=True)
class Shape:
    batch: int
    seq_len: int
    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False

    @property
    def label(self) -> str:
        return shape_label(self.as_dict())

    @property
    def single_layer(self) -> bool:
        """One layer, one direction: what the per-step analyses and the Python loop references cover."""
        return self.num_layers == 1 and not self.bidirectional

    def as_dict(self) -> dict:
        return {"batch": self.batch, "seq_len": self.seq_len, "input_size": self.input_size,
                "hidden_size": self.hidden_size, "num_layers": self.num_layers,
                "bidirectional": self.bidirectional}  # fmt: skip


def shape_label(shape: dict) -> str:
    """A shape's label from its as_dict() form (results files from before num_layers and bidirectional included)."""
    label = f"B={shape['batch']} T={shape['seq_len']} I={shape['input_size']} H={shape['hidden_size']}"
    if shape.get("num_layers", 1) > 1:
        label += f" L={shape['num_layers']}"
    if shape.get("bidirectional", False):
        label += " bidirectional"
    return label


# (1, 100, 1, 1) is the source article's scale; the next grow towards sizes where the products dominate. The last
# two are the stacks people run: two layers, and one bidirectional layer, at the second shape's sizes.
SINGLE_LAYER_SHAPES = (
    Shape(1, 100, 1, 1),
    Shape(32, 128, 32, 64),
    Shape(32, 256, 128, 128),
    Shape(16, 512, 256, 512),
    Shape(8, 256, 1024, 1024),
)
STANDARD_SHAPES = SINGLE_LAYER_SHAPES + (
    Shape(32, 128, 32, 64, num_layers=2),
    Shape(32, 128, 32, 64, bidirectional=True),
)

MODES = ("forward", "forward_backward")


@dataclass(frozen=True)
class Plan:
    name: str
    standard_shapes: Tuple[Shape, ...]
    # The sequence-length sweep holds batch, input and hidden size at sweep_base's, the batch sweep holds
    # sequence length, input and hidden size.
    sweep_base: Shape
    seq_lens: Tuple[int, ...]
    batches: Tuple[int, ...]
    split_shapes: Tuple[Shape, ...]
    timing: TimingConfig = field(default_factory=TimingConfig)
    # torch.compile unrolls the Python loop over time, so its compile time grows with T: about 0.3 s a step
    # (forward and backward graphs) on a 2-core machine. Longer sequences are skipped rather than waited for.
    compile_max_steps: int = 0
    # Largest problem (T*B*H) the Newton evaluations are timed at (None: any); see Limits.
    newton_max_states: Optional[int] = None
    # The cells whose implementations the two sweeps time (None: every cell). The sweeps are the
    # sequential-against-parallel analysis, of the Elman recurrence and what is timed beside it; the LSTM and
    # GRU are compared at the standard shapes.
    sweep_cells: Optional[Tuple[str, ...]] = None

    def seq_len_shapes(self):
        b = self.sweep_base
        return tuple(Shape(b.batch, t, b.input_size, b.hidden_size) for t in self.seq_lens)

    def batch_shapes(self):
        b = self.sweep_base
        return tuple(Shape(n, b.seq_len, b.input_size, b.hidden_size) for n in self.batches)


SWEEP_BASE = Shape(32, 128, 32, 64)

PLANS = {
    # Seconds: enough of everything for CI to see every implementation, analysis, table and plot work.
    "quick": Plan(
        name="quick",
        standard_shapes=STANDARD_SHAPES[:2] + STANDARD_SHAPES[5:],
        sweep_base=Shape(8, 32, 16, 32),
        seq_lens=(8, 16, 32),
        batches=(1, 4, 16),
        split_shapes=STANDARD_SHAPES[1:2],
        timing=TimingConfig(warmup=1, repeats=3, min_repeats=3, min_sample_s=0.001, budget_s=0.05),
        compile_max_steps=0,
    ),
    # About two minutes on a 2-core CPU (seven standard shapes, three cells; the sweeps time the Elman RNN and
    # what runs beside it, and Newton only up to T*B*H = 524288: to T = 256 in the T sweep, B = 64 in the B sweep).
    "default": Plan(
        name="default",
        standard_shapes=STANDARD_SHAPES,
        sweep_base=SWEEP_BASE,
        seq_lens=(16, 32, 64, 128, 256, 512, 1024),
        batches=(1, 4, 16, 64, 256),
        split_shapes=SINGLE_LAYER_SHAPES,
        timing=TimingConfig(warmup=1, repeats=9, min_repeats=3, min_sample_s=0.01, budget_s=2.0),
        compile_max_steps=64,
        newton_max_states=32 * 256 * 64,
        sweep_cells=("RNN",),
    ),
    "full": Plan(
        name="full",
        standard_shapes=STANDARD_SHAPES,
        sweep_base=SWEEP_BASE,
        seq_lens=(8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
        batches=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        split_shapes=SINGLE_LAYER_SHAPES,
        timing=TimingConfig(warmup=2, repeats=15, min_repeats=5, min_sample_s=0.02, budget_s=4.0),
        compile_max_steps=128,
    ),
}
