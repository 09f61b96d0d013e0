"""``siyu demo``: a generated brand sent through the whole pipeline, its answers read back
from ClickHouse and compared with a recomputation from the generated events."""
